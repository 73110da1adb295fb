"""The store contract: every backend (memory, sqlite, redis) passes the same tests."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlparse

import pytest

from bot.errors import ConfigError
from bot.messages import ImageReply, MenuReply, MiniProgramPageReply, TextReply
from bot.store import LogEntry, OutboxItem, open_store

from .stores import REDIS_URL, Clock, flush_prefix, redis_url, require_redis


async def test_ping_and_identity(backend):
    store, _, kind = backend
    assert await store.ping() is True
    assert store.kind == kind
    assert store.shared is (kind != "memory")


# ---- dedupe --------------------------------------------------------------------------------------


async def test_claim_is_taken_once(backend):
    store, _, _ = backend
    results = await asyncio.gather(*[store.claim("msg:1", 300) for _ in range(10)])
    assert results.count(True) == 1
    assert await store.claim("msg:2", 300) is True


async def test_answers_are_kept_for_retries(backend):
    store, _, _ = backend
    assert await store.get_answer("msg:1") is None
    await store.put_answer("msg:1", b"transfer\x00<xml>\xe4\xbd\xa0</xml>", 300)
    assert await store.get_answer("msg:1") == b"transfer\x00<xml>\xe4\xbd\xa0</xml>"


async def test_claims_and_answers_expire(backend):
    store, clock, kind = backend
    if kind == "redis":
        pytest.skip("Redis expires keys on its own clock: see test_redis_sets_expiry")
    assert await store.claim("k", 300)
    await store.put_answer("k", b"a", 300)
    clock.now += 301
    assert await store.get_answer("k") is None
    assert await store.claim("k", 300) is True


# ---- key-value and locks -------------------------------------------------------------------------------


async def test_key_value(backend):
    store, clock, kind = backend
    assert await store.get("token") is None
    await store.set("token", "ACCESS_1", 7200)
    await store.set("forever", "x")
    assert await store.get("token") == "ACCESS_1"
    await store.set("token", "ACCESS_2", 7200)
    assert await store.get("token") == "ACCESS_2"
    await store.delete("token")
    assert await store.get("token") is None
    assert await store.get("forever") == "x"
    if kind != "redis":
        await store.set("short", "y", 10)
        clock.now += 11
        assert await store.get("short") is None
        assert await store.get("forever") == "x"


async def test_get_many_reads_several_keys_in_order(backend):
    store, clock, kind = backend
    assert await store.get_many([]) == []
    await store.set("state:u", '{"name": "退货"}', 600)
    await store.set("handoff:u", "1", 10)
    await store.set("cooldowns:u", "{}")
    assert await store.get_many(["state:u", "missing", "handoff:u", "cooldowns:u", "state:u"]) == [
        '{"name": "退货"}', None, "1", "{}", '{"name": "退货"}']
    if kind != "redis":
        clock.now += 11  # handoff:u expired
        assert await store.get_many(["handoff:u", "state:u"]) == [None, '{"name": "退货"}']


async def test_locks(backend):
    store, clock, kind = backend
    results = await asyncio.gather(*[store.set_if_absent("lock:token", f"owner{i}", 10) for i in range(5)])
    assert results.count(True) == 1
    owner = f"owner{results.index(True)}"
    assert await store.touch_if("lock:token", "someone-else", 10) is False
    assert await store.touch_if("lock:token", owner, 10) is True
    assert await store.delete_if("lock:token", "someone-else") is False
    assert await store.get("lock:token") == owner
    assert await store.delete_if("lock:token", owner) is True
    assert await store.set_if_absent("lock:token", "next", 10) is True
    if kind != "redis":
        clock.now += 11  # an expired lock is free again
        assert await store.set_if_absent("lock:token", "after-expiry", 10) is True


async def test_unicode_and_large_values(backend):
    store, _, _ = backend
    value = "状态" * 5000 + "😀\x00\n"
    await store.set("state:o1", value, 600)
    assert await store.get("state:o1") == value


# ---- outbox --------------------------------------------------------------------------------------------

REPLIES = (TextReply("你好"), ImageReply("MEDIA"), MenuReply("选", (("1", "是"), ("2", "否")), "尾"),
           MiniProgramPageReply("t", "p", "m", None))


async def test_outbox_keeps_replies_in_order_per_user(backend):
    store, clock, _ = backend
    a = await store.outbox_add("userA", REPLIES[:2], "msg:1", clock.now)
    b = await store.outbox_add("userB", REPLIES[2:], "msg:2", clock.now + 1, send_as="kf@x")
    a2 = await store.outbox_add("userA", (TextReply("later"),), "msg:3", clock.now + 2)
    ids = [i.id for i in a + b + a2]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert [i.reply for i in a] == list(REPLIES[:2])
    assert b[0].send_as == "kf@x" and b[0].status == "pending" and b[0].push == "msg:2"
    assert await store.outbox_users() == ["userA", "userB"]
    first = await store.outbox_next("userA")
    assert first == a[0]
    await store.outbox_update(first.finished("sent", attempts=1, errcode=0))
    assert (await store.outbox_next("userA")).reply == ImageReply("MEDIA")
    assert (await store.outbox_next("userB")).reply == REPLIES[2]  # a MenuReply survives storage


async def test_outbox_update_and_listing(backend):
    store, clock, _ = backend
    items = await store.outbox_add("u", (TextReply("a"), TextReply("b"), TextReply("c")), "p", clock.now)
    await store.outbox_update(items[0].finished("sent", 1, 0))
    await store.outbox_update(items[1].finished("failed", 3, 45047, "45047: quota"))
    later = items[2].finished("pending", 1, -1, "busy")
    await store.outbox_update(later.__class__(**{**_fields(later), "next_try": clock.now + 5}))
    assert await store.outbox_counts() == {"pending": 1, "sent": 1, "failed": 1, "unsent": 0}
    failed = await store.outbox_items(status="failed")
    assert len(failed) == 1 and failed[0].errcode == 45047 and failed[0].error == "45047: quota"
    assert failed[0].attempts == 3
    pending = await store.outbox_next("u")
    assert pending.attempts == 1 and pending.next_try == clock.now + 5 and pending.error == "busy"
    assert [i.reply.content for i in await store.outbox_items()] == ["c", "b", "a"]  # newest first
    assert [i.reply.content for i in await store.outbox_items(user="u", limit=2)] == ["c", "b"]
    assert await store.outbox_oldest_pending() == clock.now
    await store.outbox_update(pending.finished("sent", 1, 0))
    assert await store.outbox_users() == []
    assert await store.outbox_next("u") is None
    assert await store.outbox_oldest_pending() is None


async def test_lane_next_is_one_atomic_step_of_a_users_lane(backend):
    store, clock, kind = backend
    assert await store.lane_next("u", "A", 15) == (True, None)  # nothing pending: no lease left behind
    assert await store.set_if_absent("lane:u", "probe", 1) is True
    await store.delete("lane:u")
    first, second = await store.outbox_add("u", (TextReply("1"), TextReply("2")), "p", clock.now)
    ok, item = await store.lane_next("u", "A", 15)
    assert ok and item == first
    assert await store.lane_next("u", "B", 15) == (False, None)  # A holds the lane
    ok, item = await store.lane_next("u", "A", 15, done=first.finished("sent", 1, 0))
    assert ok and item == second
    assert (await store.outbox_counts())["sent"] == 1
    ok, item = await store.lane_next("u", "A", 15, done=second.finished("failed", 1, 45047, "quota"))
    assert (ok, item) == (True, None)  # done: the lease is released
    assert await store.get("lane:u") is None
    third = (await store.outbox_add("u", (TextReply("3"),), "p2", clock.now))[0]
    assert await store.lane_next("u", "B", 15) == (True, third)  # free again: B takes it
    # another owner's `done` is still written when the lease is not theirs
    ok, item = await store.lane_next("u", "A", 15, done=third.finished("sent", 1, 0))
    assert (ok, item) == (False, None)
    assert (await store.outbox_counts())["sent"] == 2
    if kind != "redis":
        fourth = (await store.outbox_add("u", (TextReply("4"),), "p3", clock.now))[0]
        clock.now += 16  # B died: its lease expires
        assert await store.lane_next("u", "A", 15) == (True, fourth)


async def test_lane_next_writes_a_lost_lanes_result_only_where_it_undoes_nobodys_work(backend):
    """A lane that lost its lease during a slow send still steps with its result. What it learnt is true, but
    it must not undo what the new holder did: a sent item stays sent; a retry (pending) is dropped while
    another owner holds the lane, and never turns a finished item back to pending."""
    store, clock, _ = backend
    a, b = await store.outbox_add("u", (TextReply("a"), TextReply("b")), "p", clock.now)
    assert await store.lane_next("u", "A", 15) == (True, a)
    await store.delete("lane:u")  # A's lease expired during its send; B's scan takes the lane
    assert await store.lane_next("u", "B", 15) == (True, a)
    retry = OutboxItem(**{**_fields(a), "attempts": 1, "errcode": -1, "error": "busy", "next_try": clock.now + 9})
    assert await store.lane_next("u", "A", 15, done=retry) == (False, None)
    assert await store.outbox_get(a.id) == a  # B's lane: A's retry state is not written over it
    ok, item = await store.lane_next("u", "B", 15, done=a.finished("sent", 1, 0))
    assert ok and item == b
    assert await store.lane_next("u", "A", 15, done=a.finished("failed", 1, 45015, "late")) == (False, None)
    assert (await store.outbox_get(a.id)).status == "sent"  # WeChat has it: a later failure changes nothing
    assert await store.lane_next("u", "B", 15, done=b.finished("failed", 1, 45047, "quota")) == (True, None)
    # the lane is free now: A's late retry of `a` takes it, but puts nothing back to pending
    assert await store.lane_next("u", "A", 15, done=retry) == (True, None)
    assert (await store.outbox_get(a.id)).status == "sent" and await store.outbox_users() == []
    # a late "sent" is what happened: it is written over B's failure
    assert await store.lane_next("u", "A", 15, done=b.finished("sent", 1, 0)) == (True, None)
    assert await store.outbox_counts() == {"pending": 0, "sent": 2, "failed": 0, "unsent": 0}


async def test_lane_next_fails_an_item_it_cannot_read_and_goes_on(backend, tmp_path):
    """A reply kind written by a newer kefu (read after a rollback) or a damaged row: the lane marks it
    failed, saying why, and returns the user's next item, instead of failing every step forever."""
    store, clock, kind = backend
    if kind == "memory":
        pytest.skip("the memory store keeps replies as objects: nothing to read")
    bad, good = await store.outbox_add("u", (TextReply("bad"), TextReply("good")), "p", clock.now)
    sticker = '{"kind": "sticker", "id": 1}'
    if kind == "sqlite":
        import sqlite3

        db = sqlite3.connect(tmp_path / "kefu.db")
        db.execute("UPDATE outbox SET reply = ? WHERE id = ?", (sticker, bad.id))
        db.commit()
    else:
        import redis.asyncio as aioredis

        client = aioredis.from_url(REDIS_URL)
        await client.hset(f"{store.prefix}outbox:item:{bad.id}", "reply", sticker)
    assert await store.outbox_items() == [good]  # the console's listing leaves it out rather than failing
    assert await store.lane_next("u", "A", 15) == (True, good)
    if kind == "sqlite":
        error = db.execute("SELECT error FROM outbox WHERE id = ?", (bad.id,)).fetchone()[0]
        db.close()
    else:
        error = json.loads(await client.hget(f"{store.prefix}outbox:item:{bad.id}", "error"))
        await client.aclose()
    assert error == "could not be read: KeyError: 'sticker'"
    assert await store.get("lane:u") == "A"
    assert await store.outbox_counts() == {"pending": 1, "sent": 0, "failed": 1, "unsent": 0}
    assert await store.outbox_users() == ["u"]
    ok, item = await store.lane_next("u", "A", 15, done=good.finished("sent", 1, 0))
    assert (ok, item) == (True, None)


