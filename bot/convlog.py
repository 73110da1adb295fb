"""The conversation log, written behind: entries are buffered and flushed to the store in batches (every
FLUSH_EVERY seconds, or at FLUSH_AT entries), so logging never adds a store round trip to a push or a send.
A crash loses at most the last FLUSH_EVERY seconds of log lines — never a reply."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .errors import StoreError
from .store import LogEntry, Store

log = logging.getLogger(__name__)

FLUSH_EVERY = 0.5
FLUSH_AT = 500
MAX_BUFFER = 50_000  # while the store is down, keep at most this many entries, dropping the oldest


class ConversationLog:
    def __init__(self, store: Store):
        self.store = store
        self._buffer: list[LogEntry] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, *entries: LogEntry) -> None:
        self._buffer.extend(entries)
        if len(self._buffer) > MAX_BUFFER:
            del self._buffer[: len(self._buffer) - MAX_BUFFER]
        if len(self._buffer) >= FLUSH_AT:
            self._wake.set()

    async def flush(self) -> None:
        """Write everything buffered now (tests, shutdown)."""
        while self._buffer:
            batch, self._buffer = self._buffer[:FLUSH_AT], self._buffer[FLUSH_AT:]
            try:
                await self.store.log_add(batch)
            except StoreError as exc:
                self._buffer[:0] = batch  # keep them for the next flush
                log.debug("conversation log not written yet: %s", exc)
                return

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="kefu-conversation-log")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_EVERY)
            self._wake.clear()
            await self.flush()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
