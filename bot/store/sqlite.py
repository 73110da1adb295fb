"""The sqlite store: one file on one host, shared by every kefu process there (the embedded default).

All I/O runs on aiosqlite's thread, never on the event loop. Each call is one autocommit statement (atomic
on its own, also against other processes on the same file) or one explicit transaction; either way a write
is committed before the call returns. WAL lets readers and the one writer work at once; `busy_timeout` makes
a process wait for another's write instead of failing. Keys expire by an absolute `expires` (epoch seconds
from the injected clock, NULL = never): reads ignore expired rows, and every PURGE_EVERY-th write deletes
them. Finished outbox items and log entries stay until the caller purges them by time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from ..errors import StoreError
from ..messages import Reply, reply_from_dict, reply_to_dict
from .base import STATUSES, LogEntry, OutboxItem, Status

SCHEMA_VERSION = 1  # PRAGMA user_version: raise it (and add the steps to MIGRATIONS) when the schema changes
BUSY_TIMEOUT_MS = 5000
PURGE_EVERY = 500  # writes between two sweeps of expired keys and answers

# MIGRATIONS[v] takes a file from user_version v to v + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = ((
    "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL)",
    "CREATE INDEX IF NOT EXISTS kv_expires ON kv (expires)",
    "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer BLOB NOT NULL, expires REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS answers_expires ON answers (expires)",
    """CREATE TABLE IF NOT EXISTS outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL, reply TEXT NOT NULL, push TEXT NOT NULL,
        created_at REAL NOT NULL, send_as TEXT, status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0, errcode INTEGER, error TEXT, next_try REAL NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS outbox_status_user ON outbox (status, user, id)",  # next, users
    "CREATE INDEX IF NOT EXISTS outbox_status ON outbox (status, id)",  # items(status), oldest pending
    "CREATE INDEX IF NOT EXISTS outbox_user ON outbox (user, id)",  # items(user)
    """CREATE TABLE IF NOT EXISTS log (
        id INTEGER PRIMARY KEY, ts REAL NOT NULL, user TEXT NOT NULL, kind TEXT NOT NULL,
        msg_type TEXT NOT NULL, text TEXT NOT NULL, rule TEXT NOT NULL, errcode INTEGER, detail TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS log_user_ts ON log (user, ts)",
    "CREATE INDEX IF NOT EXISTS log_ts ON log (ts)",
),)

ITEM_COLUMNS = "id, user, reply, push, created_at, send_as, status, attempts, errcode, error, next_try"
LOG_COLUMNS = "ts, user, kind, msg_type, text, rule, errcode, detail"
LIVE = "(expires IS NULL OR expires > ?)"  # a key that has not expired; binds now


class SqliteStore:
    kind = "sqlite"
    shared = True

    def __init__(self, path: str, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()  # one call at a time on the connection: a transaction stays whole
        self._writes = 0

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    async def open(self) -> None:
        if self._db is not None:
            return
        try:
            if self.path != ":memory:":
                await asyncio.to_thread(Path(self.path).parent.mkdir, parents=True, exist_ok=True)
            db = await aiosqlite.connect(self.path, isolation_level=None)  # autocommit; BEGIN where needed
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"sqlite store: cannot open the file: {exc}") from exc
        self._db = db
        try:
            async with self._use("open") as conn:
                await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")  # first: WAL may wait too
                await conn.execute("PRAGMA journal_mode = WAL")
                await conn.execute("PRAGMA synchronous = NORMAL")
            async with self._transaction("open") as conn:  # IMMEDIATE: processes opening at once take turns
                version = list(await conn.execute_fetchall("PRAGMA user_version"))[0][0]
                if version > SCHEMA_VERSION:
                    raise StoreError(f"sqlite store: schema {version} is newer than this kefu ({SCHEMA_VERSION})")
                for steps in MIGRATIONS[version:]:
                    for sql in steps:
                        await conn.execute(sql)
                await conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            with contextlib.suppress(StoreError):
                await self.close()
            raise

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            try:
                await db.close()
            except (sqlite3.Error, ValueError) as exc:
                raise StoreError(f"sqlite store: close failed: {exc}") from exc

    async def ping(self) -> bool:
        try:
            await self._fetch("ping", "SELECT 1")
        except StoreError:
            return False
        return True

    # -- plumbing ----------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _use(self, what: str) -> AsyncIterator[aiosqlite.Connection]:
        """The connection for one call; any sqlite failure becomes a StoreError without data in it."""
        async with self._lock:
            if self._db is None:  # never opened, or closed while this call waited for the lock
                raise StoreError(f"sqlite store: {what}: not open")
            try:
                yield self._db
            except (sqlite3.Error, ValueError) as exc:  # ValueError: aiosqlite's "Connection closed"
                raise StoreError(f"sqlite store: {what} failed: {exc}") from exc

    @contextlib.asynccontextmanager
    async def _transaction(self, what: str) -> AsyncIterator[aiosqlite.Connection]:
        """Several statements as one: committed together, or rolled back (also when cancelled)."""
        async with self._use(what) as db:
            await db.execute("BEGIN IMMEDIATE")  # take the write lock now, not halfway through
            try:
                yield db
                await db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await db.execute("ROLLBACK")
                raise

    async def _fetch(self, what: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._use(what) as db:
            return list(await db.execute_fetchall(sql, params))

    async def _write(self, what: str, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement, committed on return; how many rows it changed (sqlite's changes())."""
        async with self._use(what) as db, db.execute(sql, params) as cursor:
            changed = cursor.rowcount
        self._writes += 1
        if self._writes % PURGE_EVERY == 0:
            await self._purge_expired()
        return changed

    async def _purge_expired(self) -> None:
        now = self._clock()
        async with self._transaction("purge") as db:
            await db.execute("DELETE FROM kv WHERE expires <= ?", (now,))
            await db.execute("DELETE FROM answers WHERE expires <= ?", (now,))

    # -- dedupe ------------------------------------------------------------------------------------

    async def claim(self, key: str, ttl: float) -> bool:
        return await self.set_if_absent(f"claim:{key}", "1", ttl)

    async def put_answer(self, key: str, answer: bytes, ttl: float) -> None:
        await self._write("put_answer", "INSERT INTO answers (key, answer, expires) VALUES (?, ?, ?) "
                          "ON CONFLICT (key) DO UPDATE SET answer = excluded.answer, expires = excluded.expires",
                          (key, answer, self._clock() + ttl))

    async def get_answer(self, key: str) -> bytes | None:
        rows = await self._fetch("get_answer", "SELECT answer FROM answers WHERE key = ? AND expires > ?",
                                 (key, self._clock()))
        return bytes(rows[0][0]) if rows else None

    # -- key-value ---------------------------------------------------------------------------------

    async def get(self, key: str) -> str | None:
        rows = await self._fetch("get", f"SELECT value FROM kv WHERE key = ? AND {LIVE}", (key, self._clock()))
        return rows[0][0] if rows else None

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        expires = self._clock() + ttl if ttl is not None else None
        await self._write("set", "INSERT INTO kv (key, value, expires) VALUES (?, ?, ?) "
                          "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires = excluded.expires",
                          (key, value, expires))

    async def delete(self, key: str) -> None:
        await self._write("delete", "DELETE FROM kv WHERE key = ?", (key,))

    async def set_if_absent(self, key: str, value: str, ttl: float) -> bool:
        # One statement: insert, or take over the row only if it has expired. Atomic across processes.
        now = self._clock()
        return await self._write(
            "set_if_absent", "INSERT INTO kv (key, value, expires) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE "
            "SET value = excluded.value, expires = excluded.expires WHERE kv.expires IS NOT NULL AND kv.expires <= ?",
            (key, value, now + ttl, now)) == 1

    async def touch_if(self, key: str, value: str, ttl: float) -> bool:
        now = self._clock()
        return await self._write("touch_if", f"UPDATE kv SET expires = ? WHERE key = ? AND value = ? AND {LIVE}",
                                 (now + ttl, key, value, now)) == 1

    async def delete_if(self, key: str, value: str) -> bool:
        return await self._write("delete_if", f"DELETE FROM kv WHERE key = ? AND value = ? AND {LIVE}",
                                 (key, value, self._clock())) == 1

    # -- outbox ------------------------------------------------------------------------------------

    async def outbox_add(self, user: str, replies: tuple[Reply, ...], push: str, now: float,
                         send_as: str | None = None) -> list[OutboxItem]:
        if not replies:
            return []
        # One statement for all of them: stored together, and under the write lock their AUTOINCREMENT ids
        # are consecutive, in VALUES order, ending at last_insert_rowid() (RETURNING would need sqlite 3.35).
        params: list[Any] = []
        for reply in replies:
            params += [user, json.dumps(reply_to_dict(reply), ensure_ascii=False), push, now, send_as]
        async with self._use("outbox_add") as db:
            row = await db.execute_insert("INSERT INTO outbox (user, reply, push, created_at, send_as) VALUES "
                                          + ", ".join(["(?, ?, ?, ?, ?)"] * len(replies)), params)
        if row is None:
            raise StoreError("sqlite store: outbox_add returned no id")
        first = row[0] - len(replies) + 1
        return [OutboxItem(id=first + n, user=user, reply=r, push=push, created_at=now, send_as=send_as)
                for n, r in enumerate(replies)]

    async def outbox_update(self, item: OutboxItem) -> None:
        await self._write("outbox_update", "UPDATE outbox SET status = ?, attempts = ?, errcode = ?, error = ?, "
                          "next_try = ? WHERE id = ?",
                          (item.status, item.attempts, item.errcode, item.error, item.next_try, item.id))

    async def outbox_next(self, user: str) -> OutboxItem | None:
        rows = await self._fetch("outbox_next", f"SELECT {ITEM_COLUMNS} FROM outbox "
                                 "WHERE status = 'pending' AND user = ? ORDER BY id LIMIT 1", (user,))
        return _item(rows[0]) if rows else None

    async def outbox_users(self, limit: int = 1000) -> list[str]:
        rows = await self._fetch("outbox_users", "SELECT user FROM outbox WHERE status = 'pending' "
                                 "GROUP BY user ORDER BY MIN(id) LIMIT ?", (limit,))
        return [row[0] for row in rows]

    async def outbox_items(self, status: Status | None = None, user: str | None = None,
                           limit: int = 100) -> list[OutboxItem]:
        where = [sql for sql, arg in (("status = ?", status), ("user = ?", user)) if arg is not None]
        params = [arg for arg in (status, user) if arg is not None]
        rows = await self._fetch("outbox_items", f"SELECT {ITEM_COLUMNS} FROM outbox "
                                 f"{_where(where)} ORDER BY id DESC LIMIT ?", [*params, limit])
        return [_item(row) for row in rows]

    async def outbox_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for status, n in await self._fetch("outbox_counts", "SELECT status, COUNT(*) FROM outbox GROUP BY status"):
            counts[status] = n
        return counts

    async def outbox_oldest_pending(self) -> float | None:
        rows = await self._fetch("outbox_oldest_pending", "SELECT created_at FROM outbox "
                                 "WHERE status = 'pending' ORDER BY id LIMIT 1")
        return rows[0][0] if rows else None

    async def outbox_purge(self, before: float) -> int:
        """Delete finished (sent, failed, unsent) items created before `before`; return how many."""
        return await self._write("outbox_purge", "DELETE FROM outbox WHERE status != 'pending' AND created_at < ?",
                                 (before,))

    # -- log ---------------------------------------------------------------------------------------

    async def log_add(self, entries: list[LogEntry]) -> None:
        if not entries:
            return
        async with self._transaction("log_add") as db:
            await db.executemany(f"INSERT INTO log ({LOG_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                 [(e.ts, e.user, e.kind, e.msg_type, e.text, e.rule, e.errcode, e.detail)
                                  for e in entries])

    async def log_query(self, user: str | None = None, since: float | None = None, rule: str | None = None,
                        limit: int = 200) -> list[LogEntry]:
        tests = (("user = ?", user), ("ts >= ?", since), ("rule = ?", rule))
        where = [sql for sql, arg in tests if arg is not None]
        params = [arg for _, arg in tests if arg is not None]
        rows = await self._fetch("log_query", f"SELECT {LOG_COLUMNS} FROM log {_where(where)} "
                                 "ORDER BY ts DESC, id DESC LIMIT ?", [*params, limit])
        return [LogEntry(*row) for row in reversed(rows)]  # the newest `limit`, oldest first

    async def log_purge(self, before: float) -> int:
        return await self._write("log_purge", "DELETE FROM log WHERE ts < ?", (before,))


def _where(conditions: list[str]) -> str:
    return f"WHERE {' AND '.join(conditions)}" if conditions else ""


def _item(row: Sequence[Any]) -> OutboxItem:
    try:
        reply = reply_from_dict(json.loads(row[2]))
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"sqlite store: outbox item {row[0]} holds no reply kefu can read") from exc
    return OutboxItem(id=row[0], user=row[1], reply=reply, push=row[3], created_at=row[4], send_as=row[5],
                      status=row[6], attempts=row[7], errcode=row[8], error=row[9], next_try=row[10])
