"""The outbox: stored before the answer, sent in order per user, concurrent across users."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from bot.config import OutboxSettings, Secret, WeChatSettings
from bot.errors import StoreError
from bot.messages import TextReply
from bot.outbox import Outbox, short_user
from bot.store import MemoryStore
from bot.wechat_api import SendResult, WeChatAPI

from .conftest import FAST_RETRY
from .fakewechat import APPID, SECRET, Failure
from .stores import Clock

SEND = "/cgi-bin/message/custom/send"


@pytest.fixture
async def api(fake):
    async with aiohttp.ClientSession() as session:
        settings = WeChatSettings(appid=APPID, secret=Secret(SECRET), api_base=fake.base)
        yield WeChatAPI(settings, session, FAST_RETRY)


def texts(n: int, prefix: str) -> tuple[TextReply, ...]:
    return tuple(TextReply(f"{prefix}{i}") for i in range(n))


async def test_a_users_replies_go_out_in_order_while_others_proceed(fake, api):
    store = MemoryStore()
    outbox = Outbox(store, api.send)
    await api.tokens.get()
    hold = asyncio.Event()
    fake.fail(SEND, Failure(hold=hold))  # A's first reply hangs
    await outbox.submit("userA", texts(3, "a"), "push1")
    await fake.wait_for(lambda: len(fake.calls_to(SEND)) == 1)
    await outbox.submit("userB", texts(2, "b"), "push2")
    await fake.wait_sent(2)  # B is not held up by A
    assert [s["text"]["content"] for s in fake.sent] == ["b0", "b1"]
    await outbox.submit("userA", texts(1, "late"), "push3")
    hold.set()
    await outbox.drain()
    a_sent = [s["text"]["content"] for s in fake.sent if s["touser"] == "userA"]
    assert a_sent == ["a0", "a1", "a2", "late0"]


async def test_order_holds_across_retries(fake, api):
    outbox = Outbox(MemoryStore(), api.send)
    fake.fail(SEND, Failure(errcode=-1), Failure(http=500))
    await outbox.submit("u", texts(4, "m"), "p")
    await outbox.drain()
    assert [s["text"]["content"] for s in fake.sent] == ["m0", "m1", "m2", "m3"]


async def test_items_are_stored_before_sending_and_marked_after(fake, api):
    store = MemoryStore()
    outbox = Outbox(store, api.send)
    hold = asyncio.Event()
    fake.fail("/cgi-bin/token", Failure(hold=hold))
    items = await outbox.submit("u", texts(2, "x"), "p")
    stored = await store.outbox_items(status="pending")
    assert {i.id for i in stored} == {i.id for i in items}
    assert (await store.outbox_counts())["pending"] == 2
    hold.set()
    await outbox.drain()
    assert [i.status for i in await store.outbox_items()] == ["sent", "sent"]
    assert (await store.outbox_counts())["pending"] == 0


async def test_a_failing_reply_does_not_block_the_next(fake, api):
    store = MemoryStore()
    outbox = Outbox(store, api.send)
    fake.fail(SEND, Failure(errcode=45015))
    await outbox.submit("u", texts(2, "x"), "p")
    await outbox.drain()
    by_text = {i.reply.content: i for i in await store.outbox_items()}
    assert by_text["x0"].status == "failed" and by_text["x0"].errcode == 45015
    assert by_text["x1"].status == "sent"


async def test_a_crashing_sender_is_retried_then_failed_and_the_lane_continues():
    calls = []

    async def sender(user, reply, send_as=None):
        calls.append(reply.content)
        if reply.content == "x0":
            raise RuntimeError("boom")
        return SendResult(ok=True)

    store = MemoryStore()
    outbox = Outbox(store, sender, OutboxSettings(max_attempts=3), base_delay=0.001)
    await outbox.submit("u", texts(2, "x"), "p")
    await outbox.drain()
    assert calls == ["x0", "x0", "x0", "x1"]  # x1 waited for x0 to be given up
    by_text = {i.reply.content: i for i in await store.outbox_items()}
    assert by_text["x0"].status == "failed" and by_text["x0"].attempts == 3
    assert by_text["x1"].status == "sent"


async def test_transient_failures_back_off_without_reordering(fake, api):
    store = MemoryStore()
    outbox = Outbox(store, api.send, OutboxSettings(max_attempts=10), base_delay=0.001)
    # every API-level try of the first reply fails, twice over: the outbox retries it later
    fake.fail(SEND, *[Failure(errcode=-1)] * (2 * FAST_RETRY.attempts))
    await outbox.submit("u", texts(3, "m"), "p")
    await outbox.drain()
    assert [s["text"]["content"] for s in fake.sent] == ["m0", "m1", "m2"]
    first = min(await store.outbox_items(), key=lambda i: i.id)
    assert first.status == "sent" and first.attempts == 2 * FAST_RETRY.attempts + 1
    assert outbox.stats.retried == 2


async def test_a_reply_is_failed_after_max_attempts(fake, api):
    store = MemoryStore()
    outbox = Outbox(store, api.send, OutboxSettings(max_attempts=4), base_delay=0.001)
    fake.fail(SEND, *[Failure(http=503)] * 20)
    await outbox.submit("u", texts(1, "m"), "p")
    await outbox.drain()
    [item] = await store.outbox_items()
    assert item.status == "failed" and item.attempts >= 4 and "503" in item.error


async def test_concurrency_is_bounded():
    running = 0
    peak = 0
    gate = asyncio.Event()
    full = asyncio.Event()

    async def sender(user, reply, send_as=None):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running >= 3:
            full.set()
        await gate.wait()
        running -= 1
        return SendResult(ok=True)

    outbox = Outbox(MemoryStore(), sender, OutboxSettings(concurrency=3))
    for i in range(10):
        await outbox.submit(f"user{i}", texts(1, "x"), f"p{i}")
    await full.wait()  # three sends are in flight; the other seven lanes wait at the limit
    gate.set()
    await outbox.drain()
    assert peak == 3


async def test_close_leaves_unsent_items_pending():
    gate = asyncio.Event()

    async def sender(user, reply, send_as=None):
        await gate.wait()
        return SendResult(ok=True)

    store = MemoryStore()
    outbox = Outbox(store, sender)
    await outbox.submit("u", texts(3, "x"), "p")
    await outbox.close(timeout=0.01)
    assert [i.status for i in await store.outbox_items()] == ["pending"] * 3


def test_short_user_hides_most_of_an_openid():
    assert short_user("o9AgO5Kd5ggOC-bXrbNODIiE3bGY") == "o9Ag…3bGY"
    assert short_user("short") == "short"


async def test_a_store_hiccup_after_a_send_neither_loses_nor_resends():
    """If the store fails to record that a reply was sent, the lane keeps trying to record it (WeChat already
    has the message): nothing is lost, nothing is sent twice, and later replies still go out in order."""

    class FlakyStore(MemoryStore):
        failures = 1

        async def outbox_update(self, item):
            if self.failures and item.status == "sent":
                self.failures -= 1
                raise StoreError("disk full")
            await super().outbox_update(item)

    sent = []

    async def sender(user, reply, send_as=None):
        sent.append(reply.content)
        return SendResult(ok=True)

    store = FlakyStore()
    outbox = Outbox(store, sender)
    await outbox.submit("u", texts(2, "x"), "p")
    await outbox.drain()
    await outbox.submit("u", texts(1, "later"), "p2")
    await outbox.drain()
    assert sent == ["x0", "x1", "later0"]
    assert (await store.outbox_counts()) == {"pending": 0, "sent": 3, "failed": 0, "unsent": 0}


def test_dedupe_forgets_by_time_even_when_a_delivery_never_finished():
    from bot.dedupe import Dedupe

    async def scenario():
        now = [0.0]
        dedupe = Dedupe(ttl=300, clock=lambda: now[0])
        first, stuck = dedupe.claim("stuck")  # a handler that never answers
        assert first
        for i in range(100):
            now[0] += 10
            _, future = dedupe.claim(f"k{i}")
            future.set_result("ok")
        assert len(dedupe) <= 38  # only the last 300 s of keys, plus one generation (75 s)
        assert dedupe.claim("k70")[0] is False  # 290 s ago: still remembered
        again, _ = dedupe.claim("stuck")
        assert again  # long forgotten: a new delivery

    asyncio.run(scenario())


async def test_a_lane_leaves_the_moment_it_ends():
    """A finished lane removes itself as it ends — not in a callback a loop turn later, when a reply submitted
    in between would find a lane that no longer runs and wait for the next scan (seconds)."""
    sent = []

    async def sender(user, reply, send_as=None):
        sent.append(reply.content)
        return SendResult(ok=True)

    store = MemoryStore()
    outbox = Outbox(store, sender)
    await store.outbox_add("u", texts(1, "a"), "p1", 0.0)
    outbox._lanes["u"] = asyncio.current_task()  # run the lane here, as the registered lane task
    await outbox._lane("u")
    assert "u" not in outbox._lanes  # gone the moment it returned
    assert sent == ["a0"]
    await outbox.submit("u", texts(1, "b"), "p2")  # so this starts a new lane at once
    await outbox.drain()
    assert sent == ["a0", "b0"]


def test_dedupe_keeps_only_the_answer_once_settled():
    from bot.dedupe import Dedupe

    async def scenario():
        dedupe: Dedupe[str] = Dedupe()
        first, future = dedupe.claim("k")
        _, waiting = dedupe.claim("k")  # a retry while the first is deciding waits on the same future
        assert first and waiting is future
        dedupe.settle("k", future, "success")
        assert future.result() == "success"
        assert not any(isinstance(v, asyncio.Future) for _, seen in dedupe._generations for v in seen.values())
        again, done = dedupe.claim("k")
        assert not again and done.result() == "success"

    asyncio.run(scenario())


async def test_a_slow_api_holds_a_bounded_number_of_lanes_and_every_reply_still_goes_once_in_order():
    """While WeChat answers nothing, 300 users with replies do not make 300 waiting tasks: at most max_lanes
    run, the rest queue; when WeChat answers, each user's replies go once, in order."""
    store = MemoryStore()
    release = asyncio.Event()
    sent: list[tuple[str, str]] = []

    async def sender(user, reply, send_as=None):
        await release.wait()
        sent.append((user, reply.content))
        return SendResult(ok=True)

    outbox = Outbox(store, sender, OutboxSettings(concurrency=2))
    assert outbox.max_lanes == 64
    for i in range(300):
        await outbox.submit(f"u{i}", texts(2, f"r{i}-"), f"p{i}")
    assert len(outbox._lanes) == 64 and len(outbox._queued) == 236
    assert await outbox.scan() == 0  # queued users are not started twice by the scan
    release.set()
    await outbox.drain()
    assert len(sent) == 600 and len(set(sent)) == 600
    for i in range(300):
        assert [text for user, text in sent if user == f"u{i}"] == [f"r{i}-0", f"r{i}-1"]
    assert not outbox._lanes and not outbox._queued


