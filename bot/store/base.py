"""The store interface every backend implements."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Protocol

from ..messages import Reply

Status = Literal["pending", "sent", "failed", "unsent"]


@dataclass(frozen=True, slots=True)
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

    def finished(self, status: Status, attempts: int = 0, errcode: int | None = None,
                 error: str | None = None) -> OutboxItem:
        return replace(self, status=status, attempts=self.attempts + attempts, errcode=errcode, error=error)


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> bool: ...

    async def outbox_add(self, user: str, replies: tuple[Reply, ...], push: str, now: float,
                         send_as: str | None = None) -> list[OutboxItem]: ...

    async def outbox_update(self, item: OutboxItem) -> None: ...

    async def outbox_items(self, status: Status | None = None, limit: int = 100) -> list[OutboxItem]: ...
