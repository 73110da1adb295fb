"""The `when:` conditions. Each `test(subject)` returns the captures (a dict) when it holds, else None.

A Subject is computed once per message: the text as sent, the text folded (NFKC, case-folded) and normalised
(folded, surrounding whitespace and punctuation trimmed), and the local time — so that no condition normalises or
reads the clock.

Rule values are folded and trimmed like the text, except of the symbols that belong to a word: `C#`, `C++`, `A+`
and `/start` keep theirs (see fold_value). A value without punctuation at its ends is
found in the folded text exactly where it is found in the normalised text (the trimmed ends are only
punctuation), so `keywords` and `prefix` look in the folded text, and `equals` compares with both forms.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from ..messages import Message, State
from .patterns import BoundedPattern as Pattern

Captures = dict[str, Any]


def fold(text: str) -> str:
    """Full-width and half-width alike (ＡＢＣ１２３ = abc123), case folded; nothing dropped."""
    return unicodedata.normalize("NFKC", text).casefold()


def normalize(text: str) -> str:
    """What operators mean by "the same text": folded, surrounding spaces and punctuation (？！。… and ASCII
    alike) dropped."""
    return _trim(fold(text))


def _trim(text: str, trimmable: Callable[[str], bool] | None = None) -> str:
    trimmable = trimmable or _trimmable
    start, end = 0, len(text)
    while start < end and trimmable(text[start]):
        start += 1
    while end > start and trimmable(text[end - 1]):
        end -= 1
    return text[start:end]


# ASCII symbols that belong to a word at its ends (C#, C++, A+, /start, @客服, 100%): a value keeps them.
_WORD_SYMBOLS = frozenset("#+/@&%*=<>^|\\_-")


def fold_value(value: str) -> str:
    """A keywords/equals/prefix value of a normalised rule: folded, and trimmed of the sentence punctuation, brackets
    and emoji around it (`退款？`, `【优惠券】`, `🎁礼品` and `人工！` mean `退款`, `优惠券`, `礼品` and `人工`), but
    not of the symbols that belong to a word (`C#`, `C++`, `A+`, `/start` stay what they are). A value that
    trimming would cut down to one ASCII character or nothing is kept as written (`a.`, `？`): cut down, it would
    fire on almost any text."""
    folded = fold(value).strip()
    trimmed = _trim(folded, lambda char: char not in _WORD_SYMBOLS and _trimmable(char))
    if len(trimmed) >= 2 or (trimmed and not trimmed.isascii()):
        return trimmed
    return folded


def leading_trimmable(text: str) -> int:
    """How many characters normalize drops from the start of `text` (folded)."""
    start = 0
    while start < len(text) and _trimmable(text[start]):
        start += 1
    return start


def _trimmable(char: str) -> bool:
    """Spaces, punctuation and symbols (～, emoji, ★…) — but not currency signs (¥100 stays ¥100)."""
    category = unicodedata.category(char)
    return char.isspace() or category[0] in "PZ" or category in ("Sm", "Sk", "So")


@dataclass(slots=True)  # a value, but made per push: see VALUES_NOT_FROZEN in store/base.py
class Subject:
    message: Message
    text: str | None  # the message's text as sent (None for messages without text)
    normalized: str | None  # folded and trimmed: what `equals` and `normalize: all` regexes see
    now: datetime  # local time, in bot.yaml's timezone
    state: State | None = None  # the user's conversation state
    folded: str | None = None  # folded, not trimmed: what normalised `keywords` and `prefix` look in

    @classmethod
    def of(cls, message: Message, now: datetime, state: State | None = None) -> Subject:
        text = message.text
        if text is None:
            return cls(message, None, None, now, state)
        folded = fold(text)
        return cls(message, text, _trim(folded), now, state, folded)

    def text_for(self, normalized: bool) -> str | None:
        return self.normalized if normalized else self.text

    def words_text(self, normalized: bool) -> str | None:
        """The text `keywords` and `prefix` look in."""
        return self.folded if normalized else self.text


class Condition:
    def test(self, subject: Subject) -> Captures | None:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Keywords(Condition):
    """The text contains any of the words; captures the first word found as `keyword`."""

    words: tuple[str, ...]
    normalized: bool = True

    def test(self, subject: Subject) -> Captures | None:
        text = subject.words_text(self.normalized)
        if text is None:
            return None
        for word in self.words:
            if word in text:
                return {"keyword": word}
        return None


@dataclass(frozen=True, slots=True)
class Equals(Condition):
    """The whole text is one of the values. Normalised, a value with punctuation at its ends (`C#`) is compared
    with the folded text, the others with the normalised text (`人工！` equals `人工`)."""

    values: frozenset[str]
    normalized: bool = True

    def test(self, subject: Subject) -> Captures | None:
        text = subject.text_for(self.normalized)
        if text is None:
            return None
        text = text.strip()
        if text in self.values:
            return {"text": text}
        if self.normalized:
            folded = subject.folded.strip()  # type: ignore[union-attr]
            if folded in self.values:
                return {"text": folded}
        return None


@dataclass(frozen=True, slots=True)
class Prefix(Condition):
    """The text starts with one of the prefixes; captures `prefix`, the `rest` after it without the spaces and
    punctuation that separate it from the prefix (`发票：上海某某` → `上海某某`), and `rest_raw`, all that
    follows the prefix exactly as sent."""

    prefixes: tuple[str, ...]
    normalized: bool = True

    def test(self, subject: Subject) -> Captures | None:
        if not self.normalized:
            text = subject.text
            if text is None:
                return None
            text = text.lstrip()
            for prefix in self.prefixes:
                if text.startswith(prefix):
                    return _rest_captures(prefix, text[len(prefix):])
            return None
        folded = subject.folded
        if folded is None:
            return None
        # the prefix may follow any of the spaces and punctuation normalisation would drop (`？/start` starts
        # with `/start`), and must follow all of them when it does not itself start with punctuation
        lead = leading_trimmable(folded)
        for prefix in self.prefixes:
            if any(folded.startswith(prefix, start) for start in range(lead + 1)):
                return _rest_captures(prefix, _rest_after(subject.text or "", prefix))
        return None


def _rest_captures(prefix: str, raw: str) -> Captures:
    """`rest` without what separates it from the prefix: spaces, and punctuation other than an opening bracket
    or quote (`：`, `，`, `-`, `】`; `“上海”` keeps its quotes); the user's own characters otherwise."""
    start = 0
    while start < len(raw) and (raw[start].isspace() or unicodedata.category(raw[start]) in _SEPARATORS):
        start += 1
    return {"prefix": prefix, "rest": raw[start:].rstrip(), "rest_raw": raw}


