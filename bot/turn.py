"""One conversation turn: read the user's records → decide → plan → apply the plan to a store and an outbox.

This is the one place that knows what a push means. The server calls `take_turn` for every push; `kefu chat`
and `kefu test` call it with a memory store of their own and an outbox that records instead of sending; the
console's try-it calls `dry_turn`, which reads the live store and writes nothing. All four get the same Plan
for the same message and records, so a rule set that passes `kefu test` behaves the same in production.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from . import allowance, logs
from .config import Settings
from .engine import RuleSet, decide
from .engine.outcome import NOBODY, AnswerKind, Handoff, Plan, UserRecords, plan
from .errors import StoreError
from .messages import Decision, ImageReply, Message, Reply
from .outbox import short_user
from .store import LogEntry, Store
from .store.state import (
    cooldown_key,
    end_handoff,
    handoff_key,
    parse_cooldowns,
    parse_state,
    save_cooldowns,
    save_state,
    start_handoff,
    state_key,
)

log = logging.getLogger(__name__)
NOT_COOLING: frozenset[str] = frozenset()
_SUCCESS, _TRANSFER = AnswerKind.SUCCESS, AnswerKind.TRANSFER  # module globals: see engine/outcome.py

PASSIVE_UPLOAD_SECONDS = 2.0  # a passive image's upload must leave the push time within WeChat's 5 s


class Outbound(Protocol):
    """Where a turn's replies go: the real Outbox, or a Recorder."""

    async def submit(self, user: str, replies: tuple[Reply, ...], push: str,
                     send_as: str | None = None) -> object: ...


class Journal(Protocol):
    """The conversation log (bot/convlog.py)."""

    def add(self, *entries: LogEntry) -> None: ...


MediaResolver = Callable[[Reply], Awaitable[Reply]]  # a reply → the same reply with its file's media_id


