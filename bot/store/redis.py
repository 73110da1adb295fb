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

Changes to several keys run as Lua scripts (one round trip each), so every instance sees them whole (the
scripts build item keys from a prefix they are given: fine on a single Redis, not on Cluster). Scripts that
read items return each as one JSON array, decoded with a single json.loads. Commands that concurrent tasks
issue in the same tick of the event loop go to Redis as one pipeline (see _cmd).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import fields
from hashlib import sha1
from typing import Any, Concatenate, ParamSpec, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from ..config import redact_url
from ..errors import StoreError
from ..messages import Reply, reply_from_dict, reply_to_dict
from .base import STATUSES, LogEntry, OutboxItem, RuleHits, Status, readable, unreadable
from .memory import KEEP_LOG

TIMEOUT = 2.0  # seconds to connect and to wait for an answer: an unreachable Redis fails fast
POOL_SIZE = 64  # connections per process
HEALTH_CHECK = 30  # seconds a pooled connection may sit idle before it is pinged on its next use
SCAN = 500  # ids or log entries read per round trip when scanning
BATCH = 128  # at most this many commands per automatic pipeline
HIT_DAY_TTL = 8 * 86400  # seconds a day's hit counts are kept (only "today" is asked for)
ADDED_TTL = 300.0  # seconds a push's outbox_add is remembered (as long as server.DEDUPE_TTL keeps its answer)

P = ParamSpec("P")
Command = tuple[tuple[Any, ...], "asyncio.Future[Any]"]  # a command's arguments, and where its answer goes
T = TypeVar("T")

# Compare-and-set on a lock. KEYS: the lock. ARGV: the owner's value (and for touch_if the ttl in ms).
_TOUCH_IF = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_DELETE_IF = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
# Set if absent, answering the value found (false: none, it is set now). SET … NX GET does this from Redis 7.0
# on; the script does it on the Redis 5 and 6 that hosted Redis still often is. ARGV: the value, the ttl in ms.
_SET_NX_GET = """local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false"""

# KEYS: seq, the user's pending list, users, ids, counts, the push's `added` key. ARGV: item key prefix, user,
# then the hash's user, push, created_at and send_as (JSON), how long to remember the push (ms), then one reply
# (JSON) per item. Returns the first id. Once per push: a push already added (a pipeline redis-py sent again
# after its connection dropped, see RedisStore.open) gets the first id it got then, and nothing is added.
_OUTBOX_ADD = """
local seen = redis.call('GET', KEYS[6])
if seen then return tonumber(seen) end
local n = #ARGV - 7
local first = redis.call('INCRBY', KEYS[1], n) - n + 1
for i = 1, n do
  local id = first + i - 1
  redis.call('HSET', ARGV[1] .. id, 'user', ARGV[3], 'push', ARGV[4], 'created_at', ARGV[5], 'send_as', ARGV[6],
             'reply', ARGV[7 + i], 'status', 'pending', 'attempts', '0', 'errcode', 'null', 'error', 'null',
             'next_try', '0.0')
  redis.call('RPUSH', KEYS[2], id)
  redis.call('ZADD', KEYS[4], id, id)
end
redis.call('ZADD', KEYS[3], 'NX', first, ARGV[2])
redis.call('HINCRBY', KEYS[5], 'pending', n)
redis.call('SET', KEYS[6], first, 'PX', ARGV[7])
return first"""

