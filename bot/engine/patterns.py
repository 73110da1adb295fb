"""Operator regexes with a bound on every match.

Python's `re` backtracks, and cannot be stopped: `^(\\w+\\s?)*$` on 28 characters held the event loop for 8.7 s.
The patterns rules write are therefore run by the `regex` module (re's syntax and meaning: `\\d`, `\\w`, `\\s` and
case folding are Unicode as in re, named groups, lookarounds and backreferences work), whose matches take a
timeout: after `limits.regex_ms` (50 ms) the match gives up, the rule is treated as not matching, and the
timeout is logged and counted (engine/limits.py).

Why not RE2 (a linear-time engine): its `\\w`, `\\d`, `\\s` and `\\b` are ASCII-only, so `\\w+` no longer matches
Chinese and `\\s` no longer the ideographic space — the rules a Chinese shop has would change meaning without a
word; it refuses lookarounds and backreferences; and its Python binding costs 2–7 µs a call where `re` costs
0.2–0.5 µs. A timeout bounds every pattern, including those RE2 would refuse.

What a timeout costs: the `regex` module reads the process clock twice per match (about 2 µs here). So a
pattern that needs a piece of text (`订单\\D*(?P<no>\\d+)` needs `订单`) first checks, with `in`, that the text
has it; most messages do not, and those skip the match entirely. That check is sound: it looks only for text
the pattern cannot match without.

Refused at load (file:line and the reason): what neither engine accepts; counted repetitions nested so deep
that compiling them would take seconds (`((a{100}){100}){100}`); and an unescaped `{` before e, s, i or d, which
re reads as text but the regex module as fuzzy matching (`a{e}`): write `\\{`.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Iterable
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

import regex  # type: ignore[import-untyped]

from .limits import LIMITS, TIMEOUTS

_FUZZY = re.compile(r"(?<!\\)\{[eisd]")  # re reads a{e as text; the regex module as fuzzy matching (or refuses)
MAX_REPEAT_PRODUCT = 10_000  # nested counted repetitions (a{100} inside b{100}) expand at compile time
_REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT, *(getattr(sre, "POSSESSIVE_REPEAT", ()),))
_GROUPS = (sre.SUBPATTERN, *(getattr(sre, "ATOMIC_GROUP", ()),))


class PatternError(ValueError):
    """A pattern refused at load; the message says why (and where in the pattern, when it can)."""


@functools.lru_cache(maxsize=65536)
def compile_source(source: str) -> tuple[Any, tuple[str, ...], bool]:
    """(compiled, the texts one of which a match needs, whether it has nested quantifiers). Compiled patterns
    are immutable, so one process-wide cache serves every rule set (a reload does not compile them again).
    Raises PatternError."""
    tree = _parse(source)
    if tree is not None and _FUZZY.search(source):
        raise PatternError("write \\{ for a literal brace before e, s, i or d: {e…} is fuzzy matching here")
    if tree is not None:
        product = _repeat_product(tree)
        if product > MAX_REPEAT_PRODUCT:
            raise PatternError(f"counted repetitions nested {product:,} deep (at most {MAX_REPEAT_PRODUCT:,}): "
                               "write the count once, e.g. \\d{8,20}")
    try:
        compiled = regex.compile(source)
    except regex.error as regex_error:
        error: Any = regex_error
        try:  # re's words, which Python's documentation and most examples use, where re refuses it too
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                re.compile(source)
        except re.error as re_error:
            error = re_error
        where = f" at position {error.pos}" if error.pos is not None else ""
        raise PatternError(f"{error.msg}{where}") from None
    except (OverflowError, RecursionError, MemoryError) as exc:
        raise PatternError(f"too large to compile ({type(exc).__name__})") from None
    if tree is None:
        return compiled, (), False
    ignore_case = bool(tree.state.flags & sre.SRE_FLAG_IGNORECASE)
    needs = () if ignore_case else tuple(sorted(_needs(list(tree)) or ()))
    return compiled, needs, _nested(list(tree))


class BoundedPattern:
    """A compiled operator pattern: `search` as re's, but None when the match gave up (reported, with the rule
    and `where`, file:line)."""

    __slots__ = ("pattern", "source", "needs", "needle", "nested", "rule", "where")

    def __init__(self, source: str, rule: str = "", where: str = ""):
        self.pattern, self.needs, self.nested = compile_source(source)
        # the one text a match needs, for the callers that look for it themselves first (conditions._search)
        self.needle = self.needs[0] if len(self.needs) == 1 else None
        self.source = source
        self.rule = rule
        self.where = where

    def search(self, text: str) -> Any:
        needs = self.needs
        if needs and not any(piece in text for piece in needs):
            return None
        try:
            return self.pattern.search(text, timeout=LIMITS.regex_seconds)
        except TimeoutError:
            TIMEOUTS.report(self.rule, self.where, self.source, len(text))
            return None

    def __repr__(self) -> str:
        return f"BoundedPattern({self.source!r})"


def _parse(source: str) -> Any:
    """re's parse tree of the pattern, or None (syntax only the regex module knows, like \\p{Han})."""
    try:
        with warnings.catch_warnings():  # re's FutureWarnings ("possible nested set") are about re's future
            warnings.simplefilter("ignore", FutureWarning)
            return sre_parse.parse(source)
    except (re.error, RecursionError, OverflowError, ValueError, TypeError):
        return None


