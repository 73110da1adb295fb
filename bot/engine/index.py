"""Which rules a message can possibly match, so that find_rule tests those rather than every rule.

For each rule, a *necessary* filter is derived from its `when`: a set of keys at least one of which the message
has whenever the rule matches (a keyword occurring in the text, the whole text for `equals`, the event name, the
message type, …). A rule with no such filter (`regex`, `not`, `time`, …) is a candidate for every message. At
match time the keys present in the message are looked up — every keyword at once, through Aho-Corasick automata
over all the rules' keywords — and the candidates are tested in rule order with the rule's own `when.test`, which
stays the only judge: the index only leaves out rules that cannot match, so the first rule found is the one the
plain loop over every rule finds.

Keys:
    ("text", normalized, word, at_start)   the word occurs in the text — normalised rules: the folded text — (at
                                           its start, after spaces — and punctuation, normalised — for `prefix`)
    ("equals", normalized, value)          the text, stripped, is the value (normalised rules: the normalised or
                                           the folded text)
    ("event", name) ("msgtype", type) ("event_key", key) ("field", attribute, value) ("state", name)
    ("has_text",) ("is_event",)            the message has a text (for `regex`); is an event (`event_key` regex)
The last two are kept as lists of rules rather than looked up: the rules to try for every text message, for
every event.
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Generator, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import ahocorasick_rs

from .conditions import (
    Captures,
    Subject,
    leading_trimmable,
)
from .keys import CLASSES, NEEDS, Key, derive

if TYPE_CHECKING:
    from .ruleset import Rule

Postings = tuple[int, ...]  # rule positions, ascending

# An automaton is built in one call that holds the GIL: ~90 ns per byte of pattern plus ~0.3 µs per pattern. The
# patterns are split into automata of at most this cost (~3 ms of building, what parsing a rule file of 100 rules
# takes), each built in its own step, so that a large rule set never holds the event loop long. Each automaton
# costs ~0.3 µs per message. An automaton ends where a pattern's hash says so (once it has SHARD_MIN), so that an
# edit moves the ends of the automata around it only: a reload reuses the others (see index_steps).
SHARD_COST = 40_000
SHARD_MIN = 32_000
SHARD_END = 32  # after SHARD_MIN, one pattern in this many ends an automaton
PATTERN_COST = 4  # bytes' worth of building per pattern
RULES_PER_STEP = 200
KEYS_PER_STEP = 2000
# Every automaton costs each message a call, so once a rule set is built its small automata are joined into
# automata of up to this many patterns, in a worker thread (see merge_automata): ahocorasick_rs builds one of
# this size with the GIL released nearly throughout (the event loop was seen to wait under 0.1 ms; a build of
# 20,000 patterns held it for 10-15 ms). bench.match's 10,000 keyword rules: 5 calls per message instead of 11.
MERGED_PATTERNS = 5000


class _Words:
    """The `keywords` and `prefix` words of one text form (normalised, or as sent): automata over all of them,
    and for each word the rules it may make match anywhere in the text (keywords) or at its start (prefix)."""

    __slots__ = ("normalized", "automata", "built", "anywhere", "at_start", "has_prefix", "shards")

    def __init__(self, normalized: bool, automata: tuple[tuple[Any, int], ...], built: dict[tuple[str, ...], Any],
                 anywhere: list[Postings | None], at_start: list[Postings | None]):
        self.normalized = normalized
        self.automata = automata  # (automaton, the index of its first word): what messages are matched with
        self.shards = automata  # the automata as built in steps (merge_automata may replace `automata`)
        self.built = built  # the step-built automata by their words, for the next rule set to reuse
        self.anywhere = anywhere
        self.at_start = at_start
        self.has_prefix = any(at_start)

    def hits(self, text: str, found: list[Postings]) -> None:
        """Add the postings of every word in `text` to `found` (the folded text for normalised words, see
        Prefix). Raises UnicodeEncodeError for a lone surrogate."""
        anywhere, at_start = self.anywhere, self.at_start
        if not self.has_prefix:
            start = -1
        elif self.normalized:  # a prefix may start anywhere in the punctuation normalisation drops
            start = leading_trimmable(text)
        else:
            start = len(text) - len(text.lstrip())
        for automaton, first in self.automata:
            # overlapping: every occurrence of every word, also a word inside another word
            for word, begin, _ in automaton.find_matches_as_indexes(text, overlapping=True):
                word += first
                postings = anywhere[word]
                if postings is not None:
                    found.append(postings)
                if begin <= start:
                    postings = at_start[word]
                    if postings is not None:
                        found.append(postings)


class RuleIndex:
    """Built once per RuleSet (see index_steps); `find` is find_rule's loop over the candidates only."""

    __slots__ = ("rules", "base", "words", "equals_normalized", "equals_raw", "events", "msgtypes", "event_keys",
                 "fields", "states")

    def __init__(self, rules: Sequence[Rule], always: Sequence[int], classes: dict[str, list[int]],
                 words: tuple[_Words, ...], exact: dict[Key, dict[str, Postings]]):
        self.rules = tuple(rules)
        # the rules tried whatever the keys, by [kind of message][handoff]: kind 0 has a text, 1 is an event,
        # 2 neither (an image, …); `always` are the rules without a filter
        bases = [sorted({*always, *classes.get("has_text", ())}), sorted({*always, *classes.get("is_event", ())}),
                 list(always)]
        self.base = tuple((tuple(base), tuple(p for p in base if self.rules[p].during_handoff)) for base in bases)
        self.words = words
        self.equals_normalized = exact.get(("equals", True)) or None
        self.equals_raw = exact.get(("equals", False)) or None
        self.events = exact.get(("event",)) or None
        self.msgtypes = exact.get(("msgtype",)) or None
        self.event_keys = exact.get(("event_key",)) or None
        self.states = exact.get(("state",)) or None
        self.fields = tuple((kind[1], values) for kind, values in exact.items() if kind[0] == "field")

    def candidates(self, subject: Subject) -> Postings | list[int] | None:
        """The positions of the rules with a filter that this message passes, ascending; None when the message
        cannot be looked up (a lone surrogate in its text): then every rule is a candidate."""
        found: list[Postings] = []
        message = subject.message
        text, normalized, folded = subject.text, subject.normalized, subject.folded
        if text is not None:
            for words in self.words:
                value = folded if words.normalized else text
                try:
                    words.hits(value, found)  # type: ignore[arg-type]
                except UnicodeEncodeError:
                    return None
            if self.equals_normalized is not None:
                postings = self.equals_normalized.get(normalized.strip())  # type: ignore[union-attr]
                if postings is not None:
                    found.append(postings)
                as_folded = folded.strip()  # type: ignore[union-attr]
                postings = self.equals_normalized.get(as_folded) if as_folded != normalized else None
                if postings is not None:
                    found.append(postings)
            if self.equals_raw is not None:
                postings = self.equals_raw.get(text.strip())
                if postings is not None:
                    found.append(postings)
        if message.is_event:
            if self.events is not None:
                postings = self.events.get(message.event)  # type: ignore[attr-defined]
                if postings is not None:
                    found.append(postings)
            if self.event_keys is not None:
                key, scene = message.event_key, getattr(message, "scene", None)  # type: ignore[attr-defined]
                for value in (key, scene) if scene and scene != key else (key,):
                    postings = self.event_keys.get(value) if value else None
                    if postings is not None:
                        found.append(postings)
        if self.msgtypes is not None:
            postings = self.msgtypes.get(message.msg_type)
            if postings is not None:
                found.append(postings)
        for attribute, values in self.fields:
            value = getattr(message, attribute, None)
            postings = values.get(value) if isinstance(value, str) else None
            if postings is not None:
                found.append(postings)
        if self.states is not None:
            postings = self.states.get(subject.state.name if subject.state is not None else "none")
            if postings is not None:
                found.append(postings)
        if not found:
            return ()
        if len(found) == 1:
            return found[0]
        return sorted(set().union(*found))

    def find(self, subject: Subject, cooling: frozenset[str] = frozenset(),
             handoff: bool = False) -> tuple[Rule | None, Captures]:
        """The first rule that matches, in rule order, as the loop over every rule would find it."""
        rules = self.rules
        hits = self.candidates(subject)
        order: Iterable[int]
        if hits is None:
            order = range(len(rules))
        else:
            kind = 0 if subject.text is not None else 1 if subject.message.is_event else 2
            base = self.base[kind][handoff]
            # both ascending; a rule may be in both (`any` of a regex and an event, say): tried once. sorted()
            # merges two runs in C, ~10x faster than heapq.merge, which only wins by stopping early on a long list
            if not hits or not base:
                order = hits or base
            else:
                order = sorted((*base, *hits)) if len(base) <= 64 else heapq.merge(base, hits)
        last = -1
        for position in order:
            if position == last:
                continue
            last = position
            rule = rules[position]
            if (cooling and rule.name in cooling) or (handoff and not rule.during_handoff):
                continue
            captures = rule.when.test(subject)
            if captures is not None:
                return rule, captures
        return None, {}


