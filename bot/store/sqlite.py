"""The sqlite store: one file on one host, shared by every kefu process there (the embedded default).

Every call runs on the store's own thread, batched with the others queued at once into one transaction
(group commit, see sqlthread.py); a write is committed before its call returns. The schema and its
migrations are in sqlschema.py. Keys expire by an absolute `expires` (epoch seconds from the injected clock,
NULL = never): reads ignore expired rows, and the thread's periodic sweep deletes them. Finished outbox items
and log entries stay until purged by time. Backups and restores of the file: backup.py.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..errors import StoreError
from ..messages import Reply, reply_from_dict, reply_to_dict
from .base import STATUSES, LogEntry, LogKind, OutboxItem, RuleHits, Status, readable, unreadable
from .sqlschema import migrate
from .sqlthread import SqliteThread

TOTAL_DAY = "*"  # the `day` of a rule's running total in the hits table

ITEM_COLUMNS = "id, user, reply, push, created_at, send_as, status, attempts, errcode, error, next_try"
LOG_COLUMNS = "ts, user, kind, msg_type, text, rule, errcode, detail"
LIVE = "(expires IS NULL OR expires > ?)"  # a key that has not expired; binds now
SET_KV = ("INSERT INTO kv (key, value, expires) VALUES (?, ?, ?) "
          "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires = excluded.expires")
UPDATE_ITEM = "UPDATE outbox SET status = ?, attempts = ?, errcode = ?, error = ?, next_try = ? WHERE id = ?"
NEXT_ITEM = f"SELECT {ITEM_COLUMNS} FROM outbox WHERE status = 'pending' AND user = ? ORDER BY id LIMIT 1"

T = TypeVar("T")


class SqliteStore:
    kind = "sqlite"
    shared = True

    def __init__(self, path: str, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._thread: SqliteThread | None = None  # None: not open

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    async def open(self) -> None:
        if self._thread is not None:
            return
        self._thread = SqliteThread(self.path, self._clock, _purge_expired)
        self._thread.start()
        try:
            await self._call("open", migrate)  # the first call: after the thread has connected (or failed to)
        except BaseException:
            with contextlib.suppress(StoreError):
                await self.close()
            raise

    async def close(self) -> None:
        """Stop taking calls, let the thread finish those queued, close the file."""
        thread, self._thread = self._thread, None
        if thread is not None:
            await thread.stop()

    async def ping(self) -> bool:
        try:
            await self._fetch("ping", "SELECT 1")
        except StoreError:
            return False
        return True

    async def _call(self, what: str, op: Callable[[sqlite3.Connection], T], write: bool = True) -> T:
        """Run `op` on the store's thread (in a savepoint of the next batch); its result once committed."""
        if self._thread is None:  # never opened, or closed
            raise StoreError(f"sqlite store: {what}: not open")
        return await self._thread.call(what, op, write)

    async def _fetch(self, what: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return await self._call(what, lambda db: db.execute(sql, params).fetchall(), write=False)

    async def _write(self, what: str, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement; how many rows it changed (sqlite's changes())."""
        return await self._call(what, lambda db: db.execute(sql, params).rowcount)

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
        counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
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

    async def log_page(self, since: float, until: float, after: Any = None, limit: int = 5000,
                       kinds: tuple[LogKind, ...] | None = None) -> tuple[list[LogEntry], Any]:
        start, params = ("ts >= ?", [since]) if after is None else ("(ts, id) > (?, ?)", list(after))
        only = f" AND kind IN ({', '.join('?' * len(kinds))})" if kinds else ""
        rows = await self._fetch("log_page", f"SELECT id, {LOG_COLUMNS} FROM log WHERE {start} AND ts < ?{only} "
                                 "ORDER BY ts, id LIMIT ?", [*params, until, *(kinds or ()), limit])  # log_ts order
        return [LogEntry(*row[1:]) for row in rows], (rows[-1][1], rows[-1][0]) if len(rows) == limit else None

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


def _purge_expired(db: sqlite3.Connection, now: float) -> None:
    db.execute("DELETE FROM kv WHERE expires <= ?", (now,))
    db.execute("DELETE FROM answers WHERE expires <= ?", (now,))


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
