"""The conversation log, written behind: entries are buffered and flushed to the store in batches (every
FLUSH_EVERY seconds, or at FLUSH_AT entries), so logging never adds a store round trip to a push or a send.
A crash loses at most the last FLUSH_EVERY seconds of log lines — never a reply.

Rule hit counts ride along: each flushed batch's `push` entries with a rule are counted (per rule, per local
day in `timezone`) and added with one `hits_add` per batch and day."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from zoneinfo import ZoneInfo

from .config import TIMEZONE
from .errors import StoreError
from .store import LogEntry, Store

log = logging.getLogger(__name__)

FLUSH_EVERY = 0.5
FLUSH_AT = 500
MAX_BUFFER = 50_000  # while the store is down, keep at most this many entries, dropping the oldest

Hits = dict[str, dict[str, tuple[int, float]]]  # day -> rule -> (count, last)


def count_hits(entries: list[LogEntry], timezone: ZoneInfo, into: Hits | None = None) -> Hits:
    """The rules that fired in `entries` (pushes a rule answered), counted per local day."""
    hits: Hits = into if into is not None else {}
    second, day = None, ""
    for entry in entries:
        if entry.kind == "push" and entry.rule:
            if int(entry.ts) != second:  # a batch's entries mostly share their second: one date conversion
                second = int(entry.ts)
                day = datetime.fromtimestamp(second, timezone).date().isoformat()
            rules = hits.setdefault(day, {})
            count, last = rules.get(entry.rule, (0, entry.ts))
            rules[entry.rule] = (count + 1, max(last, entry.ts))
    return hits


class ConversationLog:
    def __init__(self, store: Store, timezone: ZoneInfo = TIMEZONE):
        self.store = store
        self.timezone = timezone
        self._buffer: list[LogEntry] = []
        self._hits: Hits = {}  # counted from flushed entries, not yet in the store (it failed)
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
                break
            count_hits(batch, self.timezone, self._hits)
            await self._flush_hits()
        await self._flush_hits()  # counts a failed hits_add kept back

    async def _flush_hits(self) -> None:
        while self._hits:
            day = min(self._hits)
            counts = self._hits.pop(day)
            try:
                await self.store.hits_add(counts, day)
            except StoreError as exc:  # keep them, with any counted meanwhile, for the next flush
                kept = self._hits.setdefault(day, {})
                for rule, (n, last) in counts.items():
                    before, latest = kept.get(rule, (0, last))
                    kept[rule] = (before + n, max(latest, last))
                log.debug("rule hits not written yet: %s", exc)
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
