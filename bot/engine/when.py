"""Compiling `when:` blocks into conditions (see conditions.py), with `file:line` for every mistake."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, time
from typing import Any

from ..yamlsrc import Checker, YamlList, YamlMap, did_you_mean, type_name
from .conditions import (
    AllOf,
    AllWords,
    AnyOf,
    Condition,
    Equals,
    EventIs,
    EventKey,
    FieldIs,
    Keywords,
    MsgTypeIs,
    Not,
    Prefix,
    Regex,
    StateIs,
    TimeIs,
    fold_value,
)
from .patterns import BoundedPattern, PatternError

TEXT_KEYS = ("keywords", "equals", "prefix", "regex")
WHEN_KEYS = (*TEXT_KEYS, "event", "msgtype", "event_key", "session_from", "page", "user", "state", "time", "any",
             "all", "not")
FIELDS = {"session_from": ("session_from", "session_from"), "page": ("page_path", "page"),
          "user": ("from_user", "user")}
TIME_KEYS = ("weekdays", "hours", "dates")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FULL_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DAY_NAMES = {name: i for names in (WEEKDAYS, FULL_WEEKDAYS) for i, name in enumerate(names)}
NORMALIZE = (True, False, "all")


def strings(check: Checker, value: Any, line: int, what: str) -> tuple[str, ...] | None:
    """One text or a list of texts; numbers and true/false are refused with a hint to quote them."""
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    before = len(check.problems)
    wrong: dict[int, list[Any]] = {}  # line → the values that are not text (`[1, 2]` on one line: one problem)
    for i, item in enumerate(items):
        item_line = value.line_of(i) if isinstance(value, YamlList) else line
        if isinstance(item, bool) or not isinstance(item, str):
            wrong.setdefault(item_line, []).append(item)
        elif not item.strip():
            check.add(item_line, f"{what} must not be empty")
        else:
            out.append(item)
    for item_line, values in wrong.items():
        quotable = all(isinstance(v, int | float) for v in values)  # numbers and true/false
        hint = "" if not quotable else " (put it in quotes)" if len(values) == 1 else " (put them in quotes)"
        check.add(item_line, f"{what} must be text, not {' or '.join(sorted({type_name(v) for v in values}))}{hint}")
    if not out and len(check.problems) == before:
        check.add(line, f"{what} needs at least one value")
    return tuple(out) if out else None


def patterns(check: Checker, values: tuple[str, ...], node: Any, line: int,
             where: str) -> tuple[BoundedPattern, ...]:
    """The patterns, each bounded (engine/patterns.py); a pattern refused at load is a problem at its line."""
    out = []
    rule = where.partition(": ")[0]
    rule = rule[6:-1] if rule.startswith("rule '") and rule.endswith("'") else rule
    for i, source in enumerate(values):
        at = node.line_of(i) if isinstance(node, YamlList) else line
        try:
            out.append(BoundedPattern(source, rule, f"{check.filename}:{at}: {where}"))
        except PatternError as exc:
            check.add(at, f"{where}: bad regex {source!r}: {exc}")
    return tuple(out)


Windows = Mapping[str, Condition]  # bot.yaml's named time windows (`hours:`), by name


def compile_when(check: Checker, when: Any, line: int, where: str, mode: bool | str = True,
                 windows: Windows | None = None) -> Condition | None:
    """A `when:` mapping → one Condition (all keys must hold). `mode` is the rule's `normalize`; `windows`
    are the time windows `time: NAME` may name."""
    if not isinstance(when, YamlMap) or not when:
        check.add(line, f"{where}: 'when' must be a mapping of conditions ({', '.join(WHEN_KEYS)})")
        return None
    before = len(check.problems)
    check.unknown_keys(when, WHEN_KEYS, where)
    conditions: list[Condition] = []
    for key in WHEN_KEYS:
        if key in when:
            condition = _one(check, key, when[key], when.line_of(key), where, mode, windows or {})
            if condition is not None:
                conditions.append(condition)
    if len(check.problems) > before or not conditions:
        return None
    return conditions[0] if len(conditions) == 1 else AllOf(tuple(conditions))


def _one(check: Checker, key: str, value: Any, line: int, where: str, mode: bool | str,
         windows: Windows) -> Condition | None:
    what = f"{where}: '{key}'"
    if key in ("any", "all"):
        if not isinstance(value, YamlList) or not value:
            check.add(line, f"{what} is a list of when-blocks, {'one' if key == 'any' else 'every one'} of which "
                            "must hold")
            return None
        blocks = [compile_when(check, block, value.line_of(i), f"{where}: {key}[{i + 1}]", mode, windows)
                  for i, block in enumerate(value)]
        if not all(blocks):
            return None
        return (AnyOf if key == "any" else AllOf)(tuple(b for b in blocks if b is not None))
    if key == "not":
        inner = compile_when(check, value, line, f"{where}: not", mode, windows)
        return Not(inner) if inner is not None else None
    if key == "time":
        return _named_time(check, value, line, what, windows) if not isinstance(value, YamlMap) else \
            time_window(check, value, line, what)
    if key in ("event_key", "session_from", "page") and isinstance(value, YamlMap):
        check.unknown_keys(value, ("regex",), what)
        sources = strings(check, value.get("regex"), value.line_of("regex"), f"{what} regex")
        compiled = patterns(check, sources or (), value.get("regex"), line, where)
        if key == "event_key":
            return EventKey(frozenset(), compiled)
        attribute, name = FIELDS[key]
        return FieldIs(attribute, name, frozenset(), compiled)
    text_mode = mode is not False
    # folded (case, width), never cut down: `C#` stays `c#`, and is looked for as written
    norm = fold_value if text_mode else (lambda v: v.strip())
    if key == "keywords" and isinstance(value, YamlList) and any(isinstance(v, list) for v in value):
        return _keyword_groups(check, value, what, norm if text_mode else (lambda v: v), text_mode)
    values = strings(check, value, line, what)
    if values is None:
        return None
    if key == "keywords":
        return Keywords(tuple(norm(v) if text_mode else v for v in values), text_mode)
    if key == "equals":
        return Equals(frozenset(norm(v) for v in values), text_mode)
    if key == "prefix":
        return Prefix(tuple(norm(v) for v in values), text_mode)
    if key == "regex":
        return Regex(patterns(check, values, value, line, where), mode == "all")
    if key == "event":
        return EventIs(frozenset(v.strip().lower() for v in values))
    if key == "msgtype":
        return MsgTypeIs(frozenset(v.strip().lower() for v in values))
    if key == "event_key":
        return EventKey(frozenset(v.strip() for v in values))
    if key == "state":
        return StateIs(frozenset(v.strip() for v in values))
    attribute, name = FIELDS[key]
    return FieldIs(attribute, name, frozenset(v.strip() for v in values))


def _keyword_groups(check: Checker, value: YamlList, what: str, norm: Any, text_mode: bool) -> Condition | None:
    """`keywords: [发货, [退款, 订单]]`: a word, or a group (a list) whose words must all occur; the items are
    alternatives as ever. Runs of single words stay one Keywords (one automaton lookup)."""
    parts: list[Condition] = []
    singles: list[str] = []
    ok = True
    for i, item in enumerate(value):
        if not isinstance(item, list):
            found = strings(check, item, value.line_of(i), what)
            singles.extend(norm(v) for v in found or ())
            ok = ok and found is not None
            continue
        if not item:
            check.add(value.line_of(i), f"{what}: a group is a list of words that must all occur, e.g. [退款, 订单]")
            ok = False
            continue
        words = strings(check, item, value.line_of(i), f"{what} group")
        if words is None or len(words) != len(item):  # a word that is not text: strings() said so
            ok = False
            continue
        if singles:
            parts.append(Keywords(tuple(singles), text_mode))
            singles = []
        parts.append(AllWords(tuple(Keywords((norm(word),), text_mode) for word in words)))
    if not ok:
        return None
    if singles:
        parts.append(Keywords(tuple(singles), text_mode))
    return parts[0] if len(parts) == 1 else AnyOf(tuple(parts))


def _named_time(check: Checker, value: Any, line: int, what: str, windows: Windows) -> Condition | None:
    """`time: business` or `time: [business, weekend]`: windows named in bot.yaml's `hours:` (any of them)."""
    names = strings(check, value, line, what) if isinstance(value, str | YamlList) else None
    if names is None:
        if not isinstance(value, str | YamlList):
            check.add(line, f"{what} is a mapping with {', '.join(TIME_KEYS)}, or the name of a window in "
                            "bot.yaml's 'hours:'")
        return None
    found = []
    for i, name in enumerate(names):
        window = windows.get(name.strip())
        if window is None:
            named = f"; bot.yaml names {', '.join(sorted(windows))}{did_you_mean(name.strip(), windows)}" \
                if windows else "; name windows under 'hours:' in bot.yaml"
            check.add(value.line_of(i) if isinstance(value, YamlList) else line,
                      f"{what}: no time window named {name.strip()!r}{named}")
        else:
            found.append(window)
    if len(found) != len(names):
        return None
    return found[0] if len(found) == 1 else AnyOf(tuple(found))