class Recorder:
    """An outbox that records what would be sent instead of sending it (`kefu chat`, `kefu test`)."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, tuple[Reply, ...], str | None]] = []

    async def submit(self, user: str, replies: tuple[Reply, ...], push: str,
                     send_as: str | None = None) -> object:
        self.submitted.append((user, replies, send_as))
        return None


@dataclass(slots=True)  # a value, never changed after it is made; not frozen for its cost: see VALUES_NOT_FROZEN
class Turn:
    """What one message did."""

    message: Message
    records: UserRecords  # as read before the turn
    plan: Plan
    label: str = ""  # the message's type for logs and metrics (type_label)
    store_error: StoreError | None = None  # a record write after the replies were stored failed

    @property
    def decision(self) -> Decision:
        return self.plan.decision


async def load_records(store: Store, ruleset: RuleSet, settings: Settings, message: Message,
                       now: float) -> UserRecords:
    """What decide and plan need to know about the user — only what the rules and settings use — in one read
    (one MGET on Redis, one SELECT on SQLite)."""
    user = message.from_user
    state, cooling = ruleset.uses_state, ruleset.uses_cooldown
    handoff = bool(settings.handoff.quiet) and not message.is_event
    quota = settings.quota.enabled
    keys = []
    if state:
        keys.append(state_key(user))
    if cooling:
        keys.append(cooldown_key(user))
    if handoff:
        keys.append(handoff_key(user))
    if quota:
        keys.append(allowance.key(user))
    if not keys:
        return NOBODY
    values = iter(await store.get_many(keys))  # in the order of `keys`; arguments are evaluated in order
    return UserRecords(state=parse_state(next(values)) if state else None,
                       cooling=parse_cooldowns(next(values), now) if cooling else {},
                       handoff=bool(next(values)) if handoff else False,
                       allowance=allowance.parse(next(values)) if quota else None)


async def dry_turn(ruleset: RuleSet, settings: Settings, store: Store, message: Message, now: float) -> Turn:
    """What `take_turn` would do now, read from the store, with nothing written, sent or logged."""
    return await take_turn(ruleset, settings, store, message, now, outbox=None)


async def take_turn(ruleset: RuleSet, settings: Settings, store: Store, message: Message, now: float, *,
                    outbox: Outbound | None, journal: Journal | None = None,
                    media: MediaResolver | None = None) -> Turn:
    """Play one message: read, decide, plan, then store the replies in the outbox (before the push is
    answered) and remember what the answer means. Raises StoreError if the replies could not be stored;
    a failed write after that is in `Turn.store_error` (the answer and the replies stand). Without an
    outbox, the turn stops after planning: nothing is written, sent or logged (dry_turn)."""
    records = await load_records(store, ruleset, settings, message, now)
    decision = decide(ruleset, message, datetime.fromtimestamp(now, settings.timezone), records.state,
                      cooling=frozenset(records.cooling) if records.cooling else NOT_COOLING, handoff=records.handoff)
    the_plan = plan(decision, message, records, settings, now)
    if outbox is None:
        return Turn(message, records, the_plan, type_label(message))
    if the_plan.passive is not None and media is not None and _has_file(the_plan.passive):
        the_plan = await _with_media(the_plan, the_plan.passive, message, records, settings, now, media)
    user = message.from_user
    if the_plan.save_allowance:
        await allowance.save(store, user, the_plan.allowance, now)
    if the_plan.sends:
        await outbox.submit(user, the_plan.sends, message.dedupe_key, the_plan.decision.send_as)
    label = type_label(message)
    if journal is not None:  # the conversation log: what the user sent, and the rule
        decision = the_plan.decision
        pushed = LogEntry(now, user, "push", label, message.text or "", decision.rule or "",
                          detail=decision.error or ("quiet" if decision.quiet else ""))  # quiet: for the insights
        if the_plan.answer is _SUCCESS and not the_plan.dropped:
            journal.add(pushed)  # the usual push (API sends are logged by the outbox when they go or fail)
        else:
            journal.add(pushed, *outcome_entries(the_plan, message, label, now))
    if the_plan.dropped:
        log.warning("%d repl%s to %s dropped: %s", len(the_plan.dropped), "y" if len(the_plan.dropped) == 1
                    else "ies", short_user(user), "; ".join(sorted({d.reason.value for d in the_plan.dropped})))
    try:  # the replies are stored: from here on, a store failure must not change the answer
        if the_plan.state is not None:
            await save_state(store, user, the_plan.state)
        if the_plan.handoff is not None:
            if the_plan.handoff is Handoff.START:
                await start_handoff(store, user, settings.handoff.quiet)
            else:
                await end_handoff(store, user)
        if the_plan.cooling is not None:
            await save_cooldowns(store, user, the_plan.cooling, now)
    except StoreError as exc:
        return Turn(message, records, the_plan, label, exc)  # this step's state or cooldown is lost
    return Turn(message, records, the_plan, label)


def _has_file(reply: Reply) -> bool:
    return isinstance(reply, ImageReply) and reply.file is not None and not reply.media_id


async def _with_media(the_plan: Plan, passive: Reply, message: Message, records: UserRecords, settings: Settings,
                      now: float, media: MediaResolver) -> Plan:
    """A passive image from a local file needs its media_id in the answer: uploaded (or cached) within the
    push's time; if that fails, the image goes through the API after the answer instead."""
    try:
        async with asyncio.timeout(PASSIVE_UPLOAD_SECONDS):
            return replace(the_plan, passive=await media(passive))
    except Exception as exc:  # WeChatAPIError, a timeout, the network: the API path retries on its own
        log.warning("passive image for %s not uploaded in time (%s): sending it through the API instead",
                    short_user(message.from_user), type(exc).__name__ if isinstance(exc, TimeoutError) else exc)
        return plan(the_plan.decision, message, records, settings, now, passive=False)


def outcome_entries(the_plan: Plan, message: Message, label: str, now: float) -> list[LogEntry]:
    """The conversation log's lines for a push besides the push itself: a transfer or a passive answer, and
    the replies dropped."""
    decision, user = the_plan.decision, message.from_user
    rule = decision.rule or ""
    out = []
    if the_plan.answer is _TRANSFER:
        out.append(LogEntry(now, user, "transfer", label, "", rule, detail=decision.kf_account or ""))
    elif the_plan.passive is not None:
        out.append(LogEntry(now, user, "sent", the_plan.passive.kind, getattr(the_plan.passive, "content", ""),
                            rule, 0, "passive"))
    if the_plan.dropped:
        out.extend(LogEntry(now, user, "failed", d.reply.kind, getattr(d.reply, "content", ""), rule,
                            errcode=d.errcode, detail=f"dropped: {d.reason.value}") for d in the_plan.dropped)
    return out


def type_label(message: Message) -> str:
    """The message's type for logs and metrics: text, image, event/subscribe, …"""
    event = getattr(message, "event", None)
    raw = f"event/{event}" if event is not None else message.msg_type
    label = _LABELS.get(raw)
    if label is None:
        label = loggable(raw)
        if len(_LABELS) < 1000:  # the message types and events WeChat sends: a few dozen
            _LABELS[raw] = label
    return label


_LABELS: dict[str, str] = {}


def loggable(value: str, limit: int = 48) -> str:
    """A value from a push, safe for a log line: no line breaks or control characters, bounded length."""
    value = logs.printable(value)
    return value if len(value) <= limit else value[:limit] + "…"
