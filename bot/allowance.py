"""Send allowances: how many customer-service messages WeChat still lets kefu send a user.

Each message a user writes opens `per_message` sends within `message_window` (it resets, it does not add up);
entering the session from a mini program (user_enter_tempsession), or subscribe / SCAN / a menu CLICK on an
official account, allows `per_event` sends within `event_window`. Replies beyond the allowance would only
earn a 45047 from WeChat: they are dropped and logged, and the rest still go. Kept per user in the store
(`allowance:<openid>`), shared by every instance. Pure functions here; the server reads and writes the record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .config import QuotaSettings
from .messages import Message
from .store.base import Store

OPENING_EVENTS = {"miniprogram": frozenset({"user_enter_tempsession"}),
                  "official_account": frozenset({"subscribe", "scan", "click"})}


@dataclass(slots=True)  # a value, but made per push: see VALUES_NOT_FROZEN in store/base.py
class Allowance:
    left: int
    until: float  # epoch seconds

    def valid(self, now: float) -> bool:
        return now < self.until and self.left > 0


def opened(current: Allowance | None, message: Message, now: float, quota: QuotaSettings,
           platform: str) -> Allowance | None:
    """The allowance after `message` arrived."""
    if not message.is_event:
        return Allowance(quota.per_message, now + quota.message_window)
    if message.event in OPENING_EVENTS.get(platform, frozenset()):  # type: ignore[attr-defined]
        if current is not None and current.valid(now) and current.left >= quota.per_event:
            return current  # a user message's larger window still holds
        return Allowance(quota.per_event, now + quota.event_window)
    return current if current is not None and current.valid(now) else None


def take(allowance: Allowance | None, wanted: int, now: float) -> tuple[int, Allowance | None]:
    """How many of `wanted` sends may go, and the allowance after them."""
    if allowance is None or not allowance.valid(now):
        return 0, allowance
    granted = min(wanted, allowance.left)
    return granted, Allowance(allowance.left - granted, allowance.until)


def changed(before: Allowance | None, after: Allowance | None) -> bool:
    """Whether the stored record needs writing: not for a window that only moved by under a minute (a user
    writing several messages in a row), so that most pushes cost one read and no write."""
    if before is None or after is None:
        return before is not after
    return before.left != after.left or abs(after.until - before.until) >= 60


def key(user: str) -> str:
    return f"allowance:{user}"


async def load(store: Store, user: str) -> Allowance | None:
    return parse(await store.get(key(user)))


def parse(raw: str | None) -> Allowance | None:
    """The stored record: `<left> <until>` (earlier versions wrote a JSON object; both are read)."""
    if not raw:
        return None
    try:
        if raw.startswith("{"):
            data = json.loads(raw)
            return Allowance(int(data["left"]), float(data["until"]))
        left, until = raw.split(" ")
        return Allowance(int(left), float(until))
    except (ValueError, KeyError, TypeError):
        return None


async def save(store: Store, user: str, allowance: Allowance | None, now: float) -> None:
    if allowance is None or allowance.until <= now:
        await store.delete(key(user))
    else:
        # plain text: a push of a new user writes this record, and json.dumps cost it about 3 µs
        await store.set(key(user), f"{allowance.left} {allowance.until!r}", max(1.0, allowance.until - now))
