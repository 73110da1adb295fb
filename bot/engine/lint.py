"""What `kefu check` warns about (exit 0): things that are valid but almost certainly not what the operator
meant — a rule that can never fire, templates and images nothing uses, a time window that can never hold."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from .conditions import Condition, Equals, Keywords, Prefix, TimeIs
from .ruleset import Rule


def shadowed(rules: tuple[Rule, ...]) -> list[str]:
    """Rules an earlier rule (same or higher priority: rules are in matching order) always beats."""
    out = []
    for i, later in enumerate(rules):
        for earlier in rules[:i]:
            if earlier.cooldown or earlier.during_handoff != later.during_handoff:
                continue  # a cooling rule steps aside; handoff rules run in other situations
            if _covers(earlier.when, later.when):
                out.append(f"{later.where}: rule '{later.name}' can never fire: rule '{earlier.name}' "
                           f"({earlier.where}) comes first and matches everything it would")
                break
    return out


def _covers(a: Condition, b: Condition) -> bool:
    """Whenever `b` holds, `a` holds too (checked for single text conditions only)."""
    if getattr(a, "normalized", None) != getattr(b, "normalized", None):
        return False
    if isinstance(a, Equals) and isinstance(b, Equals):
        return b.values <= a.values
    if isinstance(a, Keywords):
        texts: Iterable[str] = ()
        if isinstance(b, Equals):
            texts = b.values
        elif isinstance(b, Keywords):
            texts = b.words
        elif isinstance(b, Prefix):
            texts = b.prefixes
        else:
            return False
        texts = list(texts)
        return bool(texts) and all(any(word in text for word in a.words) for text in texts)
    return False


def unused_templates(keys: Iterable[str], names: Mapping[str, str], used: set[str],
                     includes: Mapping[str, frozenset[str]]) -> list[str]:
    reachable, todo = set(), list(used)
    while todo:
        key = todo.pop()
        if key not in reachable:
            reachable.add(key)
            todo.extend(includes.get(key, ()))
    return [f"{names.get(key, key)}: template never used by a rule" for key in sorted(set(keys) - reachable)]


def unused_media(media: Mapping[str, Any], used: set[str]) -> list[str]:
    return [f"{getattr(found, 'path', name)}: image never used by a rule"
            for name, found in sorted(media.items()) if name not in used and not isinstance(found, str)]


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


def _walk(condition: Condition) -> Iterable[Condition]:
    yield condition
    for inner in getattr(condition, "conditions", ()) or ():
        yield from _walk(inner)
    if hasattr(condition, "condition"):
        yield from _walk(condition.condition)  # type: ignore[attr-defined]