# Lua functions shared by several scripts (prepended to them; keys come from the scripts' KEYS).
# update(): write back an item. A missing item is left alone; an item back in `pending` (a retry) rejoins
# the user's list in id order.
_UPDATE_FN = """
local function update(item, pending, users, counts, id, user, status, attempts, errcode, err, next_try)
  local old = redis.call('HGET', item, 'status')
  if not old then return 0 end
  redis.call('HSET', item, 'status', status, 'attempts', attempts, 'errcode', errcode, 'error', err,
             'next_try', next_try)
  if old == status then return 1 end
  redis.call('HINCRBY', counts, old, -1); redis.call('HINCRBY', counts, status, 1)
  if old == 'pending' then
    redis.call('LREM', pending, 0, id)
  elseif status == 'pending' then
    local later = nil
    for _, other in ipairs(redis.call('LRANGE', pending, 0, -1)) do
      if tonumber(other) > tonumber(id) then later = other; break end end
    if later then redis.call('LINSERT', pending, 'BEFORE', later, id) else redis.call('RPUSH', pending, id) end
  end
  local head = redis.call('LINDEX', pending, 0)
  if head then redis.call('ZADD', users, head, user) else redis.call('ZREM', users, user) end
  return 1
end
"""
# item(): an item as the JSON array [id, status, user, push, created_at, send_as, reply, attempts, errcode,
# error, next_try] (the hash holds them JSON-encoded but for status), or false if it is missing.
_ITEM_FN = """
local function item(prefix, id)
  local v = redis.call('HMGET', prefix .. id, 'status', 'user', 'push', 'created_at', 'send_as', 'reply',
                       'attempts', 'errcode', 'error', 'next_try')
  if not v[1] then return false end
  for i = 2, #v do if not v[i] then v[i] = '' end end  -- a damaged hash: Python reports it as malformed
  return '[' .. id .. ',"' .. v[1] .. '",' .. table.concat(v, ',', 2) .. ']'
end
"""

# KEYS: the item, the user's pending list, users, counts. ARGV: id, user, status, attempts, errcode, error, next_try.
_OUTBOX_UPDATE = _UPDATE_FN + "return update(KEYS[1], KEYS[2], KEYS[3], KEYS[4], unpack(ARGV, 1, 7))"

# KEYS: the user's pending list. ARGV: item key prefix. Returns the oldest pending item or nil.
_OUTBOX_NEXT = _ITEM_FN + """
local id = redis.call('LINDEX', KEYS[1], 0)
return id and item(ARGV[1], id)"""

# KEYS: the lane lease, the user's pending list, users, counts[, done's item, done's pending list]. ARGV: item
# key prefix, owner, lease (ms)[, done's id, user, status, attempts, errcode, error, next_try]. Returns 0
# (another owner holds the lease), 1 (nothing pending: the lease is released) or the user's oldest item.
# `done` is written only where a lane that lost its lease cannot undo another's work (see Store.lane_next):
# never over a sent item; a pending one (to be retried) only over a pending item and only by the holder.
_LANE_NEXT = _UPDATE_FN + _ITEM_FN + """
local holder = redis.call('GET', KEYS[1])
local mine = not holder or holder == ARGV[2]
if KEYS[6] then
  local now = redis.call('HGET', KEYS[5], 'status')
  if now and now ~= 'sent' and (ARGV[6] ~= 'pending' or (now == 'pending' and mine)) then
    update(KEYS[5], KEYS[6], KEYS[3], KEYS[4], unpack(ARGV, 4, 10))
  end
end
if not mine then return 0 end
local id = redis.call('LINDEX', KEYS[2], 0)
local found = id and item(ARGV[1], id)
if not found then redis.call('DEL', KEYS[1]); return 1 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return found"""

# KEYS: ids. ARGV: item key prefix, how many. The newest items, newest first (nil for a missing one).
_OUTBOX_ITEMS = _ITEM_FN + """
local out = {}
for i, id in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)) do out[i] = item(ARGV[1], id) end
return out"""

# KEYS: ids, counts. ARGV: item key prefix, before, ids. Returns {deleted, 1 if an item from `before` on
# was seen (ids follow creation, so the caller can stop)}.
_OUTBOX_PURGE = """
local n, stop = 0, 0
for i = 3, #ARGV do
  local key = ARGV[1] .. ARGV[i]
  local status, created = unpack(redis.call('HMGET', key, 'status', 'created_at'))
  if status and tonumber(created) >= tonumber(ARGV[2]) then stop = 1
  elseif status and status ~= 'pending' then
    redis.call('DEL', key); redis.call('ZREM', KEYS[1], ARGV[i]); redis.call('HINCRBY', KEYS[2], status, -1); n = n + 1
  end
end
return {n, stop}"""

