"""`kefu report`: the console's insights in the terminal — the unanswered groups and the figures — as text
for people, JSON for programs, CSV (one long table: table, key, measure, value) for spreadsheets and cron."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections.abc import Iterator
from typing import Any

from ..config import Settings
from ..engine import RuleSet
from .figures import WEEKDAYS, Report
from .service import Period, count_in, finish, worker_pool

FORMATS = ("text", "json", "csv")


def read_report(settings: Settings, ruleset: RuleSet, period: Period, now: float | None = None) -> Report:
    """The report of the last `period`, made as the console makes it."""
    until = time.time() if now is None else now

    async def make() -> Report:
        with worker_pool() as pool:
            return await count_in(pool, settings, until - period.seconds, until, period.name)

    return finish(asyncio.run(make()), settings, ruleset)


def render(report: Report, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report.as_dict(), ensure_ascii=False, indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(("table", "key", "measure", "value"))
        writer.writerows(rows(report))
        return out.getvalue()
    return text(report)


def _percent(part: int, whole: int) -> str:
    return f"{part / whole * 100:.1f}%" if whole else "-"


def text(report: Report) -> str:
    handled = sum(d.messages for d in report.days)
    lines = [f"kefu report: the last {report.period} ({_when(report.since)} – {_when(report.until)})",
             f"user messages {report.messages}, unanswered {report.unanswered} "
             f"({_percent(report.unanswered, handled)}), transferred {report.transfers} "
             f"({_percent(report.transfers, handled)})", *(f"warning: {p}" for p in report.problems), "",
             "What no rule answers:"]
    if not report.suggestions:
        lines.append("  (nothing: every message found a rule)")
    for rank, s in enumerate(report.suggestions, 1):
        g = s.group
        lines.append(f"{rank:>3}. {g.key}  — {g.messages} messages from {g.users} users; words: {', '.join(g.words)}")
        for example in g.examples:
            lines.append(f"       e.g. {example}")
        if s.answered_by:
            lines.append(f"       now answered by rule '{s.answered_by}'")
        elif s.close:
            lines.append(f"       close to rule {', '.join(repr(name) for name in s.close)}: extend it?")
    lines += ["", "Per day:               messages  unanswered  transferred"]
    for d in report.days:
        lines.append(f"  {d.day}  {d.messages:>14}  {d.unanswered:>5} {_percent(d.unanswered, d.messages):>6}"
                     f"  {d.transfers:>5} {_percent(d.transfers, d.messages):>6}")
    if report.rules:
        lines += ["", "Top rules (hits in the period):"]
        lines += [f"  {sum(hits):>7}  {name}" for name, hits in report.rules]
    lines += ["", "User messages by weekday and hour (busiest first):"]
    busiest = sorted(((n, d, h) for d, row in enumerate(report.heat) for h, n in enumerate(row) if n), reverse=True)
    lines += [f"  {WEEKDAYS[d]} {h:02d}:00  {n}" for n, d, h in busiest[:5]] or ["  (none)"]
    return "\n".join(lines) + "\n"


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def rows(report: Report) -> Iterator[tuple[Any, ...]]:
    yield ("period", report.period, "since", report.since)
    yield ("period", report.period, "until", report.until)
    for measure in ("messages", "unanswered", "transfers"):
        yield ("totals", report.period, measure, getattr(report, measure))
    for rank, s in enumerate(report.suggestions, 1):
        g = s.group
        yield ("group", rank, "key", g.key)
        yield ("group", rank, "messages", g.messages)
        yield ("group", rank, "users", g.users)
        yield ("group", rank, "words", " ".join(g.words))
        for example in g.examples:
            yield ("group", rank, "example", example)
        yield ("group", rank, "close_rules", " ".join(s.close))
        yield ("group", rank, "answered_by", s.answered_by or "")
    for d in report.days:
        yield ("day", d.day, "messages", d.messages)
        yield ("day", d.day, "unanswered", d.unanswered)
        yield ("day", d.day, "transfers", d.transfers)
        yield ("day", d.day, "unanswered_rate", round(d.unanswered_rate, 4))
        yield ("day", d.day, "transfer_rate", round(d.transfer_rate, 4))
    for hour, n in report.hourly:
        yield ("hour", hour, "messages", n)
    for name, hits in report.rules:
        for day, n in zip(report.days, hits, strict=True):
            yield ("rule_hits", f"{day.day} {name}", "hits", n)
    for weekday, row in enumerate(report.heat):
        for h, n in enumerate(row):
            yield ("heat", f"{WEEKDAYS[weekday].split()[1]} {h:02d}", "messages", n)


def run(settings: Settings, ruleset: RuleSet, since: str, fmt: str) -> str:
    """The report as `fmt`; raises PeriodError for a bad --since."""
    period = Period.parse(since, settings.log.keep)
    return render(read_report(settings, ruleset, period), fmt)
