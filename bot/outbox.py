"""The outbox: replies are written to the store first, then sent by workers the app owns.

A user's replies go out in order (one lane per user, one send at a time in it); lanes run concurrently up
to `concurrency` sends at once. Without credentials nothing is sent: each reply is logged and kept as
"unsent" with the reason "not sent: no credentials".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from .messages import Reply
from .store import OutboxItem, Store
from .wechat_api import SendResult

log = logging.getLogger(__name__)

Sender = Callable[[str, Reply, str | None], Awaitable[SendResult]]  # (user, reply, send_as)
NO_CREDENTIALS = "not sent: no credentials"


def short_user(openid: str) -> str:
    """An openid shortened for logs: enough to tell users apart, not enough to be the id."""
    return openid if len(openid) <= 10 else f"{openid[:4]}…{openid[-4:]}"


class Outbox:
    def __init__(self, store: Store, sender: Sender | None, concurrency: int = 32,
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.sender = sender
        self.clock = clock
        self._limit = asyncio.Semaphore(concurrency)
        self._lanes: dict[str, deque[OutboxItem]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def submit(self, user: str, replies: tuple[Reply, ...], push: str,
                     send_as: str | None = None) -> list[OutboxItem]:
        """Store the replies (before the push is answered), then schedule them for sending."""
        if not replies:
            return []
        items = await self.store.outbox_add(user, replies, push, self.clock(), send_as)
        lane = self._lanes.get(user)
        if lane is not None:
            lane.extend(items)  # the lane's worker is running and will reach them in order
            return items
        self._lanes[user] = deque(items)
        if not self._closed:
            task = asyncio.create_task(self._run_lane(user), name=f"outbox:{short_user(user)}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return items

    async def _run_lane(self, user: str) -> None:
        lane = self._lanes[user]
        try:
            while lane:
                item = lane[0]
                try:
                    await self._deliver(item)
                except asyncio.CancelledError:
                    raise
                except Exception:  # the store failed to record it: log, and keep the lane moving
                    log.exception("outbox: recording the %s to %s failed", item.reply.kind, short_user(user))
                lane.popleft()
        finally:
            self._lanes.pop(user, None)

    async def _deliver(self, item: OutboxItem) -> None:
        if self.sender is None:
            log.info("%s: to %s: %s", NO_CREDENTIALS, short_user(item.user), _preview(item.reply))
            await self.store.outbox_update(item.finished("unsent", error=NO_CREDENTIALS))
            return
        async with self._limit:
            started = time.perf_counter()
            try:
                result = await self.sender(item.user, item.reply, item.send_as)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in a sender must not kill the lane
                log.exception("send to %s crashed", short_user(item.user))
                result = SendResult(ok=False, errcode=None, errmsg=type(exc).__name__)
            elapsed = (time.perf_counter() - started) * 1000
        if result.ok:
            log.info("sent %s to %s (%.0f ms, %d attempt(s))", item.reply.kind, short_user(item.user),
                     elapsed, result.attempts)
            await self.store.outbox_update(item.finished("sent", result.attempts, 0))
        else:
            log.warning("send %s to %s failed: %s", item.reply.kind, short_user(item.user), result.reason)
            await self.store.outbox_update(item.finished("failed", result.attempts, result.errcode,
                                                         result.reason))

    @property
    def pending(self) -> int:
        return sum(len(lane) for lane in self._lanes.values())

    async def drain(self) -> None:
        """Wait until every scheduled reply has been delivered (or given up)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def close(self, timeout: float = 5.0) -> None:
        """Stop taking work; give in-flight sends `timeout` seconds, then cancel them."""
        self._closed = True
        if self._tasks:
            _, still = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still)
                log.warning("outbox closed with %d lane(s) unfinished", len(still))


def _preview(reply: Reply) -> str:
    if hasattr(reply, "content"):
        return f"text {reply.content!r}"
    return repr(reply)
