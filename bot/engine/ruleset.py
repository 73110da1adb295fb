"""The compiled, immutable rule set. Built once per load, shared by every request that reads it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .conditions import Condition
from .render import ReplyTemplate, Text
from .templates import release

if TYPE_CHECKING:
    from .index import RuleIndex


@dataclass(frozen=True, slots=True)
class StateSpec:
    """A rule's state change: `set_state` (name, ttl, values to remember), or clear (name None)."""

    name: str | None
    ttl: float
    remember: tuple[tuple[str, Text], ...]


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    file: str
    line: int
    priority: int
    when: Condition
    replies: tuple[ReplyTemplate, ...]
    transfer: bool
    passive: bool = False  # official accounts: the one reply goes in the HTTP answer
    kf_account: str | None = None  # transfer to this agent
    send_as: str | None = None  # API sends appear from this agent
    state: StateSpec | None = None
    cooldown: float = 0.0  # seconds: answer the same user at most once per period (0: always)
    typing: bool = False  # show "typing…" before the replies
    during_handoff: bool = False  # may answer while the user is with human agents
    end_handoff: bool = False  # ends the quiet after a transfer: the bot answers this user again
    where: str = field(init=False, compare=False)  # file:line, made once (a Decision carries it per push)

    def __post_init__(self) -> None:
        object.__setattr__(self, "where", f"{self.file}:{self.line}")


@dataclass(frozen=True, slots=True)
class Fallback:
    """What happens when no rule fires. Without a `fallback:` block: transfer to human agents."""

    replies: tuple[ReplyTemplate, ...] = ()
    transfer: bool = True
    when: Condition | None = None  # this fallback applies only when it holds
    passive: bool = False
    kf_account: str | None = None
    send_as: str | None = None
    state: StateSpec | None = None
    file: str | None = None
    line: int | None = None


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...]  # in matching order: priority (high first), then file, then position
    fallbacks: tuple[Fallback, ...]  # tried in order when no rule matches; none holding: transfer
    vars: Mapping[str, Any]
    version: str  # a short hash of every source that went into it
    files: tuple[str, ...]
    templates: tuple[str, ...]
    # the compiled code of every template source in this rule set, for the next reload to reuse
    compiled: Mapping[Any, Any] = field(default_factory=dict, repr=False, compare=False)
    # the parse tree of every rule file, by (name, text), for the next reload to reuse
    parsed: Mapping[tuple[str, str], Any] = field(default_factory=dict, repr=False, compare=False)
    jinja: tuple[Any, ...] = field(default=(), repr=False, compare=False)  # its compiled Jinja templates
    hours: Mapping[str, str] = field(default_factory=dict)  # bot.yaml's named windows in words, for templates
    uses_state: bool = False  # some rule reads or changes the conversation state (so the server loads it)
    uses_cooldown: bool = False  # some rule has a cooldown (so the server loads the user's cooldowns)
    usage: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)  # for engine/lint.py
    by_name: Mapping[str, Rule] = field(default_factory=dict, repr=False, compare=False)
    # which rules each message can match (engine/index.py); None: find_rule tries every rule
    index: RuleIndex | None = field(default=None, repr=False, compare=False)

    def retire(self) -> None:
        """Free this rule set's templates by reference counting (see engine.templates.release). Only for a
        rule set no request can still be using: it cannot render afterwards."""
        release(self.jinja)

    @property
    def fallback(self) -> Fallback:
        """The fallback that applies whatever the conditions: the last one if it has no `when`."""
        last = self.fallbacks[-1]
        return last if last.when is None else Fallback()

    def rule(self, name: str) -> Rule | None:
        return self.by_name.get(name)