async def test_outbox_get_retry_and_drop(backend):
    store, clock, _ = backend
    a, b, c = await store.outbox_add("u", (TextReply("a"), TextReply("b"), TextReply("c")), "p", clock.now)
    other = (await store.outbox_add("v", (TextReply("v"),), "q", clock.now))[0]
    assert await store.outbox_get(a.id) == a
    assert await store.outbox_get(10**9) is None
    await store.outbox_update(a.finished("failed", 3, 45015, "45015: too late"))
    await store.outbox_update(b.finished("sent", 1, 0))
    await store.outbox_update(other.finished("failed", 1, 45047, "quota"))
    assert (await store.outbox_get(a.id)).status == "failed"
    assert await store.outbox_retry(b.id, clock.now) is None  # only failed items: sent stays sent
    assert await store.outbox_retry(c.id, clock.now) is None  # pending stays as it is
    assert await store.outbox_drop(b.id) is False and await store.outbox_drop(c.id) is False
    retried = await store.outbox_retry(a.id, clock.now + 7)
    assert retried is not None and retried.id == a.id and retried.reply == TextReply("a")
    assert (retried.status, retried.attempts, retried.errcode, retried.error) == ("pending", 0, None, None)
    assert retried.next_try == clock.now + 7
    assert await store.outbox_get(a.id) == retried
    assert await store.outbox_retry(a.id, clock.now) is None  # twice: the second finds it pending
    assert await store.outbox_next("u") == retried  # back in the lane, before c (id order)
    assert await store.outbox_users() == ["u"]
    assert await store.outbox_counts() == {"pending": 2, "sent": 1, "failed": 1, "unsent": 0}
    assert await store.outbox_drop(other.id) is True
    assert await store.outbox_drop(other.id) is False
    assert await store.outbox_get(other.id) is None
    assert await store.outbox_items(status="failed") == []
    assert await store.outbox_counts() == {"pending": 2, "sent": 1, "failed": 0, "unsent": 0}
    ok, item = await store.lane_next("u", "A", 15)
    assert ok and item == retried
    ok, item = await store.lane_next("u", "A", 15, done=item.finished("sent", 1, 0))
    assert ok and item == c


