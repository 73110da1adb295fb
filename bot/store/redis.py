"""The Redis store: for a fleet of instances sharing one Redis (7 or later; a single server, not Cluster).

Every key starts with the prefix, so several bots can share one Redis:
- `claim:K`, `answer:K`, `kv:K` — dedupe claims, kept answers and the key-value space, expired by Redis;
- `outbox:seq` (the id counter), `outbox:item:ID` (a hash per item), `outbox:pending:USER` (a list of the
  user's pending ids, oldest first), `outbox:users` (users with pending items, scored by their oldest
  pending id), `outbox:ids` (every id, scored by itself), `outbox:counts` (items per status) and
  `outbox:added:LEN:USER:PUSH` (the first id a push's replies got, kept ADDED_TTL);
- `log` (the conversation log, scored by ts) and `log:seq` (keeps equal entries apart);
- `hits:total` and `hits:last` (rule → hits ever, rule → epoch of the latest) and `hits:day:YYYY-MM-DD`
  (rule → hits that local day, expiring after HIT_DAY_TTL).

Changes to several keys run as Lua scripts (bot/store/redis_scripts.py; they build item keys from a prefix
they are given: fine on a single Redis, not on Cluster). Commands that concurrent tasks issue in the same
tick of the event loop go to Redis as one pipeline (see _cmd).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import fields
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from ..config import redact_url
from ..errors import StoreError
from ..messages import Reply, reply_to_dict
from .base import STATUSES, LogEntry, LogKind, OutboxItem, RuleHits, Status, readable, unreadable
from .memory import KEEP_LOG
from .redis_scripts import SCRIPTS, SHAS, decode_item, done_args, encode, guarded, ms, pairs, unread_fields

TIMEOUT = 2.0  # seconds to connect and to wait for an answer: an unreachable Redis fails fast
POOL_SIZE = 64  # connections per process
HEALTH_CHECK = 30  # seconds a pooled connection may sit idle before it is pinged on its next use
SCAN = 500  # ids or log entries read per round trip when scanning
BATCH = 128  # at most this many commands per automatic pipeline
HIT_DAY_TTL = 8 * 86400  # seconds a day's hit counts are kept (only "today" is asked for)
ADDED_TTL = 300.0  # seconds a push's outbox_add is remembered (as long as server.DEDUPE_TTL keeps its answer)

Command = tuple[tuple[Any, ...], "asyncio.Future[Any]"]  # a command's arguments, and where its answer goes

_LOG_FIELDS = tuple(f.name for f in fields(LogEntry))
_dumps = json.dumps


class RedisStore:
    kind = "redis"
    shared = True

    def __init__(self, url: str, prefix: str = "kefu:", clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self.prefix = prefix
        self._clock = clock  # unused: Redis expires keys on its own clock; kept for the common signature
        self._client: aioredis.Redis | None = None
        self._kv, self._out, self._items = f"{prefix}kv:", f"{prefix}outbox:", f"{prefix}outbox:item:"
        self._open: list[Command] | None = None  # the batch being filled
        self._batches: set[asyncio.Task[None]] = set()
        self._token, self._claims = f"{secrets.token_hex(6)}:", itertools.count()

    def __repr__(self) -> str:
        return f"RedisStore({redact_url(self.url)!r}, prefix={self.prefix!r})"

    async def open(self) -> None:
        """Set up the client and its pool; nothing connects until the first command."""
        try:
            # one pool for the process; under load a command waits (up to TIMEOUT) for a free connection
            # instead of failing with "Too many connections"
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url, max_connections=POOL_SIZE, timeout=TIMEOUT, socket_connect_timeout=TIMEOUT,
                socket_timeout=TIMEOUT, health_check_interval=HEALTH_CHECK,
                # A dropped pooled connection is retried once; a timeout is not (the command may have run).
                # But a connection can also drop after Redis ran the commands and before their answers
                # arrived: then the whole batch (see _cmd) runs twice. So what a retry must not repeat is made
                # idempotent: outbox_add once per push (its script remembers the push), claim and
                # set_if_absent by their value (set_nx_get: finding its own value, the caller had set it).
                # lane_next, outbox_update, touch_if and the other SETs, GETs and reads are idempotent as they
                # are. What still repeats is harmless: log_add writes its entries twice (the log is for
                # reading), hits_add counts twice, delete_if, outbox_drop and outbox_retry answer False the
                # second time (the lock is released, the item dropped or retried all the same) and
                # outbox_purge under-counts.
                retry=Retry(NoBackoff(), 1, (RedisConnectionError,)))
            self._client = aioredis.Redis.from_pool(pool)  # the client owns the pool and closes it
        except ValueError as exc:
            raise StoreError(f"redis {redact_url(self.url)}: {exc}") from exc

    async def close(self) -> None:
        if self._batches:  # let commands already sent finish (each waits TIMEOUT at most)
            await asyncio.wait(set(self._batches))
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError, StoreError):  # StoreError: not open
            return False

    @property
    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            raise StoreError(f"{self!r} is not open")
        return self._client

    # Automatic pipelining: the commands that tasks issue in one tick of the event loop go to Redis together, as
    # one pipeline (not a transaction) on one pooled connection, and each caller gets its own reply or error.
    # Under load a command costs a fraction of a round trip; alone, it goes as it is (a tick later).

    async def _cmd(self, *args: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        batch = self._open
        if batch is None or len(batch) >= BATCH:  # a new batch, sent by a task once this tick is over
            batch = self._open = []
            task = future.get_loop().create_task(self._send(batch))
            self._batches.add(task)
            task.add_done_callback(functools.partial(self._sent, batch))
        batch.append((args, future))
        return await future

    async def _send(self, batch: list[Command]) -> None:
        if self._open is batch:
            self._open = None  # from now on commands go in a new batch
        batch = [(args, future) for args, future in batch if not future.done()]  # done: its caller was cancelled
        if not batch:
            return
        try:
            if len(batch) == 1:
                replies = [await self._redis.execute_command(*batch[0][0])]
            else:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for args, _ in batch:
                        pipe.execute_command(*args)
                    replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # the connection failed (or the store was closed): every caller hears of it
            replies = [exc] * len(batch)
        for (_, future), reply in zip(batch, replies, strict=True):
            if not future.done():
                (future.set_exception if isinstance(reply, Exception) else future.set_result)(reply)

    def _sent(self, batch: list[Command], task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        if self._open is batch:  # cancelled before it ran (the loop is closing)
            self._open = None
        for _, future in batch:  # cancelled while it ran
            future.cancel()

    async def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA a script, loading it first if Redis does not know it (a restart, SCRIPT FLUSH)."""
        try:
            return await self._cmd("EVALSHA", SHAS[script], len(keys), *keys, *args)
        except NoScriptError:
            await self._cmd("SCRIPT LOAD", SCRIPTS[script])
            return await self._cmd("EVALSHA", SHAS[script], len(keys), *keys, *args)

    # -- dedupe ----------------------------------------------------------------------------------------

    @guarded
    async def claim(self, key: str, ttl: float) -> bool:
        token = f"{self._token}{next(self._claims)}".encode()  # ours alone: see the retry in open()
        held = await self._run("set_nx_get", [f"{self.prefix}claim:{key}"], [token, ms(ttl)])
        return held is None or held == token

    @guarded
    async def put_answer(self, key: str, answer: bytes, ttl: float) -> None:
        await self._cmd("SET", f"{self.prefix}answer:{key}", answer, "PX", ms(ttl))

    @guarded
    async def get_answer(self, key: str) -> bytes | None:
        return await self._cmd("GET", f"{self.prefix}answer:{key}")

    # -- key-value ---------------------------------------------------------------------------------

    @guarded
    async def get(self, key: str) -> str | None:
        value = await self._cmd("GET", self._kv + key)
        return None if value is None else value.decode("utf-8", "surrogatepass")

    @guarded
    async def get_many(self, keys: list[str]) -> list[str | None]:
        if not keys:
            return []
        values = await self._cmd("MGET", *(self._kv + key for key in keys))
        return [None if v is None else v.decode("utf-8", "surrogatepass") for v in values]

    @guarded
    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        await self._cmd("SET", self._kv + key, encode(value), *(() if ttl is None else ("PX", ms(ttl))))

    @guarded
    async def delete(self, key: str) -> None:
        await self._cmd("DEL", self._kv + key)

    @guarded
    async def set_if_absent(self, key: str, value: str, ttl: float) -> bool:
        held = await self._run("set_nx_get", [self._kv + key], [encode(value), ms(ttl)])
        return held is None or held == encode(value)  # its own value: a retry of this call (see open()) had set it

    @guarded
    async def touch_if(self, key: str, value: str, ttl: float) -> bool:
        return bool(await self._run("touch_if", [self._kv + key], [encode(value), ms(ttl)]))

    @guarded
    async def delete_if(self, key: str, value: str) -> bool:
        return bool(await self._run("delete_if", [self._kv + key], [encode(value)]))

    # -- outbox ------------------------------------------------------------------------------------
    # An item's hash holds every field JSON-encoded, except `status`, which the scripts compare.

    @guarded
    async def outbox_add(self, user: str, replies: tuple[Reply, ...], push: str, now: float,
                         send_as: str | None = None) -> list[OutboxItem]:
        if not replies:
            return []
        created, out = float(now), self._out
        first = int(await self._run(
            "add", [f"{out}seq", f"{out}pending:{user}", f"{out}users", f"{out}ids", f"{out}counts",
                    f"{out}added:{len(user)}:{user}:{push}"],
            [self._items, user, _dumps(user), _dumps(push), _dumps(created), _dumps(send_as), ms(ADDED_TTL),
             *[_dumps(reply_to_dict(r)) for r in replies]]))
        return [OutboxItem(id=first + i, user=user, reply=r, push=push, created_at=created, send_as=send_as)
                for i, r in enumerate(replies)]  # the items as stored: built here, not read back

    @guarded
    async def outbox_update(self, item: OutboxItem) -> None:
        out = self._out
        await self._run("update", [f"{self._items}{item.id}", f"{out}pending:{item.user}", f"{out}users",
                                   f"{out}counts"], done_args(item))

    @guarded
    async def outbox_next(self, user: str) -> OutboxItem | None:
        found = await self._run("next", [f"{self._out}pending:{user}"], [self._items])
        return None if found is None else decode_item(found)

    @guarded
    async def lane_next(self, user: str, owner: str, lease: float,
                        done: OutboxItem | None = None) -> tuple[bool, OutboxItem | None]:
        out = self._out
        keys = [f"{self._kv}lane:{user}", f"{out}pending:{user}", f"{out}users", f"{out}counts"]
        args = [self._items, encode(owner), ms(lease)]
        if done is not None:
            keys += [f"{self._items}{done.id}", f"{out}pending:{done.user}"]
            args += done_args(done)
        base = 3  # the args before done's
        failed: set[int] = set()
        for _ in range(100):  # bounded: a store damaged in a way not foreseen must not spin the lane
            found = await self._run("lane", keys, args)
            if isinstance(found, int):
                return found == 1, None
            try:
                return True, decode_item(found)
            except StoreError as exc:  # a reply this kefu cannot read must not block the user's lane: fail it
                id = int(found[1:found.find(b",")])  # the lease is ours: the next step writes it back as failed
                if id in failed:  # still first in the list: its hash is no longer pending (a damaged store)
                    await self._cmd("LREM", f"{out}pending:{user}", 0, id)
                keys[4:] = [f"{self._items}{id}", f"{out}pending:{user}"]
                args[base:] = [id, user, "failed", *unread_fields(found), _dumps(unreadable(exc)), "0.0"]
                failed.add(id)
        raise StoreError(f"redis: the pending replies of a user could not be read ({len(failed)} left unreadable)")

    @guarded
    async def outbox_users(self, limit: int = 1000) -> list[str]:
        if limit <= 0:
            return []
        users = cast(list[bytes], await self._redis.zrange(f"{self._out}users", 0, limit - 1))
        return [u.decode() for u in users]

    @guarded
    async def outbox_items(self, status: Status | None = None, user: str | None = None,
                           limit: int = 100) -> list[OutboxItem]:
        """Newest first. Filtered listings look at the newest 5 × limit items only (an admin view)."""
        if limit <= 0:
            return []
        scan = limit if status is None and user is None else limit * 5
        items = readable((raw for raw in await self._run("items", [f"{self._out}ids"], [self._items, scan]) if raw),
                         decode_item, "redis")
        return [i for i in items if (status is None or i.status == status) and (user is None or i.user == user)][:limit]

    @guarded
    async def outbox_counts(self) -> dict[str, int]:
        raw = await self._redis.hgetall(f"{self._out}counts")
        return {status: max(0, int(raw.get(status.encode(), 0))) for status in STATUSES}

    @guarded
    async def outbox_oldest_pending(self) -> float | None:
        oldest = await self._redis.zrange(f"{self._out}users", 0, 0, withscores=True)
        created = oldest and await self._cmd("HGET", f"{self._items}{int(oldest[0][1])}", "created_at")
        return float(json.loads(created)) if created else None

    @guarded
    async def outbox_purge(self, before: float) -> int:
        """Delete finished (not pending) items created before `before`; return how many."""
        ids_key, counts_key = f"{self._out}ids", f"{self._out}counts"
        removed, after = 0, "-inf"
        while True:
            ids = cast(list[bytes], await self._redis.zrange(ids_key, after, "+inf", byscore=True, offset=0, num=SCAN))
            if not ids:
                return removed
            n, stop = await self._run("purge", [ids_key, counts_key], [self._items, repr(float(before)), *ids])
            removed += int(n)
            if stop or len(ids) < SCAN:
                return removed
            after = f"({int(ids[-1])}"

    @guarded
    async def outbox_get(self, id: int) -> OutboxItem | None:
        found = await self._run("get", [], [self._items, int(id)])
        return None if found is None else decode_item(found)

    @guarded
    async def outbox_retry(self, id: int, now: float) -> OutboxItem | None:
        item = await self.outbox_get(id)  # for its user (which never changes): the script checks the status
        if item is None or item.status != "failed":
            return None
        out = self._out
        found = await self._run("retry", [f"{self._items}{item.id}", f"{out}pending:{item.user}", f"{out}users",
                                          f"{out}counts"], [self._items, item.id, item.user, _dumps(float(now))])
        return None if found is None else decode_item(found)

    @guarded
    async def outbox_drop(self, id: int) -> bool:
        return bool(await self._run("drop", [f"{self._items}{int(id)}", f"{self._out}ids", f"{self._out}counts"],
                                    [int(id)]))

    # -- log ---------------------------------------------------------------------------------------

    @guarded
    async def log_add(self, entries: list[LogEntry]) -> None:
        if not entries:
            return
        args: list[Any] = [KEEP_LOG]  # keep the newest KEEP_LOG, as the memory store does
        for e in entries:
            args += (float(e.ts), _dumps({name: getattr(e, name) for name in _LOG_FIELDS}))
        await self._run("log_add", [f"{self.prefix}log", f"{self.prefix}log:seq"], args)

    @guarded
    async def log_query(self, user: str | None = None, since: float | None = None, rule: str | None = None,
                        limit: int = 200) -> list[LogEntry]:
        found: list[LogEntry] = []
        offset, low = 0, "-inf" if since is None else repr(float(since))
        while len(found) < limit:  # newest first, a page at a time, until `limit` entries match
            page = cast(list[bytes], await self._redis.zrange(f"{self.prefix}log", "+inf", low, desc=True,
                                                              byscore=True, offset=offset, num=SCAN))
            for member in page:
                entry = LogEntry(**json.loads(member[member.index(b":") + 1:]))
                if (user is None or entry.user == user) and (rule is None or entry.rule == rule):
                    found.append(entry)
                    if len(found) >= limit:
                        break
            if len(page) < SCAN:
                break
            offset += SCAN
        return found[::-1]

    @guarded
    async def log_page(self, since: float, until: float, after: Any = None, limit: int = 5000,
                       kinds: tuple[LogKind, ...] | None = None) -> tuple[list[LogEntry], Any]:
        low, high = repr(float(since)), f"({float(until)!r}"  # the cursor: an offset into the period
        page = cast(list[bytes], await self._redis.zrange(f"{self.prefix}log", low, high, byscore=True,
                                                          offset=after or 0, num=limit))
        entries = [LogEntry(**json.loads(member[member.index(b":") + 1:])) for member in page]
        found = entries if kinds is None else [e for e in entries if e.kind in kinds]
        return found, (after or 0) + limit if len(page) == limit else None

    @guarded
    async def log_purge(self, before: float) -> int:
        return int(await self._redis.zremrangebyscore(f"{self.prefix}log", "-inf", f"({float(before)!r}"))

    # -- rule hits ---------------------------------------------------------------------------------

    @guarded
    async def hits_add(self, counts: dict[str, tuple[int, float]], day: str) -> None:
        if not counts:
            return
        args: list[Any] = [HIT_DAY_TTL]
        for rule, (n, last) in counts.items():
            args += (encode(rule), int(n), repr(float(last)))
        hits = f"{self.prefix}hits:"
        await self._run("hits_add", [f"{hits}total", f"{hits}last", f"{hits}day:{day}"], args)

    @guarded
    async def hits(self, day: str) -> dict[str, RuleHits]:
        hits = f"{self.prefix}hits:"
        totals, lasts, today = (pairs(raw) for raw in await asyncio.gather(
            self._cmd("HGETALL", f"{hits}total"), self._cmd("HGETALL", f"{hits}last"),
            self._cmd("HGETALL", f"{hits}day:{day}")))  # one pipeline
        return {rule.decode("utf-8", "surrogatepass"): RuleHits(int(total), int(today.get(rule, 0)),
                                                                 float(lasts[rule]) if rule in lasts else None)
                for rule, total in totals.items()}
