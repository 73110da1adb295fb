"""The in-memory store: for tests and for trying kefu out. One process; nothing survives a restart."""

from __future__ import annotations

import bisect
import heapq
import itertools
import time
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from ..messages import Reply
from .base import STATUSES, LogEntry, LogKind, OutboxItem, RuleHits, Status

KEEP_FINISHED = 10_000
KEEP_LOG = 20_000  # the memory store is for trying kefu out: a long log here only slows full collections
KEEP_HIT_DAYS = 8  # days of per-day hit counts kept (only "today" is asked for)


class MemoryStore:
    kind = "memory"
    shared = False

    def __init__(self, clock=time.time) -> None:
        self._clock = clock
        self._ids = itertools.count(1)
        self._items: OrderedDict[int, OutboxItem] = OrderedDict()
        self._pending: dict[str, list[int]] = {}  # user -> ids of pending items, oldest first
        self._kv: dict[str, tuple[str, float | None]] = {}
        self._answers: dict[str, tuple[bytes, float]] = {}
        # (expiry, kind, key) for every key given a ttl: the expired ones are forgotten a few at a time as
        # new keys arrive, so neither memory nor any single call grows with the number of keys
        self._expiry: list[tuple[float, int, str]] = []
        self._log: list[LogEntry] = []
        self._finished = 0
        self._hits: dict[str, tuple[int, float]] = {}  # rule -> (total, last)
        self._hits_by_day: dict[str, dict[str, int]] = {}  # day -> rule -> count

    def __repr__(self) -> str:
        return f"MemoryStore(outbox={len(self._items)})"

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        return True

    # -- dedupe ----------------------------------------------------------------------------------------

    async def claim(self, key: str, ttl: float) -> bool:
        return await self.set_if_absent(f"claim:{key}", "1", ttl)

    async def put_answer(self, key: str, answer: bytes, ttl: float) -> None:
        expires = self._clock() + ttl
        self._answers[key] = (answer, expires)
        self._expire_later(expires, 1, key)

    async def get_answer(self, key: str) -> bytes | None:
        entry = self._answers.get(key)
        if entry is None or entry[1] <= self._clock():
            self._answers.pop(key, None)
            return None
        return entry[0]

    # -- key-value ---------------------------------------------------------------------------------

    def _live(self, key: str) -> str | None:
        entry = self._kv.get(key)
        if entry is None:
            return None
        if entry[1] is not None and entry[1] <= self._clock():
            del self._kv[key]
            return None
        return entry[0]

    async def get(self, key: str) -> str | None:
        return self._live(key)

    async def get_many(self, keys: list[str]) -> list[str | None]:
        return [self._live(key) for key in keys]

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        expires = self._clock() + ttl if ttl is not None else None
        self._kv[key] = (value, expires)
        if expires is not None:
            self._expire_later(expires, 0, key)

    async def delete(self, key: str) -> None:
        self._kv.pop(key, None)

    async def set_if_absent(self, key: str, value: str, ttl: float) -> bool:
        if self._live(key) is not None:
            return False
        await self.set(key, value, ttl)
        return True

    async def touch_if(self, key: str, value: str, ttl: float) -> bool:
        if self._live(key) != value:
            return False
        await self.set(key, value, ttl)
        return True

    async def delete_if(self, key: str, value: str) -> bool:
        if self._live(key) != value:
            return False
        del self._kv[key]
        return True

    def _expire_later(self, expires: float, kind: int, key: str) -> None:
        """Note when `key` (0: key-value, 1: answer) expires, and forget up to two keys that have: each
        call does a bounded amount of work, and the heap holds at most one entry per write."""
        heap = self._expiry
        heapq.heappush(heap, (expires, kind, key))
        now = self._clock()
        for _ in range(2):
            if not heap or heap[0][0] > now:
                return
            when, kind, key = heapq.heappop(heap)
            table = self._kv if kind == 0 else self._answers
            entry = table.get(key)
            if entry is not None and entry[1] is not None and entry[1] <= now:  # not re-set since
                del table[key]

    # -- outbox ------------------------------------------------------------------------------------

    async def outbox_add(self, user: str, replies: tuple[Reply, ...], push: str, now: float,
                         send_as: str | None = None) -> list[OutboxItem]:
        items = [OutboxItem(id=next(self._ids), user=user, reply=r, push=push, created_at=now,
                            send_as=send_as) for r in replies]
        for item in items:
            self._items[item.id] = item
            self._pending.setdefault(user, []).append(item.id)
        return items

    async def outbox_update(self, item: OutboxItem) -> None:
        if item.id not in self._items:
            return
        old = self._items[item.id]
        self._items[item.id] = item
        if item.status == "pending" and old.status != "pending":  # a retry rejoins the lane in id order
            bisect.insort(self._pending.setdefault(item.user, []), item.id)
        elif item.status != "pending":
            ids = self._pending.get(item.user, [])
            if item.id in ids:
                ids.remove(item.id)
                if not ids:
                    del self._pending[item.user]
            self._finished += 1
            if self._finished > KEEP_FINISHED:
                self._forget_finished()

    def _forget_finished(self) -> None:
        finished = [k for k, v in self._items.items() if v.status != "pending"]
        for key in finished[:-KEEP_FINISHED // 2]:
            del self._items[key]
        self._finished = min(len(finished), KEEP_FINISHED // 2)

    async def outbox_next(self, user: str) -> OutboxItem | None:
        ids = self._pending.get(user)
        return self._items[ids[0]] if ids else None

    async def lane_next(self, user: str, owner: str, lease: float,
                        done: OutboxItem | None = None) -> tuple[bool, OutboxItem | None]:
        key = f"lane:{user}"
        holder = self._live(key)
        if done is not None:  # what a lane that lost its lease may still write: see Store.lane_next
            old = self._items.get(done.id)
            if old is not None and old.status != "sent" and (done.status != "pending" or (
                    old.status == "pending" and (holder is None or holder == owner))):
                await self.outbox_update(done)
        if holder is not None and holder != owner:
            return False, None
        ids = self._pending.get(user)
        if not ids:
            self._kv.pop(key, None)
            return True, None
        expires = self._clock() + lease
        self._kv[key] = (owner, expires)
        if holder is None:  # a new lease: note when it expires (a renewal's old note finds it renewed)
            self._expire_later(expires, 0, key)
        return True, self._items[ids[0]]

    async def outbox_users(self, limit: int = 1000) -> list[str]:
        return sorted(self._pending, key=lambda user: self._pending[user][0])[:limit]

    async def outbox_items(self, status: Status | None = None, user: str | None = None,
                           limit: int = 100) -> list[OutboxItem]:
        out = []
        for item in reversed(self._items.values()):
            if (status is None or item.status == status) and (user is None or item.user == user):
                out.append(item)
                if len(out) >= limit:
                    break
        return out

    async def outbox_counts(self) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        for item in self._items.values():
            counts[item.status] += 1
        return counts

    async def outbox_oldest_pending(self) -> float | None:
        oldest = min((ids[0] for ids in self._pending.values()), default=None)
        return self._items[oldest].created_at if oldest is not None else None

    async def outbox_get(self, id: int) -> OutboxItem | None:
        return self._items.get(id)

    async def outbox_retry(self, id: int, now: float) -> OutboxItem | None:
        item = self._items.get(id)
        if item is None or item.status != "failed":
            return None
        again = replace(item, status="pending", attempts=0, errcode=None, error=None, next_try=now)
        await self.outbox_update(again)
        return again

    async def outbox_drop(self, id: int) -> bool:
        item = self._items.get(id)
        if item is None or item.status != "failed":
            return False
        del self._items[id]
        return True

    async def outbox_purge(self, before: float) -> int:
        old = [k for k, v in self._items.items() if v.status != "pending" and v.created_at < before]
        for key in old:
            del self._items[key]
        return len(old)

    # -- log ---------------------------------------------------------------------------------------

    async def log_add(self, entries: list[LogEntry]) -> None:
        self._log.extend(entries)
        if len(self._log) > KEEP_LOG:
            del self._log[: len(self._log) - KEEP_LOG]

    async def log_query(self, user: str | None = None, since: float | None = None, rule: str | None = None,
                        limit: int = 200) -> list[LogEntry]:
        found = [e for e in self._log if (user is None or e.user == user)
                 and (since is None or e.ts >= since) and (rule is None or e.rule == rule)]
        return found[-limit:]

    async def log_page(self, since: float, until: float, after: Any = None, limit: int = 5000,
                       kinds: tuple[LogKind, ...] | None = None) -> tuple[list[LogEntry], Any]:
        window = self._log[after or 0:(after or 0) + limit]  # the cursor: a position in the log
        found = [e for e in window if since <= e.ts < until and (kinds is None or e.kind in kinds)]
        return found, (after or 0) + limit if len(window) == limit else None

    async def log_purge(self, before: float) -> int:
        kept = [e for e in self._log if e.ts >= before]
        removed = len(self._log) - len(kept)
        self._log = kept
        return removed

    # -- rule hits ---------------------------------------------------------------------------------

    async def hits_add(self, counts: dict[str, tuple[int, float]], day: str) -> None:
        today = self._hits_by_day.setdefault(day, {})
        for rule, (n, last) in counts.items():
            total, before = self._hits.get(rule, (0, last))
            self._hits[rule] = (total + n, max(before, last))
            today[rule] = today.get(rule, 0) + n
        if len(self._hits_by_day) > KEEP_HIT_DAYS:
            del self._hits_by_day[min(self._hits_by_day)]

    async def hits(self, day: str) -> dict[str, RuleHits]:
        today = self._hits_by_day.get(day, {})
        return {rule: RuleHits(total, today.get(rule, 0), last) for rule, (total, last) in self._hits.items()}
