"""The outbox: replies are written to the store before the push is answered, then sent by workers the app
owns. The store is the only truth, so a restart (or another instance) carries on where a crash left off.

- One lane per user: a user's replies go out one at a time, in order — the second never overtakes the
  first, also while the first waits to be retried. Across instances sharing a store, a lane is held through
  a lease in the store (`lane:<user>`), so one instance at a time sends to a user. Each step of the lane
  (Store.lane_next) renews it; a step that takes long — waiting for a send slot, a slow send with the API
  client's retries, recording the result — has it renewed every `lease / 3` by one timer of the outbox (no
  task nor store call for a step that is quick). A lane that finds its lease lost does not start a send;
  a send already under way is recorded all the same, and the store writes only what cannot undo the new
  holder's work (see Store.lane_next).
- Lanes run concurrently, at most `concurrency` sends in flight.
- A send that failed transiently (as errcodes.classify judges it, after the API client's own quick retries)
  stays pending and is tried again later with exponential backoff and jitter, up to `max_attempts`; then it
  is marked failed with the reason. Any other failure (45015 outside the 48-hour window, 45047, an HTTP 4xx,
  the proxy refusing our credentials, …) marks it failed at once.
- A scan every few seconds (and at start) finds pending replies no live lane is sending: those of an
  instance that crashed, once its lease has expired.
- Exactly once, except: a crash after WeChat accepted a message and before the store marked it sent, or a
  store outage at that moment lasting until `lease / 2` after the lease was last renewed (the lane keeps
  retrying the mark until then, also while the outbox closes), or one that keeps the lease from being
  renewed for `lease` seconds during a send. That reply is sent again by whichever instance recovers the
  lane, at most `lease` seconds later.
- Without credentials nothing is sent: each reply is logged and kept as "unsent" ("not sent: no credentials").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from .config import OutboxSettings
from .convlog import ConversationLog
from .errcodes import Verdict
from .errors import StoreError
from .logs import printable, request_id
from .messages import Reply
from .metrics import Metrics
from .store import LogEntry, OutboxItem, Store
from .wechat_api import SendResult

log = logging.getLogger(__name__)

Sender = Callable[[str, Reply, str | None], Awaitable[SendResult]]  # (user, reply, send_as)
NO_CREDENTIALS = "not sent: no credentials"
SCAN_EVERY = 5.0
LANES_PER_SEND = 4  # lanes at once per send in flight (outbox.concurrency): the others wait their turn…
MIN_LANES = 64  # …but never fewer than this many (lanes backing off hold theirs without sending)
MAX_BACKOFF = 300.0


def short_user(openid: str) -> str:
    """An openid shortened for logs: enough to tell users apart, not enough to be the id. It comes from the
    push: a line break in it must not start a log line of its own."""
    if not openid.isprintable():
        openid = printable(openid)
    return openid if len(openid) <= 10 else f"{openid[:4]}…{openid[-4:]}"


def preview(reply: Reply) -> str:
    content = getattr(reply, "content", None)
    return f"text {content!r}" if content is not None else repr(reply)


@dataclass
class Stats:
    sent: int = 0
    failed: int = 0
    retried: int = 0
    renewed: int = 0  # leases renewed during a long step (not counting lane_next's own)


class Outbox:
    def __init__(self, store: Store, sender: Sender | None, settings: OutboxSettings | None = None,
                 clock: Callable[[], float] = time.time, base_delay: float = 2.0,
                 conversation: ConversationLog | None = None, metrics: Metrics | None = None):
        self.store = store
        self.metrics = metrics
        self.conversation = conversation
        self.sender = sender
        self.settings = settings = settings or OutboxSettings()
        self.clock = clock
        self.base_delay = base_delay
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.stats = Stats()
        self._limit = asyncio.Semaphore(settings.concurrency)
        self._lanes: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()  # users whose lane must look once more before it ends
        # Users whose lane is in a step (sending, or waiting to) → loop time its lease was last confirmed
        # (asked for, by lane_next or a renewal): the renewal timer renews those older than lease / 3.
        self._steps: dict[str, float] = {}
        self._lost: set[str] = set()  # users whose lease a renewal found taken: start no send
        self._renewer: asyncio.TimerHandle | None = None
        self._renewing: dict[str, asyncio.Task[None]] = {}
        # Users waiting for a lane, oldest first: at most max_lanes lanes run at once, so that a slow WeChat
        # API (every lane waiting for a send) holds a bounded number of tasks, not one per user with a reply.
        self._queued: dict[str, None] = {}
        self.max_lanes = max(LANES_PER_SEND * settings.concurrency, MIN_LANES)
        self._scanner: asyncio.Task[None] | None = None
        self._closed = False

    # ---- intake --------------------------------------------------------------------------------

    async def submit(self, user: str, replies: tuple[Reply, ...], push: str,
                     send_as: str | None = None) -> list[OutboxItem]:
        """Store the replies (before the push is answered), then have them sent. Raises StoreError."""
        if not replies:
            return []
        items = await self.store.outbox_add(user, replies, push, self.clock(), send_as)
        if self.sender is None:
            for item in items:
                if log.isEnabledFor(logging.DEBUG):  # the push's line says replies=N; `kefu log` shows them
                    log.debug("%s: rid=%s to %s: %s", NO_CREDENTIALS, request_id(push), short_user(user),
                              preview(item.reply))
                await self.store.outbox_update(item.finished("unsent", error=NO_CREDENTIALS))
                if self.metrics is not None:
                    self.metrics.sends["unsent", ""] += 1
            await self._log([LogEntry(self.clock(), user, "unsent", item.reply.kind, _text(item.reply),
                                      detail=NO_CREDENTIALS) for item in items])
            return items
        self.kick(user)
        return items

    def kick(self, user: str) -> None:
        """Make sure a lane is working on `user`'s pending replies."""
        if self._closed:
            return
        if user in self._lanes:
            self._again.add(user)  # the lane may be about to end: it must look at the store once more
            return
        if user in self._queued:
            return  # its lane reads the store when it starts
        if len(self._lanes) >= self.max_lanes:
            self._queued[user] = None
            return
        self._lanes[user] = asyncio.create_task(self._lane(user), name="outbox lane")  # one per user

    def _start_queued(self) -> None:
        while self._queued and len(self._lanes) < self.max_lanes and not self._closed:
            user = next(iter(self._queued))
            del self._queued[user]
            self.kick(user)

    # ---- lanes ---------------------------------------------------------------------------------

    async def _lane(self, user: str) -> None:
        try:
            while not self._closed:
                self._again.discard(user)
                await self._drain_lane(user)
                if user not in self._again:
                    return
        except asyncio.CancelledError:
            raise
        except StoreError as exc:
            log.warning("outbox: store unavailable while sending to %s (%s); the scan will retry",
                        short_user(user), exc)
        except Exception:
            log.exception("outbox: the lane of %s failed; the scan will retry", short_user(user))
        finally:
            # leave _lanes now, not in a done-callback a loop turn later: a reply submitted in between would
            # find a lane that no longer runs and wait for the next scan
            if self._lanes.get(user) is asyncio.current_task():
                del self._lanes[user]
                self._steps.pop(user, None)
                self._lost.discard(user)
                self._again.discard(user)  # a lane that ended by an error: the scan takes over
                self._start_queued()

    async def _drain_lane(self, user: str) -> None:
        """Send the user's pending replies in order, one store round trip per step (see Store.lane_next)."""
        lease = self.settings.lease
        loop_time = asyncio.get_running_loop().time
        asked = loop_time()
        ok, item = await self.store.lane_next(user, self.owner, lease)
        if not ok:
            return  # another instance sends to this user; the scan looks again later
        while item is not None:
            wait = item.next_try - self.clock()
            if wait > 0 or self._closed:  # backing off: hold the lane (order!), keep the lease alive
                self._steps.pop(user, None)  # lane_next renews it, at least every lease / 3
                if self._closed:
                    return  # the lease expires by itself; the next start (or another instance) resumes
                await asyncio.sleep(min(wait, lease / 3))
                if self._closed:
                    return  # as above: renewing the lease now would only keep the next start waiting
                asked = loop_time()
                ok, item = await self.store.lane_next(user, self.owner, lease)
            else:
                self._steps[user] = asked
                if self._renewer is None:
                    self._renew_later()
                done = await self._deliver(item)
                if done is None:
                    log.warning("outbox: lost the lane of %s while waiting to send; stopping", short_user(user))
                    return
                ok, item, asked = await self._record(user, done)
                if self._lost and ok:
                    self._lost.discard(user)  # the lease was free again: this step took it
            if not ok:
                log.warning("outbox: lost the lane of %s (its lease expired); stopping", short_user(user))
                return
        # the lease is released (nothing pending): a renewal answered from now on must not find this step's
        # entry, or a drain that follows at once (a reply just submitted) would be taken for a lost lane
        self._steps.pop(user, None)

    async def _record(self, user: str, done: OutboxItem) -> tuple[bool, OutboxItem | None, float]:
        """Write back what a send did, and step the lane; also returns when that step was asked for. WeChat has
        already accepted (or refused) the message: if the store hiccups, keep trying while the lane is surely
        held — until `lease / 2` after the lease was last renewed, also while closing (close() cancels lanes
        after its own timeout) — giving up would send the reply again."""
        delay = 0.1
        loop_time = asyncio.get_running_loop().time
        while True:
            asked = loop_time()
            try:
                return (*await self.store.lane_next(user, self.owner, self.settings.lease, done), asked)
            except StoreError as exc:
                if loop_time() + delay > self._steps.get(user, asked) + self.settings.lease / 2:
                    raise
                log.warning("outbox: recording the %s to %s failed (%s); trying again", done.reply.kind,
                            short_user(user), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _observe(self, item: OutboxItem, result: str, errcode: int | None, elapsed_ms: float, attempts: int,
                 level: int, message: str, *args: object) -> None:
        """The metrics and the log line of one send: one line per send, with its errcode. `message` starts
        with the reply kind, the user and the request id (`%s … %s … rid=%s`); `args` fill the rest."""
        if self.metrics is not None:
            self.metrics.send(result, errcode, elapsed_ms / 1000)
        if log.isEnabledFor(level):
            rid, user = request_id(item.push), short_user(item.user)
            log.log(level, message, item.reply.kind, user, rid, *args, extra={"fields": {
                "rid": rid, "user": user, "kind": item.reply.kind, "result": result, "errcode": errcode,
                "attempts": attempts, "latency_ms": round(elapsed_ms, 1)}})

    async def _deliver(self, item: OutboxItem) -> OutboxItem | None:
        """Send one reply; return it as it must be written back (sent, failed, or pending for later). None: not
        sent, the lane's lease was found lost while waiting for a send slot."""
        assert self.sender is not None
        async with self._limit:
            if item.user in self._lost:  # found lost while waiting for the slot: another instance may send it
                return None
            started = time.perf_counter()
            try:
                result = await self.sender(item.user, item.reply, item.send_as)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in a sender must not kill the lane
                log.exception("send to %s crashed", short_user(item.user))
                result = SendResult(ok=False, errcode=None, errmsg=type(exc).__name__)
        elapsed = (time.perf_counter() - started) * 1000
        tries = max(result.attempts, 1)
        attempts = item.attempts + tries
        if result.ok:
            self.stats.sent += 1
            self._observe(item, "sent", 0, elapsed, attempts, logging.INFO,
                          "sent %s to %s rid=%s errcode=0 (%.0f ms, %d attempt(s))", elapsed, attempts)
            if item.reply.kind != "typing":
                await self._log([LogEntry(self.clock(), item.user, "sent", item.reply.kind, _text(item.reply))])
            return item.finished("sent", tries, 0, None)
        if result.kind is Verdict.TRANSIENT and attempts < self.settings.max_attempts and item.reply.kind != "typing":
            self.stats.retried += 1
            delay = min(MAX_BACKOFF, self.base_delay * 2 ** min(attempts, 16)) * (0.5 + random.random() / 2)
            self._observe(item, "retry", result.errcode, elapsed, attempts, logging.WARNING,
                          "send %s to %s rid=%s failed (%s); trying again in %.0f s", result.reason, delay)
            return replace(item, attempts=attempts, errcode=result.errcode, error=result.reason,
                           next_try=self.clock() + delay)
        self.stats.failed += 1
        self._observe(item, "failed", result.errcode, elapsed, attempts, logging.WARNING,
                      "send %s to %s rid=%s failed: %s", result.reason)
        await self._log([LogEntry(self.clock(), item.user, "failed", item.reply.kind, _text(item.reply),
                                  errcode=result.errcode, detail=result.reason)])
        return item.finished("failed", tries, result.errcode, result.reason)

    # ---- lease renewal during long steps -----------------------------------------------------------

    def _renew_later(self) -> None:
        self._renewer = asyncio.get_running_loop().call_later(self.settings.lease / 6, self._renew_due)

    def _renew_due(self) -> None:
        """The renewal timer: renew the leases of the lanes whose step has run for lease / 3 since the lease
        was last confirmed (so each is renewed between lease / 3 and lease / 2 after). It runs while some
        lane is in a step, and stops when none is (the next step starts it again)."""
        self._renewer = None
        if not self._steps:
            return
        loop = asyncio.get_running_loop()
        due = loop.time() - self.settings.lease / 3
        for user, asked in self._steps.items():
            if asked <= due and user not in self._renewing and user not in self._lost:
                self._renewing[user] = loop.create_task(self._renew(user), name="outbox lease")
        self._renew_later()

    async def _renew(self, user: str) -> None:
        asked = asyncio.get_running_loop().time()
        try:
            held = await self.store.touch_if(f"lane:{user}", self.owner, self.settings.lease)
        except StoreError as exc:  # tried again at the next tick; _record's deadline counts from the last renewal
            log.warning("outbox: could not renew the lane of %s (%s)", short_user(user), exc)
            return
        finally:
            self._renewing.pop(user, None)
        last = self._steps.get(user)
        if last is None or last > asked:
            return  # the step ended, or lane_next confirmed the lease since
        if held:
            self._steps[user] = asked
            self.stats.renewed += 1
        else:
            self._lost.add(user)
            log.warning("outbox: lost the lane of %s during a send (its lease expired)", short_user(user))

    async def _log(self, entries: list[LogEntry]) -> None:
        if self.conversation is not None:
            self.conversation.add(*entries)
            return
        try:
            await self.store.log_add(entries)
        except StoreError as exc:
            log.debug("conversation log not written: %s", exc)

    # ---- recovery ------------------------------------------------------------------------------

    async def scan(self) -> int:
        """Start lanes for every user with pending replies that no lane here is sending. Returns how many."""
        users = await self.store.outbox_users()
        started = 0
        for user in users:
            if user not in self._lanes and user not in self._queued:
                self.kick(user)
                started += 1
        return started

    async def start(self) -> None:
        """Recover what a previous run left pending, then keep looking every few seconds."""
        if self.sender is not None:
            self._scanner = asyncio.create_task(self._scan_forever(), name="outbox:scan")

    async def _scan_forever(self) -> None:
        while not self._closed:
            try:
                found = await self.scan()
                if found:
                    log.info("outbox: resuming pending replies of %d user(s)", found)
            except StoreError:
                pass  # the push path logs store outages
            await asyncio.sleep(SCAN_EVERY)

    # ---- state and shutdown --------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait until no lane is working (everything pending has been sent, failed or is backing off
        in a lane — tests and benchmarks use this)."""
        while self._lanes or self._queued:
            if not self._lanes:  # pragma: no cover - a lane that ends starts the queued ones
                self._start_queued()
            await asyncio.wait(set(self._lanes.values()))

    async def close(self, timeout: float = 5.0) -> None:
        """Stop taking work; give in-flight sends `timeout` seconds, then cancel them. Unsent replies stay
        pending in the store for the next start."""
        self._closed = True
        self._queued.clear()  # their replies stay pending in the store
        if self._scanner is not None:
            self._scanner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scanner
        lanes = set(self._lanes.values())
        if lanes:
            _, still = await asyncio.wait(lanes, timeout=timeout)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still)
                log.warning("outbox closed with %d lane(s) unfinished; their replies stay pending", len(still))
        if self._renewer is not None:
            self._renewer.cancel()
            self._renewer = None
        renewing = set(self._renewing.values())
        for task in renewing:
            task.cancel()
        if renewing:
            await asyncio.wait(renewing)


def _text(reply: Reply) -> str:
    content = getattr(reply, "content", None)
    return content if content is not None else getattr(reply, "title", "") or ""