def index_steps(rules: Sequence[Rule], previous: RuleIndex | None = None) -> Generator[None, None, RuleIndex]:
    """Build the index of `rules` (in matching order) in steps, like engine.compile_steps, whose last steps these
    are: 200 rules, 2,000 keys, or one automaton (about 2 ms) each. The automata of `previous` (the index of the
    rule set being replaced) whose words are unchanged are reused."""
    reusable = {w.normalized: w.built for w in previous.words} if previous is not None else {}
    always: list[int] = []
    classes: dict[str, list[int]] = {}
    postings: dict[Key, list[int]] = {}
    for position, rule in enumerate(rules):
        if position % RULES_PER_STEP == RULES_PER_STEP - 1:
            yield
        found = derive(rule.when)
        if found is None:
            always.append(position)
            continue
        keys = found[1]
        kinds = {key[0] for key in keys if key[0] in CLASSES}
        for kind in kinds:
            classes.setdefault(kind, []).append(position)
        for key in keys:
            # a key that needs a kind of message the rule is tried for anyway is left out
            if key[0] not in CLASSES and NEEDS.get(key[0]) not in kinds:
                postings.setdefault(key, []).append(position)
    exact: dict[Key, dict[str, Postings]] = {}
    # per text form: word → its number in the automata, and by number the rules for anywhere and at the start
    texts: dict[bool, tuple[dict[str, int], list[Postings | None], list[Postings | None]]] = {}
    for n in range(len(postings)):
        if n % KEYS_PER_STEP == 0:
            yield
        key, positions = postings.popitem()  # and free as it goes, rather than all at once at the end
        if key[0] == "text":
            _, normalized, word, at_start = key
            numbers, anywhere, at_starts = texts.setdefault(normalized, ({}, [], []))
            number = numbers.setdefault(word, len(anywhere))
            if number == len(anywhere):
                anywhere.append(None)
                at_starts.append(None)
            (at_starts if at_start else anywhere)[number] = tuple(positions)
        else:
            exact.setdefault(key[:-1], {})[key[-1]] = tuple(positions)
    words = []
    for normalized, (numbers, anywhere, at_starts) in texts.items():
        patterns = list(numbers)
        automata = []
        built: dict[tuple[str, ...], Any] = {}
        old = reusable.get(normalized, {})
        for start, end in _shards(patterns):
            yield
            shard = tuple(patterns[start:end])
            automaton = old.get(shard)
            if automaton is None:
                automaton = ahocorasick_rs.AhoCorasick(shard)
            built[shard] = automaton
            automata.append((automaton, start))
        words.append(_Words(normalized, tuple(automata), built, anywhere, at_starts))
    yield
    return RuleIndex(rules, always, classes, tuple(words), exact)


