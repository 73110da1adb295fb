"""The `when:` conditions. Each `test(message)` returns the captures (a dict) when it holds, else None."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..messages import Message

Captures = dict[str, Any]


class Condition:
    def test(self, message: Message) -> Captures | None:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Keywords(Condition):
    """The text contains any of the words; captures the first word found as `keyword`."""

    words: tuple[str, ...]

    def test(self, message: Message) -> Captures | None:
        text = message.text
        if text is None:
            return None
        for word in self.words:
            if word in text:
                return {"keyword": word}
        return None


@dataclass(frozen=True, slots=True)
class Equals(Condition):
    """The whole text (surrounding whitespace aside) is one of the values."""

    values: frozenset[str]

    def test(self, message: Message) -> Captures | None:
        text = message.text
        if text is None:
            return None
        text = text.strip()
        return {"text": text} if text in self.values else None


@dataclass(frozen=True, slots=True)
class Prefix(Condition):
    """The text starts with one of the prefixes; captures `prefix` and the `rest` after it."""

    prefixes: tuple[str, ...]

    def test(self, message: Message) -> Captures | None:
        text = message.text
        if text is None:
            return None
        text = text.lstrip()
        for prefix in self.prefixes:
            if text.startswith(prefix):
                return {"prefix": prefix, "rest": text[len(prefix):].strip()}
        return None


@dataclass(frozen=True, slots=True)
class Regex(Condition):
    """One of the patterns is found in the text; named groups become captures."""

    patterns: tuple[re.Pattern[str], ...]

    def test(self, message: Message) -> Captures | None:
        text = message.text
        if text is None:
            return None
        for pattern in self.patterns:
            found = pattern.search(text)
            if found:
                groups = {k: v for k, v in found.groupdict().items() if v is not None}
                return {"text": found.group(0), **groups}
        return None


@dataclass(frozen=True, slots=True)
class EventIs(Condition):
    """An event with one of the names (compared in lowercase)."""

    names: frozenset[str]

    def test(self, message: Message) -> Captures | None:
        return {} if message.is_event and message.event in self.names else None  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class MsgTypeIs(Condition):
    """A message of one of the types (text, image, miniprogrampage, event, voice, …)."""

    types: frozenset[str]

    def test(self, message: Message) -> Captures | None:
        return {} if message.msg_type in self.types else None


@dataclass(frozen=True, slots=True)
class AllOf(Condition):
    """Every condition holds; their captures are merged."""

    conditions: tuple[Condition, ...]

    def test(self, message: Message) -> Captures | None:
        captures: Captures = {}
        for condition in self.conditions:
            found = condition.test(message)
            if found is None:
                return None
            captures.update(found)
        return captures


@dataclass(frozen=True, slots=True)
class EventKey(Condition):
    """An event's EventKey is one of the values, or a pattern matches it (captures as with regex).

    For a subscribe through a parametric QR code (EventKey `qrscene_123`) and for SCAN (`123`) the scene,
    `123`, is tried too: a rule on `123` fires for both."""

    values: frozenset[str]
    patterns: tuple[re.Pattern[str], ...] = ()

    def test(self, message: Message) -> Captures | None:
        if not message.is_event:
            return None
        candidates = [c for c in (message.event_key, getattr(message, "scene", None)) if c]  # type: ignore[attr-defined]
        for candidate in candidates:
            if candidate in self.values:
                return {"event_key": candidate}
        for pattern in self.patterns:
            for candidate in candidates:
                found = pattern.search(candidate)
                if found:
                    groups = {k: v for k, v in found.groupdict().items() if v is not None}
                    return {"event_key": candidate, **groups}
        return None