# ---- several instances sharing one store --------------------------------------------------------------


@pytest.fixture
async def later(backend):
    """later(s): s seconds pass for the leases and for the outbox's timers. On memory and sqlite at once — the
    stores' clock and the event loop's clock (its timers) jump together; on Redis, which expires keys on its
    own clock, truly (the tests give it a lease of 1 s)."""
    store, clock, kind = backend
    loop = asyncio.get_running_loop()
    real, offset = loop.time, [0.0]

    async def later(seconds: float) -> None:
        if kind == "redis":
            await asyncio.sleep(seconds)
        else:
            clock.now += seconds
            offset[0] += seconds

    if kind != "redis":
        loop.time = lambda: real() + offset[0]
    yield later
    if kind != "redis":
        del loop.time


async def until(condition, timeout: float = 5.0) -> None:
    """Wait until `condition()` holds (it changes in other tasks, or on the sqlite store's thread)."""
    deadline = time.monotonic() + timeout  # not the loop's clock: tests move that
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.001)


def held_sender(log: list[tuple[str, str]], name: str, gate: asyncio.Event | None = None,
                sending: asyncio.Event | None = None, answers: list[SendResult] | None = None):
    """A sender for instance `name` that logs (name, text); it waits for `gate` (setting `sending` first) and
    answers from `answers` while any are left, then ok."""

    async def send(user, reply, send_as=None):
        if gate is not None and not gate.is_set():
            if sending is not None:
                sending.set()
            await gate.wait()
        if answers:
            return answers.pop(0)
        log.append((name, reply.content))
        return SendResult(ok=True)

    return send