def _fields(item):
    return {name: getattr(item, name) for name in item.__dataclass_fields__}


# ---- conversation log ------------------------------------------------------------------------------------


async def test_conversation_log(backend):
    store, clock, _ = backend
    t = clock.now
    await store.log_add([LogEntry(t, "o1", "push", "text", "快递到哪了", "shipping"),
                         LogEntry(t + 1, "o1", "sent", "text", "明天到", "shipping")])
    await store.log_add([LogEntry(t + 2, "o2", "push", "event/subscribe", "", ""),
                         LogEntry(t + 3, "o1", "failed", "text", "x", "shipping", 45047, "quota"),
                         LogEntry(t + 4, "o2", "transfer", "text", "人工", "human")])
    assert [e.kind for e in await store.log_query()] == ["push", "sent", "push", "failed", "transfer"]
    assert [e.kind for e in await store.log_query(user="o1")] == ["push", "sent", "failed"]
    assert [e.ts for e in await store.log_query(since=t + 2)] == [t + 2, t + 3, t + 4]
    assert [e.user for e in await store.log_query(rule="human")] == ["o2"]
    assert [e.ts for e in await store.log_query(limit=2)] == [t + 3, t + 4]  # the newest two, in order
    failed = (await store.log_query(user="o1"))[-1]
    assert failed == LogEntry(t + 3, "o1", "failed", "text", "x", "shipping", 45047, "quota")
    assert await store.log_purge(t + 2) == 2
    assert len(await store.log_query()) == 3


