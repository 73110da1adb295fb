"""(RuleSet, Message, now) → Decision. The first rule that matches wins; else the fallback."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from jinja2 import TemplateError

from ..messages import Decision, Message, Reply
from .render import ReplyTemplate
from .ruleset import Fallback, Rule, RuleSet

log = logging.getLogger(__name__)


def find_rule(ruleset: RuleSet, message: Message) -> tuple[Rule | None, dict[str, Any]]:
    """The first rule that matches, with its captures; (None, {}) when none does."""
    for rule in ruleset.rules:
        captures = rule.when.test(message)
        if captures is not None:
            return rule, captures
    return None, {}


def decide(ruleset: RuleSet, message: Message, now: datetime) -> Decision:
    """Decide what to do with one message. Pure: the clock comes in as `now`.

    Events are never transferred. A reply that fails to render is never sent half-made: the user is handed to
    human agents instead (for an event, nothing is sent) and the error is in the Decision."""
    rule, captures = find_rule(ruleset, message)
    if rule is None and message.is_event:
        # The fallback answers what users write. An event no rule names (LOCATION every few seconds,
        # VIEW, unsubscribe, TEMPLATESENDJOBFINISH, …) is acknowledged and nothing is sent.
        return Decision(rule=None, version=ruleset.version)
    action: Rule | Fallback = rule if rule is not None else ruleset.fallback
    name = rule.name if rule is not None else None
    rule_info: Mapping[str, Any] = {"name": name, "file": action.file, "line": action.line,
                                    "priority": rule.priority if rule is not None else None}
    context = {"message": message, "match": captures, "vars": ruleset.vars, "now": now,
               "rule": rule_info}
    try:
        replies = render_all(action.replies, context)
    except (TemplateError, ArithmeticError, LookupError, TypeError, ValueError, AttributeError,
            RecursionError) as exc:
        return Decision(rule=name, replies=(), transfer=not message.is_event, match=captures,
                        version=ruleset.version, error=f"{type(exc).__name__}: {exc}")
    transfer = action.transfer and not message.is_event
    return Decision(rule=name, replies=replies, transfer=transfer, match=captures, version=ruleset.version,
                    passive=action.passive, kf_account=action.kf_account if transfer else None,
                    send_as=action.send_as)


def render_all(templates: tuple[ReplyTemplate, ...], context: Mapping[str, Any]) -> tuple[Reply, ...]:
    out = []
    for template in templates:
        reply = template.render(context)
        if reply is not None:
            out.append(reply)
    return tuple(out)