# KEYS: log, log:seq. ARGV: how many entries to keep, then ts and JSON of each entry. Members are `SEQ:JSON`,
# the sequence zero-padded so that entries with equal ts stay in insertion order.
_LOG_ADD = """
local n = (#ARGV - 1) / 2
local first = redis.call('INCRBY', KEYS[2], n) - n
for i = 1, n do redis.call('ZADD', KEYS[1], ARGV[2*i], string.format('%016d', first + i) .. ':' .. ARGV[2*i + 1]) end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[1]) - 1)
return n"""

# KEYS: the item, ids, counts. ARGV: id. Deletes the item if it is failed; 1 if it did.
_OUTBOX_DROP = """
if redis.call('HGET', KEYS[1], 'status') ~= 'failed' then return 0 end
redis.call('DEL', KEYS[1]); redis.call('ZREM', KEYS[2], ARGV[1]); redis.call('HINCRBY', KEYS[3], 'failed', -1)
return 1"""

# KEYS: the item, the user's pending list, users, counts. ARGV: item key prefix, id, user, next_try (JSON).
# A failed item back to pending (attempts 0, no error); the item as item() returns it, or false.
_OUTBOX_RETRY = _UPDATE_FN + _ITEM_FN + """
if redis.call('HGET', KEYS[1], 'status') ~= 'failed' then return false end
update(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[2], ARGV[3], 'pending', '0', 'null', 'null', ARGV[4])
return item(ARGV[1], ARGV[2])"""

# ARGV: item key prefix, id. The item, or false.
_OUTBOX_GET = _ITEM_FN + "return item(ARGV[1], ARGV[2])"

# KEYS: hits:total, hits:last, hits:day:DAY. ARGV: the day key's ttl (s), then rule, count, last for each rule.
_HITS_ADD = """
for i = 2, #ARGV, 3 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1])
  local last = redis.call('HGET', KEYS[2], ARGV[i])
  if not last or tonumber(last) < tonumber(ARGV[i + 2]) then redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2]) end
end
redis.call('EXPIRE', KEYS[3], ARGV[1])
return 1"""

_SCRIPTS = {"touch_if": _TOUCH_IF, "delete_if": _DELETE_IF, "set_nx_get": _SET_NX_GET, "add": _OUTBOX_ADD,
            "update": _OUTBOX_UPDATE, "next": _OUTBOX_NEXT, "lane": _LANE_NEXT, "items": _OUTBOX_ITEMS,
            "purge": _OUTBOX_PURGE, "log_add": _LOG_ADD, "drop": _OUTBOX_DROP, "retry": _OUTBOX_RETRY,
            "get": _OUTBOX_GET, "hits_add": _HITS_ADD}
_SHAS = {name: sha1(source.encode()).hexdigest() for name, source in _SCRIPTS.items()}
_LOG_FIELDS = tuple(f.name for f in fields(LogEntry))
_dumps = json.dumps