async def test_a_late_retry_of_a_lane_that_lost_its_lease_does_not_send_a_reply_again(backend):
    """A's send hangs; its lease lapses (its renewals could not reach the store) and B sends the reply. When A's
    attempt comes back as a transient failure, its retry state must not turn B's sent reply back to pending —
    A would take the free lane and send it a second time."""
    store, clock, _ = backend
    sent: list[tuple[str, str]] = []
    gate, sending = asyncio.Event(), asyncio.Event()
    busy = [SendResult(ok=False, errcode=-1, errmsg="system busy")]
    a = Outbox(store, held_sender(sent, "A", gate, sending, busy), clock=clock, base_delay=0.0)
    b = Outbox(store, held_sender(sent, "B"), clock=clock)
    [item] = await a.submit("u", texts(1, "one"), "p")
    await sending.wait()
    await store.delete("lane:u")  # A's lease is gone
    await b.scan()
    await b.drain()
    assert (await store.outbox_get(item.id)).status == "sent"
    gate.set()
    await a.drain()
    assert sent == [("B", "one0")]
    assert (await store.outbox_get(item.id)).status == "sent"


async def test_an_unreadable_reply_is_failed_and_the_users_later_replies_still_go(tmp_path):
    """A reply kind written by a newer kefu (read after a rollback): the lane fails that item, saying why, and
    sends the user's next reply — instead of dying on it at every scan, blocking the user forever."""
    import sqlite3

    from bot.store.sqlite import SqliteStore

    path = tmp_path / "kefu.db"
    store = SqliteStore(str(path))
    await store.open()
    bad, good = await store.outbox_add("u", (TextReply("bad"), TextReply("good")), "p", 0.0)
    db = sqlite3.connect(path)
    db.execute("UPDATE outbox SET reply = ? WHERE id = ?", ('{"kind": "sticker", "id": 1}', bad.id))
    db.commit()
    sent: list[tuple[str, str]] = []
    outbox = Outbox(store, held_sender(sent, "A"))
    assert await outbox.scan() == 1
    await outbox.drain()
    assert sent == [("A", "good")]
    assert (await store.outbox_get(good.id)).status == "sent"
    status, error = db.execute("SELECT status, error FROM outbox WHERE id = ?", (bad.id,)).fetchone()
    db.close()
    await store.close()
    assert (status, error) == ("failed", "could not be read: KeyError: 'sticker'")