def time_window(check: Checker, value: Any, line: int, what: str) -> TimeIs | None:
    """A window: `{weekdays, hours, dates}` (each may be left out). Also bot.yaml's named windows (bot/hours.py)."""
    if not isinstance(value, YamlMap) or not value:
        check.add(line, f"{what} is a mapping with {', '.join(TIME_KEYS)}")
        return None
    check.unknown_keys(value, TIME_KEYS, what)
    before = len(check.problems)
    weekdays = hours = dates = None
    if "weekdays" in value:
        weekdays = frozenset(d for item in _list(check, value, "weekdays", what) for d in _weekdays(check, *item))
    if "hours" in value:
        hours = tuple(h for item in _list(check, value, "hours", what) if (h := _hours(check, *item)))
    if "dates" in value:
        dates = tuple(d for item in _list(check, value, "dates", what) if (d := _dates(check, *item)))
    if len(check.problems) > before:
        return None
    return TimeIs(weekdays, hours, dates)


def _list(check: Checker, spec: YamlMap, key: str, what: str) -> list[tuple[str, int, str]]:
    """(item, line, what) for each item of spec[key] (one value or a list)."""
    value = spec[key]
    items = value if isinstance(value, YamlList) else [value]
    out = []
    for i, item in enumerate(items):
        item_line = items.line_of(i) if isinstance(items, YamlList) else spec.line_of(key)
        if isinstance(item, date):  # YAML reads 2026-10-01 as a date
            item = item.isoformat()
        if not isinstance(item, str):
            check.add(item_line, f"{what}: {key} must be text like 'mon-fri', '09:00-18:00' or '2026-10-01', "
                                 f"not {type_name(item)} (put it in quotes)")
            continue
        out.append((item.strip(), item_line, f"{what}: {key}"))
    return out


