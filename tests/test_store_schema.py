"""A store written by an older kefu is read by this one: every fixture in tests/fixtures/store-vN.sql is a
store as kefu's schema N wrote it (see bot/store/sqlschema.py); this kefu opens it, reads what it holds,
writes to it, and leaves it with the schema a new file gets. tests/fixtures/redis-v1.json is the same for
the keys of a Redis store."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from bot.errors import StoreError
from bot.messages import TextReply
from bot.store import open_store
from bot.store.sqlschema import MIGRATIONS, SCHEMA_VERSION

from .stores import flush_prefix, redis_url, require_redis

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RELEASED = sorted(FIXTURES.glob("store-v*.sql"), key=lambda p: int(re.findall(r"\d+", p.stem)[0]))
NOW = 1800000000.0  # the fixtures were written at this clock


def _version(fixture: Path) -> int:
    return int(re.findall(r"\d+", fixture.stem)[0])


def _load(fixture: Path, path: Path) -> Path:
    with sqlite3.connect(path) as db:
        db.executescript(fixture.read_text(encoding="utf-8"))
    db.close()
    return path


def _schema(path: Path) -> list[tuple[str, str, str]]:
    """Tables and indexes with their SQL, whitespace-normalised."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
                          "ORDER BY type, name").fetchall()
    db.close()
    return [(kind, name, " ".join(sql.split()).replace("IF NOT EXISTS ", "")) for kind, name, sql in rows]


def test_the_current_schema_has_a_fixture_and_one_migration_per_version():
    assert len(MIGRATIONS) == SCHEMA_VERSION
    assert [_version(f) for f in RELEASED] == list(range(1, SCHEMA_VERSION + 1))


@pytest.mark.parametrize("fixture", RELEASED, ids=lambda p: p.stem)
async def test_a_store_written_by_an_earlier_kefu_is_read_and_migrated(tmp_path, fixture):
    path = _load(fixture, tmp_path / "kefu.db")
    fresh = tmp_path / "fresh.db"
    store = open_store(f"sqlite:///{path}", clock=lambda: NOW)
    await store.open()
    try:
        pending = await store.outbox_items(status="pending", user="o-pending")
        assert pending and pending[-1].reply == TextReply("您的订单已发货")  # the oldest pending: the lane's next
        assert (await store.outbox_next("o-pending")).reply == TextReply("您的订单已发货")
        assert await store.get("state:o-pending") == "waiting_order"
        assert [(e.user, e.text) for e in await store.log_query(user="o-pending")][0] == ("o-pending", "我的快递到哪了")
        if _version(fixture) >= 2:
            assert (await store.hits("2027-01-15"))["shipping"].total == 3
            assert await store.get("token:wx") is None  # expired before NOW
            assert await store.get_answer("answer:push-1") == b"success"
        # and it takes new writes of every kind
        added = await store.outbox_add("o-new", (TextReply("新的"),), "push-9", NOW)
        assert added[0].id > max(item.id for item in pending)  # ids go on from the old ones
        await store.hits_add({"shipping": (1, NOW)}, "2027-01-16")
        assert (await store.hits("2027-01-16"))["shipping"].today == 1
    finally:
        await store.close()
    new = open_store(f"sqlite:///{fresh}")
    await new.open()
    await new.close()
    assert _schema(path) == _schema(fresh)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


async def test_a_store_from_a_newer_kefu_is_refused_and_left_as_it_is(tmp_path):
    path = _load(RELEASED[-1], tmp_path / "kefu.db")
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.execute("PRAGMA journal_mode = WAL")  # as every file kefu wrote is
    db.close()
    before = path.read_bytes()
    store = open_store(f"sqlite:///{path}")
    with pytest.raises(StoreError, match=f"schema {SCHEMA_VERSION + 1} is newer than this kefu"):
        await store.open()
    assert path.read_bytes() == before


async def _load_redis(url: str, fixture: Path) -> None:
    import redis.asyncio as aioredis

    prefix = url.split("prefix=", 1)[1]
    client = aioredis.from_url(url.split("?", 1)[0])
    try:
        for key, entry in json.loads(fixture.read_text(encoding="utf-8")).items():
            if key.startswith("_"):
                continue
            name, value = prefix + key, entry["value"]
            if entry["type"] == "string":
                await client.set(name, value)
            elif entry["type"] == "hash":
                await client.hset(name, mapping=value)
            elif entry["type"] == "list":
                await client.rpush(name, *value)
            else:
                await client.zadd(name, {member: score for member, score in value})
            if entry["expires"]:
                await client.expire(name, 3600)
    finally:
        await client.aclose()


async def test_a_redis_store_written_by_an_earlier_kefu_is_read():
    require_redis()
    url = redis_url()
    await _load_redis(url, FIXTURES / "redis-v1.json")
    store = open_store(url, clock=lambda: NOW)
    await store.open()
    try:
        pending = await store.outbox_items(status="pending", user="o-pending")
        oldest_first = [item.reply for item in reversed(pending)]
        assert oldest_first == [TextReply("您的订单已发货"), TextReply("还有什么可以帮您？")]
        assert (await store.outbox_counts())["pending"] == 2
        assert await store.lane_next("o-pending", "A", 15) == (True, pending[-1])
        assert await store.get("state:o-pending") == "waiting_order"
        assert await store.get_answer("answer:push-1") == b"success"
        assert [e.text for e in await store.log_query(user="o-pending")] == ["我的快递到哪了", "您的订单已发货"]
        hits = (await store.hits("2027-01-15"))["shipping"]
        assert (hits.total, hits.today) == (3, 3)
        added = await store.outbox_add("o-new", (TextReply("新的"),), "push-9", NOW)
        assert added[0].id == 4  # ids go on from the old ones
    finally:
        await store.close()
        await flush_prefix(url)
