"""The sqlite store: one file on one host, shared by every kefu process there (the embedded default).

Group commit: all I/O runs on the store's own thread (never on the event loop), which owns a plain sqlite3
connection. Callers queue small functions and await their answers; the thread runs everything queued at once
as ONE transaction, each call in a SAVEPOINT of its own (a call that fails is rolled back alone and its caller
gets StoreError; the others commit), and answers after COMMIT: a write is committed before its call returns.
A batch with a write begins IMMEDIATE, taking the file's write lock at once, so read-then-write calls (claim,
set_if_absent, lane_next) are atomic also against other processes. WAL lets readers and the one writer work at
once; `busy_timeout` makes a process wait for another's write instead of failing. Keys expire by an absolute
`expires` (epoch seconds from the injected clock, NULL = never): reads ignore expired rows, and every
PURGE_EVERY-th write deletes them. Finished outbox items and log entries stay until purged by time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any, NamedTuple, TypeVar

from ..errors import StoreError
from ..messages import Reply, reply_from_dict, reply_to_dict
from .base import STATUSES, LogEntry, OutboxItem, RuleHits, Status, readable, unreadable

SCHEMA_VERSION = 2  # PRAGMA user_version: raise it (and add the steps to MIGRATIONS) when the schema changes
BUSY_TIMEOUT_MS = 5000
PURGE_EVERY = 500  # writes between two sweeps of expired keys and answers
MAX_BATCH = 500  # calls per transaction: bounds how long one commit keeps other processes waiting

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
), (
    # rule hits: one row per rule and local day, and one per rule with day '*' holding the total
    """CREATE TABLE IF NOT EXISTS hits (
        rule TEXT NOT NULL, day TEXT NOT NULL, count INTEGER NOT NULL, last REAL NOT NULL,
        PRIMARY KEY (rule, day))""",
),)
TOTAL_DAY = "*"  # the `day` of a rule's running total in the hits table

ITEM_COLUMNS = "id, user, reply, push, created_at, send_as, status, attempts, errcode, error, next_try"
LOG_COLUMNS = "ts, user, kind, msg_type, text, rule, errcode, detail"
LIVE = "(expires IS NULL OR expires > ?)"  # a key that has not expired; binds now
SET_KV = ("INSERT INTO kv (key, value, expires) VALUES (?, ?, ?) "
          "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires = excluded.expires")
UPDATE_ITEM = "UPDATE outbox SET status = ?, attempts = ?, errcode = ?, error = ?, next_try = ? WHERE id = ?"
NEXT_ITEM = f"SELECT {ITEM_COLUMNS} FROM outbox WHERE status = 'pending' AND user = ? ORDER BY id LIMIT 1"

T = TypeVar("T")


class _Call(NamedTuple):
    """One call waiting for the store's thread: what to run there, and where its answer goes."""

    what: str
    op: Callable[[sqlite3.Connection], Any]
    write: bool  # False: it only reads (a batch of reads only begins DEFERRED and locks nobody out)
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


Outcome = tuple[_Call, Any, BaseException | None]  # (call, result, error)