def _guarded(method: Callable[Concatenate[RedisStore, P], Awaitable[T]]
             ) -> Callable[Concatenate[RedisStore, P], Coroutine[Any, Any, T]]:
    """Turn whatever Redis or the network raises into a StoreError with a short message."""

    @functools.wraps(method)
    async def run(self: RedisStore, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(self, *args, **kwargs)
        except (RedisError, OSError) as exc:  # OSError covers ConnectionError and TimeoutError
            detail = redact_url(str(exc).splitlines()[0][:200]) if str(exc) else type(exc).__name__
            raise StoreError(f"redis {redact_url(self.url)}: {method.__name__} failed: {detail}") from exc

    return run


def _b(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")  # any str round-trips, as in the memory store


def _ms(ttl: float) -> int:
    """A ttl in whole milliseconds, rounded up, at least 1 (Redis refuses 0)."""
    return max(1, math.ceil(ttl * 1000))


def _item(raw: bytes) -> OutboxItem:
    """An item from the JSON array the item() Lua function builds."""
    try:
        id, status, user, push, created, send_as, reply, attempts, errcode, error, next_try = json.loads(raw)
        return OutboxItem(id=int(id), user=user, reply=reply_from_dict(reply), push=push, created_at=float(created),
                          send_as=send_as, status=status, attempts=int(attempts), errcode=errcode, error=error,
                          next_try=float(next_try))
    except (KeyError, TypeError, ValueError) as exc:
        id = raw[1:raw.find(b",")].decode(errors="replace")
        raise StoreError(f"redis: outbox item {id} is malformed ({exc!r})") from exc


def _unread_fields(raw: bytes) -> tuple[str, str]:
    """attempts and errcode of an item _item() could not read, as far as they can be read (else 0, null)."""
    try:
        values = json.loads(raw)
        return str(int(values[7])), _dumps(values[8] if isinstance(values[8], int) else None)
    except (ValueError, TypeError, IndexError):
        return "0", "null"


def _done_args(item: OutboxItem) -> list[Any]:
    """What update() needs to write back an item (after its keys)."""
    return [item.id, item.user, item.status, item.attempts, _dumps(item.errcode), _dumps(item.error),
            _dumps(float(item.next_try))]


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
            return await self._cmd("EVALSHA", _SHAS[script], len(keys), *keys, *args)
        except NoScriptError:
            await self._cmd("SCRIPT LOAD", _SCRIPTS[script])
            return await self._cmd("EVALSHA", _SHAS[script], len(keys), *keys, *args)

    # -- dedupe ----------------------------------------------------------------------------------------

    @_guarded
    async def claim(self, key: str, ttl: float) -> bool:
        token = f"{self._token}{next(self._claims)}".encode()  # ours alone: see the retry in open()
        held = await self._run("set_nx_get", [f"{self.prefix}claim:{key}"], [token, _ms(ttl)])
        return held is None or held == token

    @_guarded
    async def put_answer(self, key: str, answer: bytes, ttl: float) -> None:
        await self._cmd("SET", f"{self.prefix}answer:{key}", answer, "PX", _ms(ttl))

    @_guarded
    async def get_answer(self, key: str) -> bytes | None:
        return await self._cmd("GET", f"{self.prefix}answer:{key}")

    # -- key-value ---------------------------------------------------------------------------------

    @_guarded
    async def get(self, key: str) -> str | None:
        value = await self._cmd("GET", self._kv + key)
        return None if value is None else value.decode("utf-8", "surrogatepass")

    @_guarded
    async def get_many(self, keys: list[str]) -> list[str | None]:
        if not keys:
            return []
        values = await self._cmd("MGET", *(self._kv + key for key in keys))
        return [None if v is None else v.decode("utf-8", "surrogatepass") for v in values]

    @_guarded
    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        await self._cmd("SET", self._kv + key, _b(value), *(() if ttl is None else ("PX", _ms(ttl))))

    @_guarded
    async def delete(self, key: str) -> None:
        await self._cmd("DEL", self._kv + key)

    @_guarded
    async def set_if_absent(self, key: str, value: str, ttl: float) -> bool:
        held = await self._run("set_nx_get", [self._kv + key], [_b(value), _ms(ttl)])
        return held is None or held == _b(value)  # its own value: a retry of this call (see open()) had set it

    @_guarded
    async def touch_if(self, key: str, value: str, ttl: float) -> bool:
        return bool(await self._run("touch_if", [self._kv + key], [_b(value), _ms(ttl)]))

    @_guarded
    async def delete_if(self, key: str, value: str) -> bool:
        return bool(await self._run("delete_if", [self._kv + key], [_b(value)]))

    # -- outbox ------------------------------------------------------------------------------------
    # An item's hash holds every field JSON-encoded, except `status`, which the scripts compare.

    @_guarded
    async def outbox_add(self, user: str, replies: tuple[Reply, ...], push: str, now: float,
                         send_as: str | None = None) -> list[OutboxItem]:
        if not replies:
            return []
        created, out = float(now), self._out
        first = int(await self._run(
            "add", [f"{out}seq", f"{out}pending:{user}", f"{out}users", f"{out}ids", f"{out}counts",
                    f"{out}added:{len(user)}:{user}:{push}"],
            [self._items, user, _dumps(user), _dumps(push), _dumps(created), _dumps(send_as), _ms(ADDED_TTL),
             *[_dumps(reply_to_dict(r)) for r in replies]]))
        return [OutboxItem(id=first + i, user=user, reply=r, push=push, created_at=created, send_as=send_as)
                for i, r in enumerate(replies)]  # the items as stored: built here, not read back

    @_guarded
    async def outbox_update(self, item: OutboxItem) -> None:
        out = self._out
        await self._run("update", [f"{self._items}{item.id}", f"{out}pending:{item.user}", f"{out}users",
                                   f"{out}counts"], _done_args(item))

    @_guarded
    async def outbox_next(self, user: str) -> OutboxItem | None:
        found = await self._run("next", [f"{self._out}pending:{user}"], [self._items])
        return None if found is None else _item(found)

    @_guarded
    async def lane_next(self, user: str, owner: str, lease: float,
                        done: OutboxItem | None = None) -> tuple[bool, OutboxItem | None]:
        out = self._out
        keys = [f"{self._kv}lane:{user}", f"{out}pending:{user}", f"{out}users", f"{out}counts"]
        args = [self._items, _b(owner), _ms(lease)]
        if done is not None:
            keys += [f"{self._items}{done.id}", f"{out}pending:{done.user}"]
            args += _done_args(done)
        base = 3  # the args before done's
        failed: set[int] = set()
        for _ in range(100):  # bounded: a store damaged in a way not foreseen must not spin the lane
            found = await self._run("lane", keys, args)
            if isinstance(found, int):
                return found == 1, None
            try:
                return True, _item(found)
            except StoreError as exc:  # a reply this kefu cannot read must not block the user's lane: fail it
                id = int(found[1:found.find(b",")])  # the lease is ours: the next step writes it back as failed
                if id in failed:  # still first in the list: its hash is no longer pending (a damaged store)
                    await self._cmd("LREM", f"{out}pending:{user}", 0, id)
                keys[4:] = [f"{self._items}{id}", f"{out}pending:{user}"]
                args[base:] = [id, user, "failed", *_unread_fields(found), _dumps(unreadable(exc)), "0.0"]
                failed.add(id)
        raise StoreError(f"redis: the pending replies of a user could not be read ({len(failed)} left unreadable)")

    @_guarded
    async def outbox_users(self, limit: int = 1000) -> list[str]:
        if limit <= 0:
            return []
        return [u.decode() for u in await self._redis.zrange(f"{self._out}users", 0, limit - 1)]

    @_guarded
    async def outbox_items(self, status: Status | None = None, user: str | None = None,
                           limit: int = 100) -> list[OutboxItem]:
        """Newest first. Filtered listings look at the newest 5 × limit items only (an admin view)."""
        if limit <= 0:
            return []
        scan = limit if status is None and user is None else limit * 5
        items = readable((raw for raw in await self._run("items", [f"{self._out}ids"], [self._items, scan]) if raw),
                         _item, "redis")
        return [i for i in items if (status is None or i.status == status) and (user is None or i.user == user)][:limit]

    @_guarded
    async def outbox_counts(self) -> dict[str, int]:
        raw = await self._redis.hgetall(f"{self._out}counts")
        return {status: max(0, int(raw.get(status.encode(), 0))) for status in STATUSES}

    @_guarded
    async def outbox_oldest_pending(self) -> float | None:
        oldest = await self._redis.zrange(f"{self._out}users", 0, 0, withscores=True)
        created = oldest and await self._cmd("HGET", f"{self._items}{int(oldest[0][1])}", "created_at")
        return float(json.loads(created)) if created else None

    @_guarded
    async def outbox_purge(self, before: float) -> int:
        """Delete finished (not pending) items created before `before`; return how many."""
        ids_key, counts_key = f"{self._out}ids", f"{self._out}counts"
        removed, after = 0, "-inf"
        while True:
            ids = await self._redis.zrange(ids_key, after, "+inf", byscore=True, offset=0, num=SCAN)
            if not ids:
                return removed
            n, stop = await self._run("purge", [ids_key, counts_key], [self._items, repr(float(before)), *ids])
            removed += int(n)
            if stop or len(ids) < SCAN:
                return removed
            after = f"({int(ids[-1])}"

    @_guarded
    async def outbox_get(self, id: int) -> OutboxItem | None:
        found = await self._run("get", [], [self._items, int(id)])
        return None if found is None else _item(found)

    @_guarded
    async def outbox_retry(self, id: int, now: float) -> OutboxItem | None:
        item = await self.outbox_get(id)  # for its user (which never changes): the script checks the status
        if item is None or item.status != "failed":
            return None
        out = self._out
        found = await self._run("retry", [f"{self._items}{item.id}", f"{out}pending:{item.user}", f"{out}users",
                                          f"{out}counts"], [self._items, item.id, item.user, _dumps(float(now))])
        return None if found is None else _item(found)

    @_guarded
    async def outbox_drop(self, id: int) -> bool:
        return bool(await self._run("drop", [f"{self._items}{int(id)}", f"{self._out}ids", f"{self._out}counts"],
                                    [int(id)]))

    # -- log ---------------------------------------------------------------------------------------

    @_guarded
    async def log_add(self, entries: list[LogEntry]) -> None:
        if not entries:
            return
        args: list[Any] = [KEEP_LOG]  # keep the newest KEEP_LOG, as the memory store does
        for e in entries:
            args += (float(e.ts), _dumps({name: getattr(e, name) for name in _LOG_FIELDS}))
        await self._run("log_add", [f"{self.prefix}log", f"{self.prefix}log:seq"], args)

    @_guarded
    async def log_query(self, user: str | None = None, since: float | None = None, rule: str | None = None,
                        limit: int = 200) -> list[LogEntry]:
        found: list[LogEntry] = []
        offset, low = 0, "-inf" if since is None else repr(float(since))
        while len(found) < limit:  # newest first, a page at a time, until `limit` entries match
            page = await self._redis.zrange(f"{self.prefix}log", "+inf", low, desc=True, byscore=True,
                                            offset=offset, num=SCAN)
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

    @_guarded
    async def log_purge(self, before: float) -> int:
        return int(await self._redis.zremrangebyscore(f"{self.prefix}log", "-inf", f"({float(before)!r}"))

    # -- rule hits ---------------------------------------------------------------------------------

    @_guarded
    async def hits_add(self, counts: dict[str, tuple[int, float]], day: str) -> None:
        if not counts:
            return
        args: list[Any] = [HIT_DAY_TTL]
        for rule, (n, last) in counts.items():
            args += (_b(rule), int(n), repr(float(last)))
        hits = f"{self.prefix}hits:"
        await self._run("hits_add", [f"{hits}total", f"{hits}last", f"{hits}day:{day}"], args)

    @_guarded
    async def hits(self, day: str) -> dict[str, RuleHits]:
        hits = f"{self.prefix}hits:"
        totals, lasts, today = (_pairs(raw) for raw in await asyncio.gather(
            self._cmd("HGETALL", f"{hits}total"), self._cmd("HGETALL", f"{hits}last"),
            self._cmd("HGETALL", f"{hits}day:{day}")))  # one pipeline
        return {rule.decode("utf-8", "surrogatepass"): RuleHits(int(total), int(today.get(rule, 0)),
                                                                 float(lasts[rule]) if rule in lasts else None)
                for rule, total in totals.items()}


def _pairs(raw: Any) -> dict[bytes, bytes]:
    """HGETALL's answer as a dict, whether the client parsed it (RESP2: a dict) or not (a flat list)."""
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=True))