def _children(op: Any, av: Any) -> Iterable[list[Any]]:
    if op in _REPEATS:
        yield list(av[2])
    elif op == sre.SUBPATTERN:
        yield list(av[3])
    elif op in _GROUPS or op in (sre.ASSERT, sre.ASSERT_NOT):
        yield list(av[-1])
    elif op == sre.BRANCH:
        for branch in av[1]:
            yield list(branch)
    elif op == sre.GROUPREF_EXISTS:
        for branch in av[1:]:
            if branch is not None:
                yield list(branch)


def _repeat_product(items: list[Any]) -> int:
    """The largest product of the counts of counted repetitions nested inside each other."""
    best = 1
    for op, av in items:
        inner = max((_repeat_product(child) for child in _children(op, av)), default=1)
        if op in _REPEATS and av[1] != sre.MAXREPEAT:
            inner *= max(av[1], 1)
        best = max(best, inner)
    return best


def _is_repeat(op: Any, av: Any) -> bool:
    return op in _REPEATS and (av[1] == sre.MAXREPEAT or av[1] > 1)


def _nested(items: list[Any], inside: bool = False) -> bool:
    """Whether a quantifier (more than once) holds another: `(\\w+\\s?)*`, `(a+)+` — what backtracks for ever."""
    for op, av in items:
        repeat = _is_repeat(op, av)
        if repeat and inside:
            return True
        if any(_nested(child, inside or repeat) for child in _children(op, av)):
            return True
    return False


def has_nested_quantifiers(source: str) -> bool:
    tree = _parse(source)
    return tree is not None and _nested(list(tree))


def _needs(items: list[Any]) -> frozenset[str] | None:
    """Texts one of which every match of the sequence contains (the longest that can be found), or None."""
    found: list[frozenset[str]] = []
    run: list[str] = []

    def close() -> None:
        if run:
            found.append(frozenset({"".join(run)}))
            run.clear()

    for op, av in items:
        if op == sre.LITERAL:
            run.append(chr(av))
            continue
        close()
        inner: frozenset[str] | None = None
        if op == sre.SUBPATTERN and not (av[1] & sre.SRE_FLAG_IGNORECASE):
            inner = _needs(list(av[3]))
        elif op in _REPEATS and av[0] >= 1:
            inner = _needs(list(av[2]))
        elif op == sre.BRANCH:
            alternatives = [_needs(list(branch)) for branch in av[1]]
            if all(alternatives):
                inner = frozenset().union(*alternatives)  # type: ignore[arg-type]
        if inner:
            found.append(inner)
    close()
    return max(found, key=lambda texts: (min(map(len, texts)), -len(texts)), default=None)