def merge_automata(index: RuleIndex) -> int:
    """Join the index's step-built automata into automata of up to MERGED_PATTERNS patterns, matching the same
    words with fewer calls per message. Run before the rule set goes live (a build in a worker thread, or at
    start); the step-built ones stay in `built` for the next reload to reuse. Returns the automata built."""
    made = 0
    for words in index.words:
        if words.automata is not words.shards:
            continue  # merged already
        groups: list[list[tuple[tuple[str, ...], int]]] = [[]]
        count = 0
        by_automaton = {id(automaton): shard for shard, automaton in words.built.items()}
        for automaton, first in words.shards:
            shard = by_automaton[id(automaton)]
            if count and count + len(shard) > MERGED_PATTERNS:
                groups.append([])
                count = 0
            groups[-1].append((shard, first))
            count += len(shard)
        if len(groups) == len(words.shards):
            continue  # nothing to join
        merged = []
        for group in groups:
            if len(group) == 1:
                shard, first = group[0]
                merged.append((words.built[shard], first))
                continue
            patterns = [pattern for shard, _ in group for pattern in shard]
            merged.append((ahocorasick_rs.AhoCorasick(patterns), group[0][1]))
            made += 1
        words.automata = tuple(merged)
    return made


def _shards(patterns: list[str]) -> Iterable[tuple[int, int]]:
    """(start, end) slices of `patterns` each cheap enough to build in one step; where the slices end depends on
    the patterns near the end, not on those before the slice."""
    start = cost = 0
    for i, pattern in enumerate(patterns):
        size = (len(pattern) if pattern.isascii() else len(pattern.encode("utf-8"))) + PATTERN_COST
        if cost and cost + size > SHARD_COST:
            yield start, i
            start, cost = i, 0
        cost += size
        if cost >= SHARD_MIN and zlib.crc32(pattern.encode("utf-8")) % SHARD_END == 0:  # the same in every run
            yield start, i + 1
            start, cost = i + 1, 0
    if start < len(patterns):
        yield start, len(patterns)


def build_index(rules: Sequence[Rule]) -> RuleIndex:
    """index_steps all at once."""
    steps = index_steps(rules)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