_SEPARATORS = frozenset(("Po", "Pd", "Pe", "Pf", "Zs"))


def _rest_after(original: str, prefix: str) -> str:
    """What follows `prefix` (folded) in the original text, in the user's own characters."""
    lead = 0
    while lead < len(original) and _trimmable(original[lead]):
        lead += 1
    # NFKC composes at most four characters into one (α + ̓ + ́ + ͅ → ᾄ): the prefix comes from at most
    # 4 × len(prefix) characters, which bounds the search in a long run of punctuation
    for start in range(lead + 1):
        for end in range(start + 1, min(len(original), start + 4 * len(prefix) + 4) + 1):
            if fold(original[start:end]).startswith(prefix):
                return original[end:]
    return ""


def _search(patterns: tuple[Pattern, ...], value: str | None, name: str) -> Captures | None:
    if value is None:
        return None
    for pattern in patterns:
        needle = pattern.needle  # a text the pattern cannot match without: most messages stop here
        if needle is not None and needle not in value:
            continue
        found = pattern.search(value)
        if found:
            groups = {k: v for k, v in found.groupdict().items() if v is not None}
            return {name: found.group(0), **groups}
    return None


@dataclass(frozen=True, slots=True)
class Regex(Condition):
    """One of the patterns is found in the text (as sent, unless the rule says `normalize: all`); named
    groups become captures."""

    patterns: tuple[Pattern, ...]
    normalized: bool = False

    def test(self, subject: Subject) -> Captures | None:
        return _search(self.patterns, subject.text_for(self.normalized), "text")


@dataclass(frozen=True, slots=True)
class FieldIs(Condition):
    """A field of the message (session_from, page_path, from_user) equals one of the values or matches one
    of the patterns; `name` is the capture."""

    attribute: str
    name: str
    values: frozenset[str] = frozenset()
    patterns: tuple[Pattern, ...] = ()

    def test(self, subject: Subject) -> Captures | None:
        value = getattr(subject.message, self.attribute, None)
        if not isinstance(value, str):
            return None
        if value in self.values:
            return {self.name: value}
        return _search(self.patterns, value, self.name)


