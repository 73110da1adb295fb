"""What a condition needs of a message, as index keys: `derive(condition)` gives the keys one of which every
message the condition holds for has (a keyword, an equals value, an event, a message type, a state, …), with a
rough weight of how many messages have them. bot/engine/index.py files each rule under its keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .conditions import (
    AllOf,
    AnyOf,
    Condition,
    Equals,
    EventIs,
    EventKey,
    FieldIs,
    Keywords,
    MsgTypeIs,
    Prefix,
    Regex,
    StateIs,
)

if TYPE_CHECKING:
    pass

Key = tuple[Any, ...]
Filter = tuple[float, frozenset[Key]]  # (how many messages it lets through, roughly; the keys)

# How broad a key of each kind is, to choose among the parts of an `all` (lower: fewer messages have it, or it
# costs less to follow). An event name is shared by every menu click; most users have no state; `msgtype: text`
# is nearly every message, and its rules would be looked up for each, where has_text's are a list kept ready.
WEIGHTS = {"text": 1.0, "equals": 0.5, "event_key": 1.0, "field": 1.0, "event": 30.0, "msgtype": 600.0,
           "state": 30.0, "is_event": 200.0, "has_text": 500.0}
HAS_TEXT: Filter = (WEIGHTS["has_text"], frozenset({("has_text",)}))
IS_EVENT: Filter = (WEIGHTS["is_event"], frozenset({("is_event",)}))
CLASSES = ("has_text", "is_event")  # what kind of message: the keys kept as lists of rules
NEEDS = {"text": "has_text", "equals": "has_text", "event": "is_event", "event_key": "is_event"}
STATE_NONE_WEIGHT = 100.0

def derive(condition: Condition) -> Filter | None:
    """The rule's necessary filter, or None when every message may match it."""
    if isinstance(condition, Keywords):
        words = condition.words
        if not all(word and _encodable(word) for word in words):
            return None  # an empty word is in every text; a lone surrogate cannot go into an automaton
        return len(words) * WEIGHTS["text"], frozenset(("text", condition.normalized, w, False) for w in words)
    if isinstance(condition, Prefix):
        prefixes = condition.prefixes
        if not all(p and _encodable(p) for p in prefixes):
            return None
        return (len(prefixes) * WEIGHTS["text"],
                frozenset(("text", condition.normalized, p, True) for p in prefixes))
    if isinstance(condition, Equals):
        return (len(condition.values) * WEIGHTS["equals"],
                frozenset(("equals", condition.normalized, v) for v in condition.values))
    if isinstance(condition, EventIs):
        return len(condition.names) * WEIGHTS["event"], frozenset(("event", n) for n in condition.names)
    if isinstance(condition, MsgTypeIs):
        return len(condition.types) * WEIGHTS["msgtype"], frozenset(("msgtype", t) for t in condition.types)
    if isinstance(condition, Regex):
        return HAS_TEXT
    if isinstance(condition, EventKey):
        if condition.patterns:
            return IS_EVENT
        return len(condition.values) * WEIGHTS["event_key"], frozenset(("event_key", v) for v in condition.values)
    if isinstance(condition, FieldIs):
        if condition.patterns:
            return None
        return (len(condition.values) * WEIGHTS["field"],
                frozenset(("field", condition.attribute, v) for v in condition.values))
    if isinstance(condition, StateIs):
        cost = sum(STATE_NONE_WEIGHT if n == "none" else WEIGHTS["state"] for n in condition.names)
        return cost, frozenset(("state", n) for n in condition.names)
    if isinstance(condition, AllOf):  # every part holds: any one part's filter will do; the narrowest
        filters = [f for f in map(derive, condition.conditions) if f is not None]
        return min(filters, key=lambda f: f[0]) if filters else None
    if isinstance(condition, AnyOf):  # one part holds: the union of the parts' filters
        keys: set[Key] = set()
        cost = 0.0
        for part in condition.conditions:
            found = derive(part)
            if found is None:
                return None
            cost += found[0]
            keys |= found[1]
        return cost, frozenset(keys)
    return None  # Not, TimeIs, FieldIs with patterns, and whatever else: no necessary key


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
