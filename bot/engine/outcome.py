"""(Decision, Message, the user's records, Settings, now) → Plan: everything one push means, decided once.

`decide()` says which rule fired and what it renders. `plan()` says what that means for this push, as data:
the replies that go out (long texts split, then at most `outbox.per_push` of them, then what WeChat's send
allowance still lets through — with what was dropped and why), the answer to the push (success, a transfer to
human agents, or a passive reply), and what to remember for the user's next messages (state, cooldowns, the
quiet after a transfer, the allowance). Pure: no I/O, no clock, no aiohttp. bot/turn.py applies a Plan; the
server, `kefu chat`, `kefu test` and the console's try-it all get theirs from here, so they cannot disagree.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from .. import allowance
from ..config import Settings
from ..messages import Decision, Message, Reply, State, StateChange, TypingReply
from ..textsplit import split_replies


class AnswerKind(enum.StrEnum):  # a str: logs and metrics take it as it is
    """What the HTTP answer to a push says."""

    SUCCESS = "success"  # replies (if any) go out through the customer-service API
    TRANSFER = "transfer"  # transfer_customer_service: human agents take the conversation
    PASSIVE = "passive"  # official accounts: the one reply is the HTTP answer itself


class DropReason(enum.Enum):
    PER_PUSH = "more replies than outbox.per_push allows for one message"
    ALLOWANCE = "send allowance used up"


class Handoff(enum.Enum):
    START = "start"  # the user is now with human agents: the bot stays quiet for handoff.quiet
    END = "end"  # the quiet is over: the bot answers again (see _handoff)


# The members as module globals for the code that runs on every push: looking a member up on its Enum class
# goes through EnumType's attribute lookup, about 1,000 instructions each time.
_SUCCESS, _TRANSFER, _PASSIVE = AnswerKind.SUCCESS, AnswerKind.TRANSFER, AnswerKind.PASSIVE
_START, _END = Handoff.START, Handoff.END


@dataclass(frozen=True, slots=True)
class Dropped:
    reply: Reply
    reason: DropReason

    @property
    def errcode(self) -> int | None:
        return 45047 if self.reason is DropReason.ALLOWANCE else None  # what WeChat would have answered


@dataclass(slots=True)  # made per push and never changed: see VALUES_NOT_FROZEN in store/base.py
class UserRecords:
    """What the store holds about the user that this push needs (read in one go by bot/turn.py)."""

    state: State | None = None
    cooling: dict[str, float] = field(default_factory=dict)  # rule → until (epoch seconds)
    handoff: bool = False  # with human agents: only rules marked during_handoff answer
    allowance: allowance.Allowance | None = None


NOBODY = UserRecords()  # nothing to read: rules without state or cooldowns, no quota, no handoff quiet


@dataclass(slots=True)  # a value, never changed after it is made; not frozen for its cost: see VALUES_NOT_FROZEN
class Plan:
    decision: Decision
    answer: AnswerKind
    passive: Reply | None = None  # AnswerKind.PASSIVE: the reply in the HTTP answer
    sends: tuple[Reply, ...] = ()  # through the outbox, in order ("typing…" included)
    dropped: tuple[Dropped, ...] = ()
    state: StateChange | None = None  # None: the user's state stays as it is
    cooling: Mapping[str, float] | None = None  # the user's cooldowns to store (None: unchanged)
    handoff: Handoff | None = None
    allowance: allowance.Allowance | None = None  # the user's allowance after this push…
    save_allowance: bool = False  # …and whether the stored record must change

    @property
    def sent(self) -> tuple[Reply, ...]:
        """The messages the user gets: the passive answer, or the API sends ("typing…" is not a message)."""
        if self.passive is not None:
            return (self.passive,)
        return tuple(r for r in self.sends if r.kind != "typing")

    @property
    def kf_account(self) -> str | None:
        return self.decision.kf_account if self.answer is _TRANSFER else None


def plan(decision: Decision, message: Message, records: UserRecords, settings: Settings, now: float, *,
         passive: bool = True) -> Plan:
    """What `decision` means for this push. `passive=False` sends a passive reply through the API instead
    (when its image could not be uploaded in time)."""
    replies = split_replies(decision.replies)  # texts over ~2,000 bytes become several messages
    as_passive = passive and decision.passive and len(replies) == 1
    dropped: list[Dropped] = []
    if not as_passive and len(replies) > settings.outbox.per_push:
        replies = _cap(replies, settings.outbox.per_push, dropped)
    window, save = records.allowance, False
    if settings.quota.enabled:  # every push may open WeChat's send allowance; a passive answer uses none of it
        allowed, window, save = _within_allowance(() if as_passive else replies, message, records, settings, now,
                                                  dropped)
        replies = replies if as_passive else allowed
    reply: Reply | None = None
    sends: tuple[Reply, ...] = ()
    if as_passive:
        answer, reply = _PASSIVE, replies[0]
    else:
        answer = _TRANSFER if decision.transfer else _SUCCESS
        sends = replies
    # what the answer means for the user's next messages (inline: this runs for every push)
    cooling = {**records.cooling, decision.rule: now + decision.cooldown} \
        if decision.cooldown and decision.rule is not None else None
    handoff = None
    if settings.handoff.quiet:
        if answer is _TRANSFER:
            handoff = _START
        elif decision.end_handoff or (message.is_event and _ends_quiet(message, settings)):
            handoff = _END
    return Plan(decision, answer, reply, sends, tuple(dropped) if dropped else (), decision.state, cooling, handoff,
                window, save)


def _cap(replies: tuple[Reply, ...], limit: int, dropped: list[Dropped]) -> tuple[Reply, ...]:
    """At most `limit` messages for one push: an operator's template can never queue a thousand."""
    kept: list[Reply] = []
    count = 0
    for reply in replies:
        if reply.kind == "typing":
            kept.append(reply)
        elif count < limit:
            kept.append(reply)
            count += 1
        else:
            dropped.append(Dropped(reply, DropReason.PER_PUSH))
    return tuple(kept)


def _within_allowance(replies: tuple[Reply, ...], message: Message, records: UserRecords, settings: Settings,
                      now: float, dropped: list[Dropped]) -> tuple[tuple[Reply, ...], allowance.Allowance | None, bool]:
    """The replies WeChat's send allowance still lets through (the rest are dropped), and the allowance
    after them."""
    window = allowance.opened(records.allowance, message, now, settings.quota, settings.wechat.platform)
    messages = [r for r in replies if r.kind != "typing"]  # "typing…" is not a message: it costs nothing
    granted, after = allowance.take(window, len(messages), now)
    save = allowance.changed(records.allowance, after)
    if granted == len(messages):
        return replies, after, save  # the usual case: every reply may go
    dropped.extend(Dropped(r, DropReason.ALLOWANCE) for r in messages[granted:])
    kept = set(map(id, messages[:granted]))
    return tuple(r for r in replies if (isinstance(r, TypingReply) and granted) or id(r) in kept), after, save


def _ends_quiet(message: Message, settings: Settings) -> bool:
    """An event that ends the quiet after a transfer: the agent closing the session, or the user entering the
    session again (handoff.end_on_enter: mini programs get no kf_close_session). A rule's end_handoff (the
    user's own words) ends it too."""
    event = getattr(message, "event", "")
    return event == "kf_close_session" or (settings.handoff.end_on_enter and event == "user_enter_tempsession")
