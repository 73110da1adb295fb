"""What `kefu check` warns about (exit 0): things that are valid but almost certainly not what the operator
meant — a rule that can never fire, templates and images nothing uses, a time window that can never hold, a
regex that can backtrack for ever, nested loops that run past the render budget."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from .conditions import AllOf, AnyOf, Condition, Equals, EventIs, Keywords, Prefix, Regex, TimeIs
from .limits import LIMITS
from .ruleset import Fallback, Rule

# One character of each kind users write: a regex found in all of them (`.`, `\S|\s`, `[^\n]`) is taken to match
# every text, and so beats every later rule that needs a text.
PROBES = ("a", "Z", "7", "中", "？", "!", " ", "😀", "ｘ", "é", "_", "\t")


def shadowed(rules: tuple[Rule, ...]) -> list[str]:
    """Rules an earlier rule (same or higher priority: rules are in matching order) always beats. Indexed by
    value and keyword, so that it stays linear in the number of rules (it runs on every reload)."""
    equals: dict[tuple[bool, str], list[int]] = {}
    keywords: dict[tuple[bool, str], list[int]] = {}
    longest = 0
    out = []
    universal: Rule | None = None  # the first rule whose regex matches every text
    for i, rule in enumerate(rules):
        condition = rule.when
        if universal is not None and universal.during_handoff == rule.during_handoff and _needs_text(condition):
            out.append(f"{rule.where}: rule '{rule.name}' can never fire: rule '{universal.name}' "
                       f"({universal.where}) comes first and its regex matches every text")
            continue
        if universal is None and not rule.cooldown and _matches_every_text(condition):
            universal = rule
        mode = bool(getattr(condition, "normalized", False))
        texts = _texts(condition)
        if texts:
            earlier = _covering(texts, mode, isinstance(condition, Equals), equals, keywords, longest)
            for j in sorted(earlier):
                other = rules[j]
                if not other.cooldown and other.during_handoff == rule.during_handoff:
                    out.append(f"{rule.where}: rule '{rule.name}' can never fire: rule '{other.name}' "
                               f"({other.where}) comes first and matches everything it would")
                    break
        if isinstance(condition, Equals):
            for value in condition.values:
                equals.setdefault((mode, value), []).append(i)
        elif isinstance(condition, Keywords):
            for word in condition.words:
                keywords.setdefault((mode, word), []).append(i)
                longest = max(longest, len(word))
    return out


def _matches_every_text(condition: Condition) -> bool:
    r"""A regex found in a character of every kind is taken to match every text; on normalised text it must
    also be found in the empty text (normalising may cut a text down to nothing: `？？`). Being found in the
    empty text alone is not enough: `^(\w+\s?)*$` is, and fails on `!`."""
    if not isinstance(condition, Regex):
        return False
    return any((not condition.normalized or p.search("") is not None) and all(p.search(c) for c in PROBES)
               for p in condition.patterns)


def _needs_text(condition: Condition) -> bool:
    """Whether every message the condition holds for has a text."""
    if isinstance(condition, Keywords | Equals | Prefix | Regex):
        return True
    if isinstance(condition, AnyOf):
        return all(_needs_text(c) for c in condition.conditions)
    if isinstance(condition, AllOf):
        return any(_needs_text(c) for c in condition.conditions)
    return False


def _texts(condition: Condition) -> tuple[str, ...]:
    if isinstance(condition, Equals):
        return tuple(condition.values)
    if isinstance(condition, Keywords):
        return condition.words
    if isinstance(condition, Prefix):
        return condition.prefixes
    return ()


def _covering(texts: tuple[str, ...], mode: bool, exact: bool, equals: dict[tuple[bool, str], list[int]],
              keywords: dict[tuple[bool, str], list[int]], longest: int) -> set[int]:
    """Earlier rules that match every one of the texts: an equal value (for equals), or a keyword inside it."""
    common: set[int] | None = None
    for text in texts:
        found = set(equals.get((mode, text), ())) if exact else set()
        for start in range(len(text)):  # every substring up to the longest keyword
            for end in range(start + 1, min(len(text), start + longest) + 1):
                found.update(keywords.get((mode, text[start:end]), ()))
        common = found if common is None else common & found
        if not common:
            return set()
    return common or set()


def unused_templates(keys: Iterable[str], names: Mapping[str, str], used: set[str],
                     includes: Mapping[str, frozenset[str]]) -> list[str]:
    reachable, todo = set(), list(used)
    while todo:
        key = todo.pop()
        if key not in reachable:
            reachable.add(key)
            todo.extend(includes.get(key, ()))
    return [f"{names.get(key, key)}:1: template never used by a rule" for key in sorted(set(keys) - reachable)]


def unused_media(media: Mapping[str, Any], used: set[str], base: Path | None = None) -> list[str]:
    """Images no rule sends, by their path from the config's folder (`media/old-banner.png:1: …`)."""
    return [f"{_relative(Path(getattr(found, 'path', name)), base)}:1: image never used by a rule"
            for name, found in sorted(media.items()) if name not in used and not isinstance(found, str)]


def _relative(path: Path, base: Path | None) -> str:
    if base is not None:
        try:
            return path.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            pass
    return str(path)


def never_holds(rules: tuple[Rule, ...]) -> list[str]:
    """Time windows whose dates never fall on their weekdays."""
    out = []
    for rule in rules:
        for condition in _walk(rule.when):
            if isinstance(condition, TimeIs) and condition.weekdays is not None and condition.dates:
                days = (d for start, end in condition.dates
                        for d in (start + timedelta(n) for n in range(min((end - start).days + 1, 7))))
                if not any(day.weekday() in condition.weekdays for day in days):
                    out.append(f"{rule.where}: rule '{rule.name}': its time window can never hold (none of "
                               "its dates falls on one of its weekdays)")
    return out