def _weekdays(check: Checker, item: str, line: int, what: str) -> set[int]:
    """`mon`, `monday`, `mon-fri`, or several of them separated by commas or spaces (`mon,wed,fri`)."""
    days: set[int] = set()
    parts = [p for p in re.split(r"[\s,，、;；]+", re.sub(r"\s*-\s*", "-", item.lower())) if p]
    if not parts:
        check.add(line, f"{what}: {item!r} names no weekday ({', '.join(WEEKDAYS)}; e.g. mon-fri)")
    for part in parts:
        first, dash, last = part.partition("-")
        a, b = _weekday(first), _weekday(last) if dash else _weekday(first)
        if a is None or b is None:
            wrong = first if a is None else last
            named = f"{item!r}" if len(parts) == 1 else f"{item!r}: {part!r}"
            check.add(line, f"{what}: {named} is not a weekday or range{did_you_mean(wrong, DAY_NAMES)} "
                            f"({', '.join(WEEKDAYS)}; e.g. mon-fri, or several: mon,wed,fri)")
            continue
        days.update(d % 7 for d in range(a, b + 1 if b >= a else b + 8))
    return days


def _weekday(name: str) -> int | None:
    """`mon`, `monday`, and the other ways English shortens a day (`tues`, `thurs`, `weds`): a beginning of the
    day's name of at least three letters, or `weds`. `monkey` is no day."""
    if len(name) >= 3:
        for i, full in enumerate(FULL_WEEKDAYS):
            if full.startswith(name):
                return i
    return 2 if name == "weds" else None


def _hours(check: Checker, item: str, line: int, what: str) -> tuple[time, time] | None:
    match = re.fullmatch(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})", item)
    try:
        if match is None:
            raise ValueError
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        start = time(h1, m1)
        end = time(0, 0) if (h2, m2) == (24, 0) else time(h2, m2)
    except ValueError:
        check.add(line, f"{what}: {item!r} is not an hour range like 09:00-18:00 (22:00-06:00 crosses midnight)")
        return None
    if (h1, m1, h2, m2) == (0, 0, 24, 0):
        return start, end  # midnight to midnight: the whole day (see _in_hours), not an empty range
    if start == end:
        check.add(line, f"{what}: {item!r} is an empty hour range")
        return None
    return start, end


def _dates(check: Checker, item: str, line: int, what: str) -> tuple[date, date] | None:
    first, _, last = item.partition("..")
    try:
        a = date.fromisoformat(first.strip())
        b = date.fromisoformat(last.strip()) if last else a
    except ValueError:
        check.add(line, f"{what}: {item!r} is not a date or range like 2026-10-01 or 2026-10-01..2026-10-07")
        return None
    if b < a:
        check.add(line, f"{what}: {item!r} ends before it starts")
        return None
    return a, b
