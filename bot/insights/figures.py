"""The conversation log of a period → the insights' figures and groups (pure; runs in a worker thread).

`Tally.add(entries)` takes the log a page at a time, in any order; `Tally.report(...)` makes the Report.
What counts:
- a *user message* is a `push` entry that is not an event; messages written while the user was with human
  agents (the bot kept quiet, detail `quiet`) count for the volume charts but not for the rates;
- it is *unanswered* when no rule fired for it (the fallback answered) or a rule of `insights.catch_all` did;
- a *transfer* is a `transfer` entry; the rates are per day, over the user messages the bot handled;
- a rule's *hits* are its `push` entries, events included (as on the rules page).
Days, hours and weekdays are local, in bot.yaml's timezone.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ..engine import RuleSet
from ..store import LogEntry
from .groups import Group, Unanswered
from .suggest import Draft, answered_now, close_rules, draft

TOP_GROUPS = 10
TOP_RULES = 5
QUARTER = 900  # seconds: local day, weekday and hour are looked up once per quarter hour (zones move by 15 min)
WEEKDAYS = ("周一 Mon", "周二 Tue", "周三 Wed", "周四 Thu", "周五 Fri", "周六 Sat", "周日 Sun")


@dataclass(slots=True)
class Day:
    day: str  # YYYY-MM-DD, local
    messages: int = 0  # user messages the bot handled (not those while with agents)
    unanswered: int = 0
    transfers: int = 0

    @property
    def unanswered_rate(self) -> float:
        return self.unanswered / self.messages if self.messages else 0.0

    @property
    def transfer_rate(self) -> float:
        return self.transfers / self.messages if self.messages else 0.0


@dataclass(frozen=True, slots=True)
class Suggestion:
    group: Group
    close: tuple[str, ...]  # existing rules to extend
    answered_by: str | None  # a rule that answers it today
    draft: Draft


@dataclass
class Report:
    since: float
    until: float
    period: str  # as asked: 7d, 24h, …
    messages: int  # user messages
    unanswered: int
    transfers: int
    groups: list[Group]  # the largest groups of unanswered messages (examples included: see suggest)
    hourly: list[tuple[str, int]]  # ("YYYY-MM-DD HH", user messages), every hour of the period
    days: list[Day]
    rules: list[tuple[str, list[int]]]  # the top rules' hits, one count per day of `days`
    heat: list[list[int]]  # [weekday Mon..Sun][hour 0..23] user messages
    examples: bool = True  # False: the examples are left out of suggestions (insights.examples)
    suggestions: list[Suggestion] = field(default_factory=list)  # one per group, made by suggest()
    problems: list[str] = field(default_factory=list)  # settings that do not fit the rules (a catch_all typo)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for `kefu report --format json`."""
        return {
            "period": self.period, "since": self.since, "until": self.until, "problems": self.problems,
            "messages": self.messages,
            "unanswered": self.unanswered, "transfers": self.transfers,
            "groups": [{**asdict(s.group), "close_rules": list(s.close), "answered_by": s.answered_by,
                        "draft_rule": s.draft.rule, "draft_test": s.draft.test} for s in self.suggestions],
            "hourly": [{"hour": hour, "messages": n} for hour, n in self.hourly],
            "days": [{"day": d.day, "messages": d.messages, "unanswered": d.unanswered, "transfers": d.transfers,
                      "unanswered_rate": round(d.unanswered_rate, 4), "transfer_rate": round(d.transfer_rate, 4)}
                     for d in self.days],
            "rules": [{"rule": name, "hits": dict(zip((d.day for d in self.days), hits, strict=True))}
                      for name, hits in self.rules],
            "heat": {"weekdays": list(WEEKDAYS), "hours": self.heat},
        }