async def test_a_send_slower_than_the_lease_keeps_it_so_no_other_instance_sends_the_reply_again(backend, later):
    """A's send takes longer than the lease (WeChat answers late: a timeout, then a retry; with the defaults,
    up to ~31 s against a 15 s lease). A renews its lease meanwhile, so B's scan finds the lane held: no reply
    twice, none out of order ("one, two, one")."""
    store, clock, kind = backend
    lease = 1 if kind == "redis" else 15
    sent: list[tuple[str, str]] = []
    gate, sending = asyncio.Event(), asyncio.Event()
    a = Outbox(store, held_sender(sent, "A", gate, sending), OutboxSettings(lease=lease), clock=clock)
    b = Outbox(store, held_sender(sent, "B"), OutboxSettings(lease=lease), clock=clock)
    await a.submit("u", (TextReply("one"), TextReply("two")), "p")
    await sending.wait()
    for n in range(1, 5):  # twice the lease, a renewal at a time
        await later(lease / 2)
        await until(lambda n=n: a.stats.renewed >= n)
    assert await b.scan() == 1
    await b.drain()
    assert sent == []  # B found the lane held
    gate.set()
    await a.drain()
    assert sent == [("A", "one"), ("A", "two")]
    assert await store.get("lane:u") is None  # released at the end, as before


def one_slot_outbox(store, clock, lease: float, sent: list[tuple[str, str]]):
    """(instance A with one send slot, gate, sending): A's send to the user "busy" takes the slot and holds it
    until `gate` is set (`sending` tells it has begun); its other sends go at once."""
    gate, sending = asyncio.Event(), asyncio.Event()
    slow = held_sender(sent, "A", gate, sending)

    async def send(user, reply, send_as=None):
        return await (slow if user == "busy" else held_sender(sent, "A"))(user, reply, send_as)

    return Outbox(store, send, OutboxSettings(concurrency=1, lease=lease), clock=clock), gate, sending


async def test_waiting_for_a_send_slot_longer_than_the_lease_keeps_it_too(backend, later):
    """The same without a slow send to this user: u's lane holds its lease while it waits for a send slot
    (outbox.concurrency, shared by every user), taken by another user's slow send."""
    store, clock, kind = backend
    lease = 1 if kind == "redis" else 15
    sent: list[tuple[str, str]] = []
    a, gate, sending = one_slot_outbox(store, clock, lease, sent)
    b = Outbox(store, held_sender(sent, "B"), OutboxSettings(lease=lease), clock=clock)
    await a.submit("busy", texts(1, "slow"), "p0")
    await sending.wait()
    await a.submit("u", texts(1, "one"), "p1")
    await until(lambda: len(a._limit._waiters or ()) == 1)  # u's lane holds its lease and waits for the slot
    for n in range(1, 5):
        await later(lease / 2)
        await until(lambda n=n: a.stats.renewed >= 2 * n)  # both lanes' leases
    await b.scan()
    await b.drain()
    gate.set()
    await a.drain()
    assert sorted(sent) == [("A", "one0"), ("A", "slow0")]