class SqliteStore:
    kind = "sqlite"
    shared = True

    def __init__(self, path: str, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._queue: SimpleQueue[_Call | None] | None = None  # None: not open (None on the queue: stop)
        self._thread: threading.Thread | None = None
        self._writes = 0  # the thread's alone
        self._close_error: sqlite3.Error | None = None

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    async def open(self) -> None:
        if self._queue is not None:
            return
        queue: SimpleQueue[_Call | None] = SimpleQueue()
        self._queue, self._thread = queue, threading.Thread(target=self._serve, args=(queue,), daemon=True)
        self._thread.start()
        try:
            await self._call("open", _migrate)  # the first call: after the thread has connected (or failed to)
        except BaseException:
            with contextlib.suppress(StoreError):
                await self.close()
            raise

    async def close(self) -> None:
        """Stop taking calls, let the thread finish those queued, close the file."""
        queue, thread = self._queue, self._thread
        self._queue = self._thread = None
        if queue is None or thread is None:
            return
        queue.put(None)
        await asyncio.to_thread(thread.join)  # the calls queued before still run and are answered
        error, self._close_error = self._close_error, None
        if error is not None:
            raise StoreError(f"sqlite store: close failed: {error}") from error

    async def ping(self) -> bool:
        try:
            await self._fetch("ping", "SELECT 1")
        except StoreError:
            return False
        return True

    # -- plumbing: the event loop's side -------------------------------------------------------------

    async def _call(self, what: str, op: Callable[[sqlite3.Connection], T], write: bool = True) -> T:
        """Run `op` on the store's thread (in a savepoint of the next batch); its result once committed."""
        queue = self._queue
        if queue is None:  # never opened, or closed
            raise StoreError(f"sqlite store: {what}: not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        queue.put(_Call(what, op, write, loop, future))
        return await future

    async def _fetch(self, what: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return await self._call(what, lambda db: db.execute(sql, params).fetchall(), write=False)

    async def _write(self, what: str, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement; how many rows it changed (sqlite's changes())."""
        return await self._call(what, lambda db: db.execute(sql, params).rowcount)

    # -- plumbing: the store's thread ----------------------------------------------------------------

    def _serve(self, queue: SimpleQueue[_Call | None]) -> None:
        """The thread: open the file, run batches of calls until close() queues None, close the file."""
        db: sqlite3.Connection | None = None
        failure: StoreError | None = None
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            # Autocommit (isolation_level=None): _run says BEGIN itself. Only this thread uses the connection.
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")  # first: WAL may wait too
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
        except Exception as exc:  # OSError, sqlite3.Error, ValueError (a NUL in the path): the thread stays
            failure = StoreError(f"sqlite store: cannot open the file: {exc}")  # each call gets it, until close()
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            db = None
        stop = False
        while not stop:
            calls = [queue.get()]
            with contextlib.suppress(Empty):
                while len(calls) < MAX_BATCH and calls[-1] is not None:
                    calls.append(queue.get_nowait())
            stop = calls[-1] is None  # close() queues None last: the calls before it still run
            if batch := [call for call in calls if call is not None]:
                _deliver(self._run(db, batch) if db is not None else [(call, None, failure) for call in batch])
        if db is not None:
            try:
                db.close()
            except sqlite3.Error as exc:
                self._close_error = exc

    def _run(self, db: sqlite3.Connection, calls: list[_Call]) -> list[Outcome]:
        """One transaction for all `calls`, each in a savepoint: a call that raises is rolled back alone.
        If the transaction itself fails (BEGIN, COMMIT, or sqlite rolled it all back: disk full, I/O error),
        nothing of it was written and every call gets the error."""
        outcomes: list[Outcome] = []
        writes = sum(call.write for call in calls)
        try:
            db.execute("BEGIN IMMEDIATE" if writes else "BEGIN DEFERRED")
            for call in calls:
                if not call.future.cancelled():  # a racy look from this thread, good enough to skip the abandoned
                    outcomes.append((call, *_isolated(db, call.what, call.op)))
            if self._writes // PURGE_EVERY != (self._writes + writes) // PURGE_EVERY:
                now = self._clock()  # a sweep that fails is only skipped
                _isolated(db, "purge", lambda db: _purge_expired(db, now))
            db.execute("COMMIT")
        except Exception as exc:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            return [(call, None, _error(call.what, exc)) for call in calls]
        self._writes += writes
        return outcomes

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

    async def get_many(self, keys: list[str]) -> list[str | None]:
        if not keys:
            return []
        marks = ", ".join("?" * len(keys))
        rows = await self._fetch("get_many", f"SELECT key, value FROM kv WHERE key IN ({marks}) AND {LIVE}",
                                 (*keys, self._clock()))
        found = dict(rows)
        return [found.get(key) for key in keys]

    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        await self._write("set", SET_KV, (key, value, self._clock() + ttl if ttl is not None else None))

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
        # are consecutive, in VALUES order, ending at last_insert_rowid().
        params: list[Any] = []
        for reply in replies:
            params += [user, json.dumps(reply_to_dict(reply), ensure_ascii=False), push, now, send_as]
        sql = "INSERT INTO outbox (user, reply, push, created_at, send_as) VALUES " + ", ".join(
            ["(?, ?, ?, ?, ?)"] * len(replies))
        last = await self._call("outbox_add", lambda db: db.execute(sql, params).lastrowid)
        if not last:
            raise StoreError("sqlite store: outbox_add returned no id")
        first = last - len(replies) + 1
        return [OutboxItem(id=first + n, user=user, reply=r, push=push, created_at=now, send_as=send_as)
                for n, r in enumerate(replies)]

    async def outbox_update(self, item: OutboxItem) -> None:
        await self._write("outbox_update", UPDATE_ITEM, _update_params(item))

    async def outbox_next(self, user: str) -> OutboxItem | None:
        rows = await self._fetch("outbox_next", NEXT_ITEM, (user,))
        return _item(rows[0]) if rows else None

    async def lane_next(self, user: str, owner: str, lease: float,
                        done: OutboxItem | None = None) -> tuple[bool, OutboxItem | None]:
        key, now = f"lane:{user}", self._clock()

        def step(db: sqlite3.Connection) -> tuple[bool, OutboxItem | None]:  # one savepoint under the write lock
            holder = db.execute(f"SELECT value FROM kv WHERE key = ? AND {LIVE}", (key, now)).fetchone()
            mine = holder is None or holder[0] == owner
            if done is not None:  # what a lane that lost its lease may still write: see Store.lane_next
                if done.status != "pending":
                    db.execute(UPDATE_ITEM + " AND status != 'sent'", _update_params(done))
                elif mine:
                    db.execute(UPDATE_ITEM + " AND status = 'pending'", _update_params(done))
            if not mine:
                return False, None
            while (row := db.execute(NEXT_ITEM, (user,)).fetchone()) is not None:
                try:
                    item = _item(row)
                except StoreError as exc:  # a reply this kefu cannot read must not block the user's lane
                    db.execute("UPDATE outbox SET status = 'failed', error = ? WHERE id = ?", (unreadable(exc), row[0]))
                    continue
                db.execute(SET_KV, (key, owner, now + lease))
                return True, item
            db.execute("DELETE FROM kv WHERE key = ?", (key,))  # the lane is done: a new reply starts a new one
            return True, None

        return await self._call("lane_next", step)

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
        return readable(rows, _item, "sqlite")

    async def outbox_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for status, n in await self._fetch("outbox_counts", "SELECT status, COUNT(*) FROM outbox GROUP BY status"):
            counts[status] = n
        return counts

    async def outbox_oldest_pending(self) -> float | None:
        rows = await self._fetch("outbox_oldest_pending", "SELECT created_at FROM outbox "
                                 "WHERE status = 'pending' ORDER BY id LIMIT 1")
        return rows[0][0] if rows else None

    async def outbox_get(self, id: int) -> OutboxItem | None:
        rows = await self._fetch("outbox_get", f"SELECT {ITEM_COLUMNS} FROM outbox WHERE id = ?", (id,))
        return _item(rows[0]) if rows else None

    async def outbox_retry(self, id: int, now: float) -> OutboxItem | None:
        def retry(db: sqlite3.Connection) -> Any:
            changed = db.execute("UPDATE outbox SET status = 'pending', attempts = 0, errcode = NULL, error = NULL, "
                                 "next_try = ? WHERE id = ? AND status = 'failed'", (now, id)).rowcount
            return db.execute(f"SELECT {ITEM_COLUMNS} FROM outbox WHERE id = ?", (id,)).fetchone() if changed else None

        row = await self._call("outbox_retry", retry)
        return _item(row) if row is not None else None

    async def outbox_drop(self, id: int) -> bool:
        return await self._write("outbox_drop", "DELETE FROM outbox WHERE id = ? AND status = 'failed'", (id,)) == 1

    async def outbox_purge(self, before: float) -> int:
        """Delete finished (sent, failed, unsent) items created before `before`; return how many."""
        return await self._write("outbox_purge", "DELETE FROM outbox WHERE status != 'pending' AND created_at < ?",
                                 (before,))

    # -- log ---------------------------------------------------------------------------------------

    async def log_add(self, entries: list[LogEntry]) -> None:
        if not entries:
            return
        rows = [(e.ts, e.user, e.kind, e.msg_type, e.text, e.rule, e.errcode, e.detail) for e in entries]
        await self._call("log_add", lambda db: db.executemany(
            f"INSERT INTO log ({LOG_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows).rowcount)

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

    # -- rule hits ---------------------------------------------------------------------------------

    async def hits_add(self, counts: dict[str, tuple[int, float]], day: str) -> None:
        if not counts:
            return
        rows = [(rule, d, n, last) for rule, (n, last) in counts.items() for d in (day, TOTAL_DAY)]
        await self._call("hits_add", lambda db: db.executemany(
            "INSERT INTO hits (rule, day, count, last) VALUES (?, ?, ?, ?) ON CONFLICT (rule, day) DO UPDATE "
            "SET count = count + excluded.count, last = MAX(last, excluded.last)", rows).rowcount)

    async def hits(self, day: str) -> dict[str, RuleHits]:
        rows = await self._fetch("hits", "SELECT rule, day, count, last FROM hits WHERE day IN (?, ?)",
                                 (TOTAL_DAY, day))
        totals = {rule: (count, last) for rule, d, count, last in rows if d == TOTAL_DAY}
        today = {rule: count for rule, d, count, _ in rows if d != TOTAL_DAY}
        return {rule: RuleHits(total, today.get(rule, 0), last) for rule, (total, last) in totals.items()}


# -- helpers of the store's thread --------------------------------------------------------------------


def _error(what: str, exc: BaseException) -> BaseException:
    """What the caller gets: sqlite's failures as StoreError (without data in it); a bug as itself."""
    if not isinstance(exc, (sqlite3.Error, ValueError)):
        return exc
    error = StoreError(f"sqlite store: {what} failed: {exc}")
    error.__cause__ = exc
    return error


def _isolated(db: sqlite3.Connection, what: str,
              op: Callable[[sqlite3.Connection], Any]) -> tuple[Any, BaseException | None]:
    """Run `op` in a savepoint: (its result, None), or rolled back alone: (None, the error for its caller).
    Raises when sqlite has rolled back the whole transaction."""
    db.execute("SAVEPOINT call")
    try:
        result = op(db)
    except Exception as exc:
        if not db.in_transaction:
            raise
        db.execute("ROLLBACK TO call")
        db.execute("RELEASE call")
        return None, _error(what, exc)
    db.execute("RELEASE call")
    return result, None


def _purge_expired(db: sqlite3.Connection, now: float) -> None:
    db.execute("DELETE FROM kv WHERE expires <= ?", (now,))
    db.execute("DELETE FROM answers WHERE expires <= ?", (now,))


def _deliver(outcomes: list[Outcome]) -> None:
    """Complete the callers' futures: one wake-up per event loop for the whole batch."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits for these any more
            loop.call_soon_threadsafe(_settle, settled)


def _settle(outcomes: list[Outcome]) -> None:  # on the event loop
    for call, result, error in outcomes:
        if call.future.done():  # cancelled while its call ran
            pass
        elif error is None:
            call.future.set_result(result)
        else:
            call.future.set_exception(error)


def _migrate(db: sqlite3.Connection) -> None:
    """The schema, brought up to SCHEMA_VERSION (under the write lock: processes opening at once take turns)."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(f"sqlite store: schema {version} is newer than this kefu ({SCHEMA_VERSION})")
    for steps in MIGRATIONS[version:]:
        for sql in steps:
            db.execute(sql)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _where(conditions: list[str]) -> str:
    return f"WHERE {' AND '.join(conditions)}" if conditions else ""


def _update_params(item: OutboxItem) -> tuple[Any, ...]:
    return item.status, item.attempts, item.errcode, item.error, item.next_try, item.id


def _item(row: Sequence[Any]) -> OutboxItem:
    try:
        reply = reply_from_dict(json.loads(row[2]))
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"sqlite store: outbox item {row[0]} holds no reply kefu can read") from exc
    return OutboxItem(id=row[0], user=row[1], reply=reply, push=row[3], created_at=row[4], send_as=row[5],
                      status=row[6], attempts=row[7], errcode=row[8], error=row[9], next_try=row[10])
