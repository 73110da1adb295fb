"""From a group of unanswered messages to the operator's next rule (pure): which existing rule is close to it
(to extend rather than add), whether a rule answers it now (added since those messages came), and a draft —
the rule and a `*.test.yaml` case of the group's examples — to paste into the rules folder."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import yaml

from ..engine import RuleSet
from ..engine.conditions import AllOf, AnyOf, Condition, Equals, Keywords, Not, Prefix, fold
from ..engine.decide import find_rule
from ..messages import TextMessage
from .groups import Group

MAX_CLOSE = 2  # rules named as close to a group


@dataclass(frozen=True, slots=True)
class Draft:
    rule: str  # YAML for a rules/*.yaml file
    test: str  # YAML for a rules/*.test.yaml file ("" when examples are off)
    name: str


def texts_of(condition: Condition) -> Iterator[str]:
    """The keyword, equals and prefix values a rule's `when` looks for (not under `not:`)."""
    if isinstance(condition, Keywords):
        yield from condition.words
    elif isinstance(condition, Equals):
        yield from condition.values
    elif isinstance(condition, Prefix):
        yield from condition.prefixes
    elif isinstance(condition, AllOf | AnyOf):
        for part in condition.conditions:
            yield from texts_of(part)
    elif isinstance(condition, Not):
        return


def _bigrams(word: str) -> set[str]:
    return {word[i:i + 2] for i in range(len(word) - 1)}


def close_rules(ruleset: RuleSet, group: Group, skip: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """Rules sharing a keyword stem with the group: one contains the other (发货 / 发货时间), or they share two
    characters in a row (退款 / 退款到账 / 什么时候退). The rules the group's words meet most often come first."""
    words = [fold(w) for w in group.words] or [fold(group.key)]
    scored = []
    for position, rule in enumerate(ruleset.rules):
        if rule.name in skip:
            continue
        score = 0
        for value in {fold(v) for v in texts_of(rule.when)}:
            if len(value) < 2:
                continue
            for word in words:
                if value in word or word in value or _bigrams(value) & _bigrams(word):
                    score += 1
        if score:
            scored.append((-score, position, rule.name))
    return tuple(name for _, _, name in sorted(scored)[:MAX_CLOSE])


def answered_now(ruleset: RuleSet, texts: tuple[str, ...], now: datetime,
                 skip: frozenset[str] = frozenset()) -> str | None:
    """The rule that would answer the group's commonest writing today, if any (not a catch-all): the group's
    messages came before it was added, or it did not hold then (a time window, a state, a cooldown)."""
    for text in texts[:1]:
        message = TextMessage(to_user="gh_kefu_insights", from_user="insights", create_time=int(now.timestamp()),
                              msg_type="text", fields={}, content=text)
        rule, _, _ = find_rule(ruleset, message, now)
        if rule is not None and rule.name not in skip:
            return rule.name
    return None


def draft(group: Group, examples: bool) -> Draft:
    """A rule answering the group — `keywords: [its word]` (every message of the group contains it), or for a
    group without words `equals: [its text]` — and, with examples on, a test that each example fires it."""
    name = f"faq-{group.key[:16]}"
    when = {"keywords": [group.key]} if group.has_words else {"equals": [group.key]}
    rule = {"name": name, "when": when, "reply": f"关于“{group.key}”：（请在这里写回复）"}
    also = [w for w in group.words if w != group.key]
    head = (f"# From the insights: {group.messages} messages from {group.users} users that no rule answered.\n"
            + (f"# Also seen with it: {', '.join(also)}\n" if also else ""))
    rule_yaml = head + _dump({"rules": [rule]})
    test_yaml = ""
    if examples and group.examples:
        steps = [{"say": text, "expect": {"rule": name}} for text in group.examples]
        test_yaml = _dump({"tests": [{"name": f"{group.key}（来自洞察 insights）", "steps": steps}]})
    return Draft(rule_yaml, test_yaml, name)


def _dump(data: object) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=1000)