async def test_log_pages_read_a_period_whole_and_only_it(backend):
    store, clock, _ = backend
    t = clock.now
    # 23 entries, several sharing a time (a push and its transfer are logged at once), two outside the period
    entries = [LogEntry(t + i // 2, f"o{i}", "push", "text", f"问题{i}") for i in range(21)]
    await store.log_add([LogEntry(t - 5, "early", "push"), *entries[:10]])
    await store.log_add([*entries[10:], LogEntry(t + 100, "late", "push")])
    seen, after, pages = [], None, 0
    while True:
        page, after = await store.log_page(t, t + 50, after, limit=4)
        seen += page
        pages += 1
        assert pages < 20, "the cursor must move on"
        if after is None:
            break
    assert sorted(e.user for e in seen) == sorted(e.user for e in entries)  # each once, none outside
    assert (await store.log_page(t + 200, t + 300))[0] == []
    await store.log_add([LogEntry(t + 1, "o1", "sent", "text", "好"), LogEntry(t + 2, "o2", "transfer", "text")])
    kinds: list[str] = []
    after = None
    while True:
        page, after = await store.log_page(t, t + 50, after, limit=4, kinds=("sent", "transfer"))
        kinds += [e.kind for e in page]
        if after is None:
            break
    assert sorted(kinds) == ["sent", "transfer"]


# ---- rule hits -----------------------------------------------------------------------------------------


async def test_rule_hits_add_up_by_day_with_the_latest_hit(backend):
    from bot.store import RuleHits

    store, clock, _ = backend
    t = clock.now
    assert await store.hits("2027-01-15") == {}
    await store.hits_add({}, "2027-01-15")
    await store.hits_add({"shipping": (3, t + 5), "欢迎 welcome": (1, t)}, "2027-01-14")
    await store.hits_add({"shipping": (2, t + 2), "human": (1, t + 9)}, "2027-01-15")  # an older last: kept
    await asyncio.gather(*[store.hits_add({"human": (1, t + 10 + n)}, "2027-01-15") for n in range(5)])
    today = await store.hits("2027-01-15")
    assert today == {"shipping": RuleHits(5, 2, t + 5), "欢迎 welcome": RuleHits(1, 0, t),
                     "human": RuleHits(6, 6, t + 14)}
    assert (await store.hits("2027-01-14"))["shipping"] == RuleHits(5, 3, t + 5)
    assert (await store.hits("2027-01-16"))["human"] == RuleHits(6, 0, t + 14)


# ---- opening -----------------------------------------------------------------------------------------


def test_store_urls():
    assert open_store("memory://").kind == "memory"
    assert open_store("sqlite:///tmp/x.db").kind == "sqlite"
    assert open_store("redis://127.0.0.1:6379/0").kind == "redis"
    with pytest.raises(ConfigError):
        open_store("mysql://x")


async def test_sqlite_data_survives_a_restart(tmp_path):
    url = f"sqlite:///{tmp_path}/kefu.db"
    store = open_store(url)
    await store.open()
    await store.outbox_add("u", (TextReply("after the crash"),), "p", 1.0)
    await store.set("state:u", "waiting", 600)
    await store.hits_add({"shipping": (2, 5.0)}, "2027-01-15")
    await store.close()
    again = open_store(url)
    await again.open()
    assert (await again.outbox_next("u")).reply == TextReply("after the crash")
    assert await again.get("state:u") == "waiting"
    assert (await again.hits("2027-01-15"))["shipping"].total == 2
    await again.close()


async def test_redis_sets_expiry_and_uses_its_prefix():
    require_redis()
    import redis.asyncio as aioredis

    url = redis_url()
    store = open_store(url)
    await store.open()
    try:
        await store.set("k", "v", 100)
        await store.claim("msg:1", 300)
        client = aioredis.from_url(url.split("?")[0])
        prefix = url.split("prefix=")[1]
        keys = {k.decode() async for k in client.scan_iter(match=f"{prefix}*")}
        assert f"{prefix}kv:k" in keys or any(k.startswith(prefix) for k in keys)
        assert all(k.startswith(prefix) for k in keys)
        ttls = [await client.pttl(k) for k in keys]
        assert all(0 < t <= 300_000 for t in ttls)
        await client.aclose()
    finally:
        await store.close()
        await flush_prefix(url)


async def test_an_unreachable_redis_raises_store_error():
    from bot.errors import StoreError

    store = open_store("redis://127.0.0.1:1/0")
    await store.open()
    try:
        assert await store.ping() is False
        with pytest.raises(StoreError):
            await store.get("x")
    finally:
        await store.close()


async def test_sqlite_two_connections_share_claims_and_locks(tmp_path):
    from bot.store.sqlite import SqliteStore

    clock = Clock()
    path = str(tmp_path / "shared" / "kefu.db")  # the folder is created on open
    first, second = SqliteStore(path, clock), SqliteStore(path, clock)
    await first.open()
    await second.open()
    try:
        claims = await asyncio.gather(*[s.claim(f"msg:{n}", 300) for n in range(20) for s in (first, second)])
        assert [claims[2 * n:2 * n + 2].count(True) for n in range(20)] == [1] * 20  # each push once
        locks = await asyncio.gather(*[s.set_if_absent("lock:token", f"owner{i}", 10)
                                       for i, s in enumerate((first, second) * 3)])
        assert locks.count(True) == 1
        owner, holder = f"owner{locks.index(True)}", (first, second)[locks.index(True) % 2]
        other = second if holder is first else first
        assert await other.get("lock:token") == owner
        assert await other.touch_if("lock:token", "someone-else", 10) is False
        assert await other.delete_if("lock:token", owner) is True  # the value, not the connection, owns it
        assert await holder.set_if_absent("lock:token", "next", 10) is True
        assert await other.set_if_absent("lock:token", "again", 10) is False
        clock.now += 301  # claim and lock expired: free again for either, still only once
        assert [await other.claim("msg:0", 300), await holder.claim("msg:0", 300)] == [True, False]
        assert await other.set_if_absent("lock:token", "after-expiry", 10) is True
        assert await holder.get("lock:token") == "after-expiry"
    finally:
        await first.close()
        await second.close()


async def test_redis_two_clients_share_claims_locks_and_the_outbox():
    require_redis()
    url = redis_url()
    first, second = open_store(url), open_store(url)  # two instances of a fleet: same Redis, same prefix
    await first.open()
    await second.open()
    try:
        claims = await asyncio.gather(*[s.claim("msg:1", 300) for s in (first, second) * 5])
        assert claims.count(True) == 1
        locks = await asyncio.gather(*[s.set_if_absent("lock:token", f"owner{i}", 10)
                                       for i, s in enumerate((first, second) * 3)])
        assert locks.count(True) == 1
        owner, holder = f"owner{locks.index(True)}", (first, second)[locks.index(True) % 2]
        other = second if holder is first else first
        assert await other.get("lock:token") == owner
        assert await other.touch_if("lock:token", owner, 10) is True
        assert await other.delete_if("lock:token", owner) is True
        assert await holder.set_if_absent("lock:token", "next", 10) is True
        added = await first.outbox_add("u", (TextReply("one"), TextReply("two")), "msg:1", 1.0)
        assert await second.outbox_users() == ["u"]
        assert await second.outbox_next("u") == added[0]
        await second.outbox_update(added[0].finished("sent", 1, 0))
        assert (await first.outbox_next("u")) == added[1]
        assert (await first.outbox_counts())["sent"] == 1
    finally:
        await first.close()
        await second.close()
        await flush_prefix(url)


async def test_memory_store_forgets_expired_keys_without_reading_them():
    """Claims and answers expire by themselves: a busy process does not keep every push it ever saw."""
    from bot.store.memory import MemoryStore

    now = [1000.0]
    store = MemoryStore(clock=lambda: now[0])
    for i in range(1000):
        await store.claim(f"m{i}", 60)
        await store.put_answer(f"m{i}", b"success", 60)
    now[0] += 61
    for i in range(1000, 1010):
        await store.claim(f"m{i}", 60)
        await store.put_answer(f"m{i}", b"success", 60)
    assert len(store._kv) + len(store._answers) <= 2 * 1010 - 20  # at least two forgotten per write
    for i in range(1010, 2200):
        await store.claim(f"m{i}", 60)
    assert all(not key.startswith("claim:m") or int(key[7:]) >= 1000 for key in store._kv)
    assert len(store._expiry) <= 2 * 1200 + 10


class AnswerDropper:
    """A TCP proxy in front of the test Redis that, once armed, passes the next command containing `marker` on
    to Redis and then cuts the client's connection in place of the answer: Redis ran it, the client never
    hears. redis-py's retry (RedisStore.open) then sends it again on a new connection."""

    def __init__(self) -> None:
        self.marker: bytes | None = None
        self.dropped = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, client_r, client_w) -> None:
        host, port = urlparse(REDIS_URL).hostname or "127.0.0.1", urlparse(REDIS_URL).port or 6379
        up_r, up_w = await asyncio.open_connection(host, port)
        drop = asyncio.Event()

        async def to_redis():
            while data := await client_r.read(65536):
                if self.marker is not None and self.marker in data:
                    self.marker = None
                    drop.set()
                up_w.write(data)
                await up_w.drain()
            up_w.close()

        async def to_client():
            while data := await up_r.read(65536):
                if drop.is_set():
                    self.dropped += 1
                    client_w.transport.abort()
                    up_w.close()
                    return
                client_w.write(data)
                await client_w.drain()
            client_w.close()

        await asyncio.gather(to_redis(), to_client(), return_exceptions=True)


async def test_redis_a_command_resent_after_a_dropped_connection_adds_no_reply_twice_and_keeps_the_claim():
    """A connection that drops after Redis ran a batch and before its answers arrive makes redis-py send the
    batch again. outbox_add must not store the replies twice (the user would get each twice), and claim must
    not find the push claimed by itself (its replies would never be decided)."""
    require_redis()
    url = redis_url()
    proxy = AnswerDropper()
    port = await proxy.start()
    store = open_store(f"redis://127.0.0.1:{port}/0?prefix={url.split('prefix=', 1)[1]}")
    await store.open()
    try:
        await store.outbox_add("warmup", (TextReply("w"),), "p0", 0.0)  # the script is loaded
        proxy.marker = b"EVALSHA"
        [item] = await store.outbox_add("u", (TextReply("hello"),), "p1", 1.0)
        assert proxy.dropped == 1
        assert [i.reply.content for i in await store.outbox_items(user="u")] == ["hello"]
        assert await store.outbox_next("u") == item
        proxy.marker = b"claim:msg:1"
        assert await store.claim("msg:1", 300) is True
        assert proxy.dropped == 2
        assert await store.claim("msg:1", 300) is False  # a true second delivery
        proxy.marker = b"kv:lock"
        assert await store.set_if_absent("lock", "owner1", 10) is True
        assert proxy.dropped == 3 and await store.set_if_absent("lock", "owner2", 10) is False
    finally:
        await store.close()
        proxy.server.close()
        await flush_prefix(url)


async def test_redis_lane_next_on_an_unreadable_item_that_is_not_pending_does_not_spin():
    """An unreadable item still in the user's pending list whose hash says it is not pending (a damaged store):
    failing it changes nothing, so lane_next takes it out of the list and goes on, instead of asking Redis
    for the same item for ever."""
    require_redis()
    url = redis_url()
    store = open_store(url)
    await store.open()
    try:
        [item] = await store.outbox_add("u", (TextReply("x"),), "p", 1.0)
        await store._client.hset(f"{store._items}{item.id}",  # noqa: SLF001
                                 mapping={"reply": json.dumps({"kind": "sticker"}), "status": "failed"})
        assert await asyncio.wait_for(store.lane_next("u", "me", 10), 10) == (True, None)
        assert await store._client.llen(f"{store._out}pending:u") == 0  # noqa: SLF001
    finally:
        await store.close()
        await flush_prefix(url)