@dataclass(frozen=True, slots=True)
class EventIs(Condition):
    """An event with one of the names (compared in lowercase)."""

    names: frozenset[str]

    def test(self, subject: Subject) -> Captures | None:
        message = subject.message
        return {} if message.is_event and message.event in self.names else None  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class EventKey(Condition):
    """An event's EventKey is one of the values, or a pattern matches it (captures as with regex).

    For a subscribe through a parametric QR code (EventKey `qrscene_123`) and for SCAN (`123`) the scene,
    `123`, is tried too: a rule on `123` fires for both."""

    values: frozenset[str]
    patterns: tuple[Pattern, ...] = ()

    def test(self, subject: Subject) -> Captures | None:
        message = subject.message
        if not message.is_event:
            return None
        candidates = [c for c in (message.event_key, getattr(message, "scene", None)) if c]  # type: ignore[attr-defined]
        for candidate in candidates:
            if candidate in self.values:
                return {"event_key": candidate}
        for candidate in candidates:
            found = _search(self.patterns, candidate, "event_key")
            if found is not None:
                return {**found, "event_key": candidate}
        return None


@dataclass(frozen=True, slots=True)
class MsgTypeIs(Condition):
    """A message of one of the types (text, image, miniprogrampage, event, voice, …)."""

    types: frozenset[str]

    def test(self, subject: Subject) -> Captures | None:
        return {} if subject.message.msg_type in self.types else None


@dataclass(frozen=True, slots=True)
class StateIs(Condition):
    """The user's conversation is in one of the states (`state: awaiting_order`); `none` means no state."""

    names: frozenset[str]

    def test(self, subject: Subject) -> Captures | None:
        name = subject.state.name if subject.state is not None else "none"
        return {} if name in self.names else None


@dataclass(frozen=True, slots=True)
class TimeIs(Condition):
    """The local time is inside the window: on one of the weekdays (0 = Monday), inside one of the hour
    ranges (a range may cross midnight: 22:00-06:00), on one of the dates or date ranges. Parts left out
    always hold."""

    weekdays: frozenset[int] | None = None
    hours: tuple[tuple[time, time], ...] | None = None
    dates: tuple[tuple[date, date], ...] | None = None

    def test(self, subject: Subject) -> Captures | None:
        now = subject.now
        if self.weekdays is not None and now.weekday() not in self.weekdays:
            return None
        if self.hours is not None and not any(_in_hours(now.time(), a, b) for a, b in self.hours):
            return None
        if self.dates is not None and not any(a <= now.date() <= b for a, b in self.dates):
            return None
        return {}


def _in_hours(t: time, start: time, end: time) -> bool:
    if start == end:  # 00:00-24:00, the only range with equal ends that compiles: the whole day
        return True
    if start < end:
        return start <= t < end
    return t >= start or t < end  # across midnight


@dataclass(frozen=True, slots=True)
class AllOf(Condition):
    """Every condition holds; their captures are merged."""

    conditions: tuple[Condition, ...]

    def test(self, subject: Subject) -> Captures | None:
        captures: Captures = {}
        for condition in self.conditions:
            found = condition.test(subject)
            if found is None:
                return None
            captures.update(found)
        return captures


@dataclass(frozen=True, slots=True)
class AllWords(AllOf):
    """A group of `keywords` (`keywords: [[退款, 订单]]`): every word occurs in the text. Its parts are one-word
    Keywords, so that the index looks it up by one of them (see engine/index.py). Captures `keyword`, the
    group's first word, and `keywords`, all of them."""

    def test(self, subject: Subject) -> Captures | None:
        for condition in self.conditions:
            if condition.test(subject) is None:
                return None
        words = [condition.words[0] for condition in self.conditions]  # type: ignore[attr-defined]
        return {"keyword": words[0], "keywords": words}


@dataclass(frozen=True, slots=True)
class AnyOf(Condition):
    """The first of the conditions that holds (`any:`)."""

    conditions: tuple[Condition, ...]

    def test(self, subject: Subject) -> Captures | None:
        for condition in self.conditions:
            found = condition.test(subject)
            if found is not None:
                return found
        return None


@dataclass(frozen=True, slots=True)
class Not(Condition):
    """The condition does not hold (`not:`)."""

    condition: Condition

    def test(self, subject: Subject) -> Captures | None:
        return {} if self.condition.test(subject) is None else None
