"""(RuleSet, Message, now) → Decision. The first rule that matches wins; else the fallback."""

from __future__ import annotations

import logging
import random as _random
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from ..messages import Decision, Message, Reply, State, StateChange, TypingReply
from .conditions import Subject
from .render import ReplyTemplate
from .ruleset import Fallback, Rule, RuleSet, StateSpec

log = logging.getLogger(__name__)


def find_rule(ruleset: RuleSet, message: Message, now: datetime, state: State | None = None,
              cooling: frozenset[str] = frozenset(), handoff: bool = False, *,
              linear: bool = False) -> tuple[Rule | None, dict[str, Any], Subject]:
    """The first rule that matches, with its captures; (None, {}, …) when none does. Rules cooling down for
    this user are skipped; while the user is with agents (`handoff`), only rules marked during_handoff run.

    Only the rules the message can match are tested (see engine/index.py); `linear` tests every rule in turn,
    which finds the same rule (the index's tests compare the two)."""
    subject = Subject.of(message, now, state)
    if ruleset.index is not None and not linear:
        rule, captures = ruleset.index.find(subject, cooling, handoff)
        return rule, captures, subject
    for rule in ruleset.rules:
        if (cooling and rule.name in cooling) or (handoff and not rule.during_handoff):
            continue
        found = rule.when.test(subject)
        if found is not None:
            return rule, found, subject
    return None, {}, subject


def _fallback(ruleset: RuleSet, subject: Subject) -> Fallback:
    for fallback in ruleset.fallbacks:
        if fallback.when is None or fallback.when.test(subject) is not None:
            return fallback
    return DEFAULT_FALLBACK


DEFAULT_FALLBACK = Fallback()


def decide(ruleset: RuleSet, message: Message, now: datetime, state: State | None = None, *,
           cooling: frozenset[str] = frozenset(), handoff: bool = False,
           random: Callable[[], float] = _random.random) -> Decision:
    """Decide what to do with one message in the user's conversation `state`. Pure: the clock comes in as
    `now`, the state as `state`; a state change comes back in the Decision for the caller to store.

    Events are never transferred. A reply that fails to render is never sent half-made: the user is handed to
    human agents instead (for an event, nothing is sent) and the error is in the Decision."""
    handoff = handoff and not message.is_event  # the quiet is for what users write while with agents
    rule, captures, subject = find_rule(ruleset, message, now, state, cooling, handoff)
    if rule is None and handoff:
        return Decision(rule=None, version=ruleset.version, quiet=True)  # agents answer: the bot says nothing
    if rule is None and message.is_event:
        # The fallback answers what users write. An event no rule names (LOCATION every few seconds,
        # VIEW, unsubscribe, TEMPLATESENDJOBFINISH, …) is acknowledged and nothing is sent.
        return Decision(rule=None, version=ruleset.version)
    action: Rule | Fallback = rule if rule is not None else _fallback(ruleset, subject)
    name = rule.name if rule is not None else None
    cooldown, where = (rule.cooldown, rule.where) if rule is not None else (0.0, "")
    rule_info: Mapping[str, Any] = {"name": name, "file": action.file, "line": action.line,
                                    "priority": rule.priority if rule is not None else None}
    context = {"message": message, "match": captures, "vars": ruleset.vars, "hours": ruleset.hours, "now": now,
               "rule": rule_info, "state": state.as_context() if state is not None else {"name": "none"},
               "_random": random}
    try:
        replies = render_all(action.replies, context)
        change = _state_change(action.state, context)
    except Exception as exc:
        # a template runs Jinja's filters and tests on values from users: besides TemplateError they raise
        # whatever their code does (truncate(2): AssertionError; a huge repeat: MemoryError, OverflowError).
        # Each is the reply failing to render: a transfer, with the error in the Decision
        return Decision(rule=name, replies=(), transfer=not message.is_event, match=captures,
                        version=ruleset.version, error=f"{type(exc).__name__}: {exc}", cooldown=cooldown,
                        where=where)
    transfer = action.transfer and not message.is_event
    if getattr(action, "typing", False) and replies:
        replies = (TypingReply(), *replies)
    return Decision(rule=name, replies=replies, transfer=transfer, match=captures, version=ruleset.version,
                    passive=action.passive, kf_account=action.kf_account if transfer else None,
                    send_as=action.send_as, state=change, cooldown=cooldown, where=where,
                    end_handoff=getattr(action, "end_handoff", False))


def _state_change(spec: StateSpec | None, context: Mapping[str, Any]) -> StateChange | None:
    if spec is None:
        return None
    if spec.name is None:
        return StateChange(None)
    values = {name: text.render(context).strip() for name, text in spec.remember}
    return StateChange(State(spec.name, values), spec.ttl)


def render_all(templates: tuple[ReplyTemplate, ...], context: Mapping[str, Any]) -> tuple[Reply, ...]:
    out = []
    for template in templates:
        reply = template.render(context)
        if reply is not None:
            out.append(reply)
    return tuple(out)