def past_dates(rules: tuple[Rule, ...], fallbacks: tuple[Fallback, ...], today: date,
               windows: Mapping[str, Condition]) -> list[str]:
    """Time windows whose dates are all before `today`: they will never hold again (or, under `not:`, always)."""
    names = {id(window): name for name, window in windows.items()}
    out = []
    for where, what, when in (*((r.where, f"rule '{r.name}'", r.when) for r in rules),
                              *((f"{f.file}:{f.line}", "fallback", f.when) for f in fallbacks if f.when)):
        for condition in _walk(when):
            if isinstance(condition, TimeIs) and condition.dates and all(b < today for _, b in condition.dates):
                named = f" ('{names[id(condition)]}' in bot.yaml)" if id(condition) in names else ""
                last = max(b for _, b in condition.dates)
                out.append(f"{where}: {what}: every date of its time window{named} is past (the last was "
                           f"{last.isoformat()})")
    return out


def beyond_allowance(rules: tuple[Rule, ...], fallbacks: tuple[Fallback, ...], quota: Any,
                     platform: str) -> list[str]:
    """Rules with more replies than WeChat's send allowance lets through (bot/allowance.py decides what a push
    allows): the ones past it would be dropped at serve time. Replies are counted as written (a `choice` is one;
    a text that renders to nothing is none, a very long one several)."""
    from .. import allowance  # its policy, read as it is: the engine does not import the store at load time
    from ..messages import EventMessage, TextMessage

    if not quota.enabled:
        return []
    user = allowance.opened(None, TextMessage(to_user="", from_user="", create_time=0, fields={}, msg_type="text",
                                              content=""), 0.0, quota, platform)
    out = []
    actions: list[tuple[str, str, Rule | Fallback, frozenset[str]]] = [
        (r.where, f"rule '{r.name}'", r, _events(r.when)) for r in rules]
    actions += [(f"{f.file}:{f.line}", "fallback", f, frozenset()) for f in fallbacks if f.file]
    for where, what, action, events in actions:
        sends = len(action.replies)
        if action.passive or sends <= 1:
            continue
        kinds: list[str | None] = [*sorted(events)] or [None]  # None: a user's message
        for event in kinds:
            if event is None:
                allowed, why = user, f"a user's message allows {quota.per_message} sends within " \
                                     f"{_span(quota.message_window)} (quota.per_message)"
            else:
                message = EventMessage(to_user="", from_user="", create_time=0, fields={}, msg_type="event",
                                       event=event)
                allowed = allowance.opened(None, message, 0.0, quota, platform)
                why = f"{event} allows {quota.per_event} sends within {_span(quota.event_window)} (quota.per_event)"
            if allowed is not None and sends > allowed.left:
                out.append(f"{where}: {what}: {sends} replies, but {why}; the last {sends - allowed.left} would "
                           "not be sent")
    return out


def _events(condition: Condition) -> frozenset[str]:
    """The events a condition requires (`event:`, alone or with other keys); empty when it may hold otherwise."""
    if isinstance(condition, EventIs):
        return condition.names
    if isinstance(condition, AllOf):
        for part in condition.conditions:
            if isinstance(part, EventIs):
                return part.names
    return frozenset()


def _span(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def nested_quantifiers(conditions: Iterable[Condition]) -> list[str]:
    """Regexes with a quantifier inside a repeated group (`(\\w+\\s?)*`): the shape that backtracks for ever."""
    out = []
    for condition in conditions:
        for part in _walk(condition):
            for pattern in getattr(part, "patterns", ()):
                if pattern.nested:
                    out.append(f"{pattern.where}: regex '{pattern.source}' has nested quantifiers (a repeated group "
                               "with a quantifier inside), which can backtrack for ever: kefu gives up after "
                               f"{LIMITS.regex_ms:g} ms (limits.regex_ms) and the rule does not match; write it "
                               "without the nesting, e.g. ^[\\w\\s]*$ for ^(\\w+\\s?)*$")
    return out


def _walk(condition: Condition) -> Iterable[Condition]:
    yield condition
    for inner in getattr(condition, "conditions", ()) or ():
        yield from _walk(inner)
    if hasattr(condition, "condition"):
        yield from _walk(condition.condition)


def warnings(ruleset: Any, base: Path | None = None, today: date | None = None,
             quota: Any = None) -> tuple[str, ...]:
    """Everything kefu check warns about, as `file:line: message` (computed on demand: linear, but not free).
    `base`: the config's folder, which file names are given from; `today` (in bot.yaml's timezone) finds windows
    in the past; `quota` (bot.yaml's) finds replies past the send allowance."""
    usage = ruleset.usage
    conditions = [rule.when for rule in ruleset.rules] + [f.when for f in ruleset.fallbacks if f.when is not None]
    return (*shadowed(ruleset.rules), *never_holds(ruleset.rules), *nested_quantifiers(conditions),
            *usage.get("loops", ()),
            *(past_dates(ruleset.rules, ruleset.fallbacks, today, usage.get("windows", {})) if today else ()),
            *(beyond_allowance(ruleset.rules, ruleset.fallbacks, quota, usage.get("platform", "miniprogram"))
              if quota is not None else ()),
            *unused_templates(usage.get("template_names", {}), usage.get("template_names", {}),
                              set(usage.get("used_templates", ())), usage.get("includes", {})),
            *unused_media(usage.get("media", {}), set(usage.get("used_media", ())), base))
