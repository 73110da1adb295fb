"""The compiled, immutable rule set. Built once per load, shared by every request that reads it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .conditions import Condition
from .render import ReplyTemplate
from .templates import release


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

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Fallback:
    """What happens when no rule fires. Without a `fallback:` block: transfer to human agents."""

    replies: tuple[ReplyTemplate, ...] = ()
    transfer: bool = True
    passive: bool = False
    kf_account: str | None = None
    send_as: str | None = None
    file: str | None = None
    line: int | None = None


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...]  # in matching order: priority (high first), then file, then position
    fallback: Fallback
    vars: Mapping[str, Any]
    version: str  # a short hash of every source that went into it
    files: tuple[str, ...]
    templates: tuple[str, ...]
    # the compiled code of every template source in this rule set, for the next reload to reuse
    compiled: Mapping[Any, Any] = field(default_factory=dict, repr=False, compare=False)
    # the parse tree of every rule file, by (name, text), for the next reload to reuse
    parsed: Mapping[tuple[str, str], Any] = field(default_factory=dict, repr=False, compare=False)
    jinja: tuple[Any, ...] = field(default=(), repr=False, compare=False)  # its compiled Jinja templates

    def retire(self) -> None:
        """Free this rule set's templates by reference counting (see engine.templates.release). Only for a
        rule set no request can still be using: it cannot render afterwards."""
        release(self.jinja)

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)
