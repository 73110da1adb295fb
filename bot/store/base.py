"""The store interface every backend implements — memory (tests, trying kefu out), sqlite (one host, the
embedded default) and redis (a fleet of instances).

Everything kefu keeps beyond one request goes through these methods: retry dedupe, the outbox, a small
key-value space with expiry (the access token, locks, lane leases, conversation state, the media cache and
send allowances), the conversation log and rule hit counts. Times are epoch seconds (`now` is passed in where the store
compares times; `ttl` is relative). Every method may raise StoreError when the backend cannot be reached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from ..errors import StoreError
from ..messages import Reply

log = logging.getLogger(__name__)
T = TypeVar("T")

Status = Literal["pending", "sent", "failed", "unsent"]
STATUSES: tuple[Status, ...] = ("pending", "sent", "failed", "unsent")


# VALUES_NOT_FROZEN: OutboxItem, LogEntry and the turn's Plan and Turn are values — nothing changes one after it
# is made — but not frozen dataclasses: a frozen dataclass's __init__ sets each field through object.__setattr__,
# about five times the cost of a plain slot, and the push path makes several of them per push (3.6 µs for such
# a value against 0.6 µs). Make a changed copy (finished(), dataclasses.replace) instead of assigning.
@dataclass(slots=True)
class OutboxItem:
    """One reply on its way to one user. `unsent` means it was never tried (no credentials)."""

    id: int
    user: str
    reply: Reply
    push: str  # the dedupe key of the push that caused it
    created_at: float
    send_as: str | None = None  # official accounts: the agent the message appears from
    status: Status = "pending"
    attempts: int = 0
    errcode: int | None = None
    error: str | None = None
    next_try: float = 0.0  # not before this time (backoff between attempts)

    def finished(self, status: Status, attempts: int = 0, errcode: int | None = None,
                 error: str | None = None) -> OutboxItem:
        return OutboxItem(self.id, self.user, self.reply, self.push, self.created_at, self.send_as, status,
                          self.attempts + attempts, errcode, error, self.next_try)  # replace() is 5× slower


def readable(raws: Iterable[T], parse: Callable[[T], OutboxItem], store: str) -> list[OutboxItem]:
    """The items of a listing (the console's outbox page) that this kefu can read; each one it cannot (see
    Store.lane_next) is left out with a warning, rather than failing the whole page."""
    items = []
    for raw in raws:
        try:
            items.append(parse(raw))
        except StoreError as exc:
            log.warning("%s store: an outbox item is left out of a listing: %s", store, exc)
    return items


def unreadable(exc: BaseException) -> str:
    """The error of an item marked failed because the store could not read it (see Store.lane_next)."""
    cause = exc.__cause__ or exc
    return f"could not be read: {type(cause).__name__}: {cause}"[:500]


LogKind = Literal["push", "sent", "failed", "transfer", "unsent"]


@dataclass(slots=True)  # not frozen: see VALUES_NOT_FROZEN above
class LogEntry:
    """One line of the conversation log."""

    ts: float
    user: str
    kind: LogKind
    msg_type: str = ""  # push: text, image, event/subscribe, …
    text: str = ""  # push: what the user wrote; sent/failed: what the bot sent
    rule: str = ""  # the rule that fired ("" for the fallback)
    errcode: int | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RuleHits:
    """How often one rule fired: in total, on the day asked about, and when last (epoch seconds)."""

    total: int = 0
    today: int = 0
    last: float | None = None


class Store(Protocol):
    kind: str  # "memory", "sqlite" or "redis"
    shared: bool  # several processes can use it at once

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> bool: ...

    # -- retry dedupe: one answer per push, whichever instance gets each delivery --------------------
    async def claim(self, key: str, ttl: float) -> bool:
        """Atomically take `key` for `ttl` seconds. True for the first caller only."""
        ...

    async def put_answer(self, key: str, answer: bytes, ttl: float) -> None: ...

    async def get_answer(self, key: str) -> bytes | None: ...

    # -- key-value with expiry -----------------------------------------------------------------------
    async def get(self, key: str) -> str | None: ...

    async def get_many(self, keys: list[str]) -> list[str | None]:
        """The values of `keys`, in order (None for a missing or expired key): one round trip."""
        ...

    async def set(self, key: str, value: str, ttl: float | None = None) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def set_if_absent(self, key: str, value: str, ttl: float) -> bool:
        """A lock: set only if absent (or expired). True if set."""
        ...

    async def touch_if(self, key: str, value: str, ttl: float) -> bool:
        """Extend a lock's ttl if it still holds `value`. True if it did."""
        ...

    async def delete_if(self, key: str, value: str) -> bool:
        """Release a lock if it still holds `value`. True if it did."""
        ...

    # -- the outbox ----------------------------------------------------------------------------------
    async def outbox_add(self, user: str, replies: tuple[Reply, ...], push: str, now: float,
                         send_as: str | None = None) -> list[OutboxItem]:
        """Store replies as pending, in order; ids increase in the order of insertion."""
        ...

    async def outbox_update(self, item: OutboxItem) -> None:
        """Write back status, attempts, errcode, error and next_try of an item."""
        ...

    async def outbox_next(self, user: str) -> OutboxItem | None:
        """The user's oldest pending item (lowest id), or None."""
        ...

    async def lane_next(self, user: str, owner: str, lease: float,
                        done: OutboxItem | None = None) -> tuple[bool, OutboxItem | None]:
        """One step of a user's lane, atomically: write back `done` (as outbox_update) if given; make sure
        `owner` holds the lane lease of `user` (key `lane:<user>` in the key-value space: take it when free
        or expired, refresh it to `lease` seconds when it is already `owner`'s); then return (True, the
        user's oldest pending item) — and when there is none, release the lease, so that a reply added
        after this step starts a new lane. (False, None) when another owner holds the lease.

        `done` may come from a lane that lost its lease during the send (another owner may have sent the
        item meanwhile), so it is written only where it cannot undo someone else's work:
        - never over an item that is `sent` (WeChat has it; nothing the lane learnt later changes that);
        - a finished `done` (sent, failed) otherwise always: it is what happened, whoever holds the lease;
        - a `pending` one (a transient failure, to be tried again) only over an item still pending, and not
          while another owner holds the lease — a finished item never goes back to pending here (only
          outbox_retry of a failed one does that).

        A pending item the store cannot read (a reply kind from a newer kefu, a damaged row) is marked failed
        in the same step, its error saying it could not be read and why, and the step goes on to the next
        one: an unreadable item must not block every later reply to its user."""
        ...

    async def outbox_users(self, limit: int = 1000) -> list[str]:
        """Users with pending items, oldest first."""
        ...

    async def outbox_items(self, status: Status | None = None, user: str | None = None,
                           limit: int = 100) -> list[OutboxItem]:
        """Items, newest first."""
        ...

    async def outbox_counts(self) -> dict[str, int]:
        """How many items are in each status (every status present, 0 if none)."""
        ...

    async def outbox_oldest_pending(self) -> float | None:
        """created_at of the oldest pending item."""
        ...

    async def outbox_get(self, id: int) -> OutboxItem | None:
        """One item by id, whatever its status; None if there is no such item (never was, purged, dropped)."""
        ...

    async def outbox_retry(self, id: int, now: float) -> OutboxItem | None:
        """Atomically put a *failed* item back in its user's lane: status pending, attempts 0, no error, next_try
        `now`; it rejoins the user's pending items in id order. Returns the item as it is now, or None when it
        is not failed (any more: sent, pending, dropped or unknown) — so two operators retrying at once send
        it once. The caller wakes the user's lane (Outbox.kick)."""
        ...

    async def outbox_drop(self, id: int) -> bool:
        """Atomically delete a *failed* item, so that it no longer shows as failed; the conversation log keeps
        its `failed` line. True if it was failed and is gone; False (nothing changed) otherwise."""
        ...

    async def outbox_purge(self, before: float) -> int:
        """Delete finished (sent, failed, unsent) items created before `before`; return how many."""
        ...

    # -- the conversation log ------------------------------------------------------------------------
    async def log_add(self, entries: list[LogEntry]) -> None: ...

    async def log_query(self, user: str | None = None, since: float | None = None, rule: str | None = None,
                        limit: int = 200) -> list[LogEntry]:
        """Matching entries, oldest first, the newest `limit` of them."""
        ...

    async def log_page(self, since: float, until: float, after: Any = None, limit: int = 5000,
                       kinds: tuple[LogKind, ...] | None = None) -> tuple[list[LogEntry], Any]:
        """One page (at most `limit`) of the entries with `since` <= ts < `until` (and of `kinds`, if given),
        and the cursor to pass back as `after` for the next page (None for the first); the cursor is None after
        the last page, and a page may be empty before it. For reading a long period (the insights) in bounded
        steps, each short enough not to hold up the pushes."""
        ...

    async def log_purge(self, before: float) -> int:
        """Delete entries older than `before`; return how many."""
        ...

    # -- rule hits (written behind by ConversationLog, once per flushed batch) ------------------------
    async def hits_add(self, counts: dict[str, tuple[int, float]], day: str) -> None:
        """Count hits: rule name → (how many, the epoch of the latest), all on the local calendar `day`
        ("YYYY-MM-DD"). Totals add up across calls and instances; `last` only moves forward."""
        ...

    async def hits(self, day: str) -> dict[str, RuleHits]:
        """Every rule that ever fired → its hits, `today` being those of `day`. Rules that never fired are
        absent."""
        ...
