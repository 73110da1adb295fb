"""The in-memory store: for tests and for trying kefu out. Nothing survives a restart."""

from __future__ import annotations

import itertools
from collections import OrderedDict

from ..messages import Reply
from .base import OutboxItem, Status

KEEP_FINISHED = 1000


class MemoryStore:
    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._items: OrderedDict[int, OutboxItem] = OrderedDict()
        self._finished = 0

    def __repr__(self) -> str:
        return f"MemoryStore(outbox={len(self._items)})"

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        return True

    async def outbox_add(self, user: str, replies: tuple[Reply, ...], push: str, now: float,
                         send_as: str | None = None) -> list[OutboxItem]:
        items = [OutboxItem(id=next(self._ids), user=user, reply=r, push=push, created_at=now,
                            send_as=send_as) for r in replies]
        for item in items:
            self._items[item.id] = item
        return items

    async def outbox_update(self, item: OutboxItem) -> None:
        if item.id not in self._items:
            return
        self._items[item.id] = item
        if item.status != "pending":
            self._finished += 1
            if self._finished > KEEP_FINISHED:
                self._forget_finished()

    def _forget_finished(self) -> None:
        for key in [k for k, v in self._items.items() if v.status != "pending"][:-KEEP_FINISHED // 2]:
            del self._items[key]
        self._finished = sum(1 for v in self._items.values() if v.status != "pending")

    async def outbox_items(self, status: Status | None = None, limit: int = 100) -> list[OutboxItem]:
        items = [i for i in reversed(self._items.values()) if status is None or i.status == status]
        return items[:limit]
