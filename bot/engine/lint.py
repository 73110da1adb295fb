"""What `kefu check` warns about (exit 0): things that are valid but almost certainly not what the operator
meant — a rule that can never fire, templates and images nothing uses, a time window that can never hold, a
regex that can backtrack for ever, nested loops that run past the render budget."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from .conditions import Condition, Equals, Keywords, Prefix, TimeIs
from .limits import LIMITS
from .ruleset import Rule


def shadowed(rules: tuple[Rule, ...]) -> list[str]:
    """Rules an earlier rule (same or higher priority: rules are in matching order) always beats. Indexed by
    value and keyword, so that it stays linear in the number of rules (it runs on every reload)."""
    equals: dict[tuple[bool, str], list[int]] = {}
    keywords: dict[tuple[bool, str], list[int]] = {}
    longest = 0
    out = []
    for i, rule in enumerate(rules):
        condition = rule.when
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
        yield from _walk(condition.condition)  # type: ignore[attr-defined]


def warnings(ruleset: Any) -> tuple[str, ...]:
    """Everything kefu check warns about, as `file:line: message` (computed on demand: linear, but not free)."""
    usage = ruleset.usage
    conditions = [rule.when for rule in ruleset.rules] + [f.when for f in ruleset.fallbacks if f.when is not None]
    return (*shadowed(ruleset.rules), *never_holds(ruleset.rules), *nested_quantifiers(conditions),
            *usage.get("loops", ()),
            *unused_templates(usage.get("template_names", {}), usage.get("template_names", {}),
                              set(usage.get("used_templates", ())), usage.get("includes", {})),
            *unused_media(usage.get("media", {}), set(usage.get("used_media", ()))))