async def test_a_lane_that_finds_its_lease_taken_while_waiting_for_a_slot_does_not_send(backend, later):
    """If a renewal finds the lease gone (the store was out of reach longer than the lease, and another
    instance took the lane), the lane starts no send: the other instance may be sending that reply."""
    store, clock, kind = backend
    lease = 1 if kind == "redis" else 15
    sent: list[tuple[str, str]] = []
    a, gate, sending = one_slot_outbox(store, clock, lease, sent)
    await a.submit("busy", texts(1, "slow"), "p0")
    await sending.wait()
    [item] = await a.submit("u", texts(1, "one"), "p1")
    await until(lambda: len(a._limit._waiters or ()) == 1)
    await store.set("lane:u", "B", 60)  # B has it
    await later(lease / 2)
    await until(lambda: "u" in a._lost)
    gate.set()
    await a.drain()
    assert sent == [("A", "slow0")]
    assert (await store.outbox_get(item.id)).status == "pending"  # for B
    assert await store.get("lane:u") == "B"


async def test_a_store_hiccup_while_closing_does_not_send_an_accepted_reply_again():
    """During a graceful close (a rolling deploy), a reply WeChat has accepted is still marked sent through a
    store hiccup: the lane keeps trying within its deadline, as it does while running."""
    clock = Clock()

    class FlakyStore(MemoryStore):
        failures = 1

        async def outbox_update(self, item):
            if self.failures and item.status == "sent":
                self.failures -= 1
                raise StoreError("database is locked")
            await super().outbox_update(item)

    store = FlakyStore(clock)
    sent: list[tuple[str, str]] = []
    gate, sending = asyncio.Event(), asyncio.Event()
    first = Outbox(store, held_sender(sent, "first", gate, sending), clock=clock)
    await first.submit("u", texts(1, "x"), "p")
    await sending.wait()
    closing = asyncio.create_task(first.close(timeout=5))
    await asyncio.sleep(0)  # close() has begun
    gate.set()  # WeChat accepts "x"; marking it sent fails once
    await closing
    assert store.failures == 0
    clock.now += 16  # the next start, once the lease has expired
    second = Outbox(store, held_sender(sent, "second"), clock=clock)
    await second.scan()
    await second.drain()
    assert sent == [("first", "x0")]


async def test_a_lane_backing_off_when_the_outbox_closes_does_not_renew_its_lease():
    """A lane that wakes from its backoff after close() ends without another store step: renewing the lease
    then would only keep the next start (or another instance) waiting for it."""

    class CountingStore(MemoryStore):
        steps = 0

        async def lane_next(self, *args, **kw):
            self.steps += 1
            return await super().lane_next(*args, **kw)

    store = CountingStore()
    sent: list[tuple[str, str]] = []
    failed = asyncio.Event()

    async def sender(user, reply, send_as=None):
        failed.set()
        return SendResult(ok=False, errcode=-1, errmsg="system busy")

    outbox = Outbox(store, sender, base_delay=0.001)
    await outbox.submit("u", texts(1, "x"), "p")
    await failed.wait()  # the lane has recorded the failure and sleeps (the memory store never suspends)
    steps = store.steps
    await outbox.close()
    assert store.steps == steps and not sent
    assert (await store.outbox_next("u")).attempts == 1


async def test_a_lane_that_ends_by_an_error_forgets_the_user():
    class DownStore(MemoryStore):
        async def lane_next(self, *args, **kw):
            outbox.kick("u")  # a reply arrives while the lane steps
            raise StoreError("down")

    store = DownStore()
    outbox = Outbox(store, held_sender([], "A"))
    await outbox.submit("u", texts(1, "x"), "p")
    await outbox.drain()
    assert not outbox._lanes and not outbox._again and not outbox._steps


# ---- a renewal answered between two drains of a lane (found in review) -------------------------------