@dataclass
class Tally:
    since: float
    until: float
    zone: ZoneInfo
    catch_all: frozenset[str] = frozenset()
    unanswered: Unanswered = field(default_factory=Unanswered)
    hourly: Counter[str] = field(default_factory=Counter)
    days: dict[str, Day] = field(default_factory=dict)
    hits: dict[str, Counter[str]] = field(default_factory=dict)  # rule → day → hits
    heat: list[list[int]] = field(default_factory=lambda: [[0] * 24 for _ in range(7)])
    _local: dict[int, tuple[str, str, int, int]] = field(default_factory=dict)

    def local(self, ts: float) -> tuple[str, str, int, int]:
        """(day, "day hour", weekday, hour) of an epoch, local."""
        quarter = int(ts // QUARTER)
        found = self._local.get(quarter)
        if found is None:
            moment = datetime.fromtimestamp(quarter * QUARTER, self.zone)
            day = moment.date().isoformat()
            found = self._local[quarter] = (day, f"{day} {moment.hour:02d}", moment.weekday(), moment.hour)
        return found

    def add(self, entries: list[LogEntry]) -> None:
        """Count a page of the log. The loop runs a million times for a big period: locals, no calls in the
        common case."""
        catch_all, days, hits, hourly, heat, places = self.catch_all, self.days, self.hits, self.hourly, self.heat, \
            self._local  # (local() fills `places`)
        unanswered = self.unanswered.add
        quarter, day, hour, weekday, h = -1, "", "", 0, 0
        for entry in entries:
            kind = entry.kind
            if kind == "push":
                if int(entry.ts // QUARTER) != quarter:  # pages come in time order: mostly the same quarter
                    quarter = int(entry.ts // QUARTER)
                    place = places.get(quarter)
                    day, hour, weekday, h = place if place is not None else self.local(entry.ts)
                rule = entry.rule
                if rule and rule not in catch_all:
                    per_day = hits.get(rule)
                    if per_day is None:
                        per_day = hits[rule] = Counter()
                    per_day[day] += 1
                if entry.msg_type.startswith("event"):
                    continue
                hourly[hour] += 1
                heat[weekday][h] += 1
                if entry.detail == "quiet":
                    continue
                totals = days.get(day)
                if totals is None:
                    totals = days[day] = Day(day)
                totals.messages += 1
                if (not rule or rule in catch_all) and entry.text:
                    totals.unanswered += 1
                    unanswered(entry.text, entry.user)
            elif kind == "transfer":
                if int(entry.ts // QUARTER) != quarter:
                    quarter = int(entry.ts // QUARTER)
                    place = places.get(quarter)
                    day, hour, weekday, h = place if place is not None else self.local(entry.ts)
                totals = days.get(day)
                if totals is None:
                    totals = days[day] = Day(day)
                totals.transfers += 1

    def merge(self, other: Tally) -> Tally:
        """Add the counts of `other` (another slice of the period, counted by another worker)."""
        self.since, self.until = min(self.since, other.since), max(self.until, other.until)
        self.unanswered.merge(other.unanswered)
        self.hourly.update(other.hourly)
        for day, theirs in other.days.items():
            mine = self.days.setdefault(day, Day(day))
            mine.messages += theirs.messages
            mine.unanswered += theirs.unanswered
            mine.transfers += theirs.transfers
        for rule, per_day in other.hits.items():
            self.hits.setdefault(rule, Counter()).update(per_day)
        for mine_row, their_row in zip(self.heat, other.heat, strict=True):
            mine_row[:] = [a + b for a, b in zip(mine_row, their_row, strict=True)]
        return self

    def report(self, period: str, top: int = TOP_GROUPS) -> Report:
        """The period's figures and largest groups — without the rules' part (see suggest), so that a worker
        process can make it and send it back: it is small and plain data."""
        day_names = self._day_names()
        days = [self.days.get(day) or Day(day) for day in day_names]
        ranked = sorted(self.hits, key=lambda r: (-sum(self.hits[r].values()), r))[:TOP_RULES]
        return Report(
            since=self.since, until=self.until, period=period,
            messages=sum(self.hourly.values()), unanswered=self.unanswered.messages,
            transfers=sum(d.transfers for d in days), groups=self.unanswered.groups(top),
            hourly=[(hour, self.hourly.get(hour, 0)) for hour in self._hour_names()],
            days=days, rules=[(rule, [self.hits[rule].get(day, 0) for day in day_names]) for rule in ranked],
            heat=[row[:] for row in self.heat])

    def _hour_names(self) -> list[str]:
        names: list[str] = []
        ts = self.since - self.since % 3600
        while ts < self.until:
            hour = self.local(ts)[1]
            if not names or names[-1] != hour:
                names.append(hour)
            ts += QUARTER
        return names

    def _day_names(self) -> list[str]:
        first = datetime.fromtimestamp(self.since, self.zone).date()
        last = datetime.fromtimestamp(max(self.since, self.until - 1), self.zone).date()
        return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def suggest(report: Report, ruleset: RuleSet, zone: ZoneInfo, catch_all: frozenset[str] = frozenset(),
            examples: bool = True) -> Report:
    """The report with a suggestion per group — the close rules, the rule that answers it now, a draft — and,
    with `examples` off, without what users wrote."""
    now = datetime.fromtimestamp(report.until, zone)
    suggestions = []
    for group in report.groups:
        shown = group if examples else replace(group, examples=())
        suggestions.append(Suggestion(shown, close_rules(ruleset, group, catch_all),
                                      answered_now(ruleset, group.examples, now, catch_all), draft(shown, examples)))
    problems = [f"insights.catch_all: there is no rule named '{name}'" for name in sorted(catch_all)
                if ruleset.rule(name) is None]
    return replace(report, groups=[s.group for s in suggestions], suggestions=suggestions, examples=examples,
                   problems=problems)