class PipelinedStore(MemoryStore):
    """A MemoryStore whose answers can be held back, as Redis answers a pipeline after running it: the command
    runs at once, its answer arrives when the test says."""

    def __init__(self, clock) -> None:
        super().__init__(clock)
        self.hold_record = self.hold_touch = self.hold_next = False
        self.record_ran, self.record_answer = asyncio.Event(), asyncio.Event()
        self.touch_ran, self.touch_answer = asyncio.Event(), asyncio.Event()
        self.next_ran, self.next_answer = asyncio.Event(), asyncio.Event()

    async def lane_next(self, user, owner, lease, done=None):
        result = await super().lane_next(user, owner, lease, done)
        if done is not None and self.hold_record:
            self.hold_record = False
            self.record_ran.set()
            await self.record_answer.wait()
        elif done is None and self.hold_next:
            self.hold_next = False
            self.next_ran.set()
            await self.next_answer.wait()
        return result

    async def touch_if(self, key, value, ttl):
        result = await super().touch_if(key, value, ttl)
        if self.hold_touch:
            self.hold_touch = False
            self.touch_ran.set()
            await self.touch_answer.wait()
        return result


async def _turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_renewal_answered_between_two_drains_of_a_lane_disables_renewal_for_the_next_send():
    """A lane's last step releases the lease (nothing pending); a reply submitted during that round trip makes
    the lane drain again (_again). _drain_lane leaves `_steps[user]` behind when its loop ends, so a renewal
    tick during the round trip renews a lease released on purpose; its answer (False), arriving after the
    step's (as Redis answers pipelines in order) while the next drain's lane_next is in flight, still finds the
    stale `_steps` entry and marks the user `_lost`. The next drain takes the lease again, but _renew_due skips
    lost users: a send longer than the lease lets it expire, and another instance sends the reply again."""
    loop = asyncio.get_running_loop()
    real, offset = loop.time, [0.0]
    loop.time = lambda: real() + offset[0]
    clock = Clock()

    def later(seconds: float) -> None:  # the store's clock and the loop's timers move together
        clock.now += seconds
        offset[0] += seconds

    try:
        store = PipelinedStore(clock)
        sent: list[tuple[str, str]] = []
        second_gate, second_sending = asyncio.Event(), asyncio.Event()

        async def a_send(user, reply, send_as=None):
            if reply.content == "two":
                second_sending.set()
                await second_gate.wait()
            sent.append(("A", reply.content))
            return SendResult(ok=True)

        async def b_send(user, reply, send_as=None):
            sent.append(("B", reply.content))
            return SendResult(ok=True)

        lease = 15
        a = Outbox(store, a_send, OutboxSettings(lease=lease), clock=clock)
        b = Outbox(store, b_send, OutboxSettings(lease=lease), clock=clock)
        store.hold_record = True
        await a.submit("u", (TextReply("one"),), "p1")
        await store.record_ran.wait()  # "one" sent and recorded; nothing pending: the lease is released
        await a.submit("u", (TextReply("two"),), "p2")  # the lane must look once more (_again)
        store.hold_touch = store.hold_next = True
        later(lease / 3 + 1)  # a renewal tick during the round trip
        await store.touch_ran.wait()  # the renewal ran (lease gone: False); its answer is on its way
        store.record_answer.set()  # the step's answer first, as sent
        await store.next_ran.wait()  # the next drain's lane_next ran: the lease is A's again
        assert await store.get("lane:u") == a.owner
        store.touch_answer.set()  # then the renewal's answer
        await _turns()
        store.next_answer.set()
        await second_sending.wait()  # A sends "two", slowly
        for _ in range(4):  # twice the lease: A's renewals must keep the lane meanwhile
            later(lease / 2)
            await _turns(20)
        assert await store.get("lane:u") == a.owner, f"A's lease lapsed during its send (_lost={a._lost})"
        await b.scan()
        await b.drain()
        second_gate.set()
        await a.drain()
        assert sent == [("A", "one"), ("A", "two")]
    finally:
        del loop.time


@pytest.mark.parametrize("status", [302, 404])
async def test_a_final_http_status_fails_the_reply_at_once(fake, api, status):
    """errcodes.classify judges for both the API client and the outbox: a 3xx/4xx is not retried later."""
    store = MemoryStore()
    outbox = Outbox(store, api.send, OutboxSettings(max_attempts=8), base_delay=0.001)
    fake.fail(SEND, Failure(http=status))
    await outbox.submit("u", texts(1, "m"), "p")
    await outbox.drain()
    (item,) = await store.outbox_items()
    assert item.status == "failed" and item.attempts == 1 and f"HTTP {status}" in item.error
    assert len(fake.calls_to(SEND)) == 1 and outbox.stats.retried == 0
