"""The Redis store: for a fleet of instances sharing one Redis (7 or later; a single server, not Cluster).

Every key starts with the prefix, so several bots can share one Redis:
- `claim:K`, `answer:K`, `kv:K` — dedupe claims, kept answers and the key-value space, expired by Redis;
- `outbox:seq` (the id counter), `outbox:item:ID` (a hash per item), `outbox:pending:USER` (a list of the
  user's pending ids, oldest first), `outbox:users` (users with pending items, scored by their oldest
  pending id), `outbox:ids` (every id, scored by itself) and `outbox:counts` (items per status);
- `log` (the conversation log, scored by ts) and `log:seq` (keeps equal entries apart).

Changes to several outbox keys run as Lua scripts, so every instance sees them whole (the scripts build item
keys from a prefix they are given: fine on a single Redis, not on Cluster).
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict
from typing import Any, Concatenate, ParamSpec, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from ..config import redact_url
from ..errors import StoreError
from ..messages import Reply, reply_from_dict, reply_to_dict
from .base import STATUSES, LogEntry, OutboxItem, Status
from .memory import KEEP_LOG

TIMEOUT = 2.0  # seconds to connect and to wait for an answer: an unreachable Redis fails fast
HEALTH_CHECK = 30  # seconds a pooled connection may sit idle before it is pinged on its next use
SCAN = 500  # ids or log entries read per round trip when scanning

P = ParamSpec("P")
T = TypeVar("T")

# Compare-and-set on a lock. KEYS: the lock. ARGV: the owner's value (and for touch_if the ttl in ms).
_TOUCH_IF = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_DELETE_IF = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"

# KEYS: seq, the user's pending list, users, ids, counts. ARGV: item key prefix, user, then the hash's
# user, push, created_at and send_as (JSON), then one reply (JSON) per item. Returns the first id.
_OUTBOX_ADD = """
local n = #ARGV - 6
local first = redis.call('INCRBY', KEYS[1], n) - n + 1
for i = 1, n do
  local id = first + i - 1
  redis.call('HSET', ARGV[1] .. id, 'user', ARGV[3], 'push', ARGV[4], 'created_at', ARGV[5], 'send_as', ARGV[6],
             'reply', ARGV[6 + i], 'status', 'pending', 'attempts', '0', 'errcode', 'null', 'error', 'null',
             'next_try', '0.0')
  redis.call('RPUSH', KEYS[2], id)
  redis.call('ZADD', KEYS[4], id, id)
end
redis.call('ZADD', KEYS[3], 'NX', first, ARGV[2])
redis.call('HINCRBY', KEYS[5], 'pending', n)
return first"""

# KEYS: the item, the user's pending list, users, counts. ARGV: id, user, status, attempts, errcode, error,
# next_try. A missing item is left alone; an item back in `pending` (a retry) rejoins the list in id order.
_OUTBOX_UPDATE = """
local old = redis.call('HGET', KEYS[1], 'status')
if not old then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'attempts', ARGV[4], 'errcode', ARGV[5], 'error', ARGV[6],
           'next_try', ARGV[7])
if old == ARGV[3] then return 1 end
redis.call('HINCRBY', KEYS[4], old, -1)
redis.call('HINCRBY', KEYS[4], ARGV[3], 1)
if old == 'pending' then
  redis.call('LREM', KEYS[2], 0, ARGV[1])
elseif ARGV[3] == 'pending' then
  local later = nil
  for _, other in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
    if tonumber(other) > tonumber(ARGV[1]) then later = other; break end end
  if later then redis.call('LINSERT', KEYS[2], 'BEFORE', later, ARGV[1]) else redis.call('RPUSH', KEYS[2], ARGV[1]) end
end
local head = redis.call('LINDEX', KEYS[2], 0)
if head then redis.call('ZADD', KEYS[3], head, ARGV[2]) else redis.call('ZREM', KEYS[3], ARGV[2]) end
return 1"""

# KEYS: the user's pending list. ARGV: item key prefix. Returns {id, the item's hash} or nil.
_OUTBOX_NEXT = """
local id = redis.call('LINDEX', KEYS[1], 0)
if not id then return false end
return {id, redis.call('HGETALL', ARGV[1] .. id)}"""

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


class RedisStore:
    kind = "redis"
    shared = True

    def __init__(self, url: str, prefix: str = "kefu:", clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self.prefix = prefix
        self._clock = clock  # unused: Redis expires keys on its own clock; kept for the common signature
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"RedisStore({redact_url(self.url)!r}, prefix={self.prefix!r})"

    async def open(self) -> None:
        """Set up the client and its pool; nothing connects until the first command."""
        try:
            self._client = aioredis.Redis.from_url(
                self.url, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT, health_check_interval=HEALTH_CHECK,
                # a dropped pooled connection is retried once; a timeout is not (the command may have run)
                retry=Retry(NoBackoff(), 1, (RedisConnectionError,)))
        except ValueError as exc:
            raise StoreError(f"redis {redact_url(self.url)}: {exc}") from exc
        self._scripts = {name: self._client.register_script(source) for name, source in [
            ("touch_if", _TOUCH_IF), ("delete_if", _DELETE_IF), ("add", _OUTBOX_ADD), ("update", _OUTBOX_UPDATE),
            ("next", _OUTBOX_NEXT), ("purge", _OUTBOX_PURGE)]}

    async def close(self) -> None:
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

    async def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        return await self._scripts[script](keys=keys, args=args, client=self._redis)

    # -- dedupe ----------------------------------------------------------------------------------------

    @_guarded
    async def claim(self, key: str, ttl: float) -> bool:
        return bool(await self._redis.set(f"{self.prefix}claim:{key}", b"1", nx=True, px=_ms(ttl)))

    @_guarded
    async def put_answer(self, key: str, answer: bytes, ttl: float) -> None:
        await self._redis.set(f"{self.prefix}answer:{key}", answer, px=_ms(ttl))

    @_guarded
    async def get_answer(self, key: str) -> bytes | None:
        return await self._redis.get(f"{self.prefix}answer:{key}")

    # -- key-value ---------------------------------------------------------------------------------

    @_guarded
    async def get(self, key: str) -> str | None:
        value = await self._redis.get(f"{self.prefix}kv:{key}")
        return None if value is None else value.decode("utf-8", "surrogatepass")

    @_guarded
    async def set(self, key: str, value: str, ttl: float | None = None) -> None:
        await self._redis.set(f"{self.prefix}kv:{key}", _b(value), px=None if ttl is None else _ms(ttl))

    @_guarded
    async def delete(self, key: str) -> None:
        await self._redis.delete(f"{self.prefix}kv:{key}")

    @_guarded
    async def set_if_absent(self, key: str, value: str, ttl: float) -> bool:
        return bool(await self._redis.set(f"{self.prefix}kv:{key}", _b(value), nx=True, px=_ms(ttl)))

    @_guarded
    async def touch_if(self, key: str, value: str, ttl: float) -> bool:
        return bool(await self._run("touch_if", [f"{self.prefix}kv:{key}"], [_b(value), _ms(ttl)]))

    @_guarded
    async def delete_if(self, key: str, value: str) -> bool:
        return bool(await self._run("delete_if", [f"{self.prefix}kv:{key}"], [_b(value)]))

    # -- outbox ------------------------------------------------------------------------------------
    # An item's hash holds every field JSON-encoded, except `status`, which the scripts compare.

    def _keys(self, *names: str) -> list[str]:
        return [f"{self.prefix}outbox:{name}" for name in names]

    def _item(self, id: int, raw: dict[bytes, bytes]) -> OutboxItem:
        try:
            f = {k.decode(): v.decode() for k, v in raw.items()}
            status: Status = f.pop("status")  # type: ignore[assignment]
            v = {k: json.loads(s) for k, s in f.items()}
            return OutboxItem(id=id, user=v["user"], reply=reply_from_dict(v["reply"]), push=v["push"],
                              created_at=float(v["created_at"]), send_as=v["send_as"], status=status,
                              attempts=int(v["attempts"]), errcode=v["errcode"], error=v["error"],
                              next_try=float(v["next_try"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"redis: outbox item {id} is malformed ({exc!r})") from exc

    @_guarded
    async def outbox_add(self, user: str, replies: tuple[Reply, ...], push: str, now: float,
                         send_as: str | None = None) -> list[OutboxItem]:
        if not replies:
            return []
        fields = [json.dumps(v) for v in (user, push, float(now), send_as)]
        encoded = [json.dumps(reply_to_dict(r)) for r in replies]
        first = int(await self._run("add", self._keys("seq", f"pending:{user}", "users", "ids", "counts"),
                                    [f"{self.prefix}outbox:item:", user, *fields, *encoded]))
        return [OutboxItem(id=first + i, user=user, reply=r, push=push, created_at=float(now), send_as=send_as)
                for i, r in enumerate(replies)]

    @_guarded
    async def outbox_update(self, item: OutboxItem) -> None:
        await self._run("update", self._keys(f"item:{item.id}", f"pending:{item.user}", "users", "counts"),
                        [item.id, item.user, item.status, item.attempts, json.dumps(item.errcode),
                         json.dumps(item.error), json.dumps(float(item.next_try))])

    @_guarded
    async def outbox_next(self, user: str) -> OutboxItem | None:
        found = await self._run("next", self._keys(f"pending:{user}"), [f"{self.prefix}outbox:item:"])
        if not found or not found[1]:
            return None
        return self._item(int(found[0]), dict(zip(found[1][::2], found[1][1::2], strict=True)))

    @_guarded
    async def outbox_users(self, limit: int = 1000) -> list[str]:
        if limit <= 0:
            return []
        return [u.decode() for u in await self._redis.zrange(self._keys("users")[0], 0, limit - 1)]

    @_guarded
    async def outbox_items(self, status: Status | None = None, user: str | None = None,
                           limit: int = 100) -> list[OutboxItem]:
        """Newest first. Filtered listings look at the newest 5 × limit items only (an admin view)."""
        if limit <= 0:
            return []
        scan = limit if status is None and user is None else limit * 5
        ids = [int(i) for i in await self._redis.zrange(self._keys("ids")[0], 0, scan - 1, desc=True)]
        async with self._redis.pipeline(transaction=False) as pipe:
            for id in ids:
                pipe.hgetall(f"{self.prefix}outbox:item:{id}")
            raws = await pipe.execute() if ids else []
        items = [self._item(id, raw) for id, raw in zip(ids, raws, strict=True) if raw]
        return [i for i in items if (status is None or i.status == status) and (user is None or i.user == user)][:limit]

    @_guarded
    async def outbox_counts(self) -> dict[str, int]:
        raw = await self._redis.hgetall(self._keys("counts")[0])
        return {status: max(0, int(raw.get(status.encode(), 0))) for status in STATUSES}

    @_guarded
    async def outbox_oldest_pending(self) -> float | None:
        oldest = await self._redis.zrange(self._keys("users")[0], 0, 0, withscores=True)
        if not oldest:
            return None
        created = await self._redis.hget(f"{self.prefix}outbox:item:{int(oldest[0][1])}", "created_at")
        return None if created is None else float(json.loads(created))

    @_guarded
    async def outbox_purge(self, before: float) -> int:
        """Delete finished (not pending) items created before `before`; return how many."""
        ids_key, counts_key = self._keys("ids", "counts")
        removed, after = 0, "-inf"
        while True:
            ids = await self._redis.zrange(ids_key, after, "+inf", byscore=True, offset=0, num=SCAN)
            if not ids:
                return removed
            n, stop = await self._run("purge", [ids_key, counts_key],
                                      [f"{self.prefix}outbox:item:", repr(float(before)), *ids])
            removed += int(n)
            if stop or len(ids) < SCAN:
                return removed
            after = f"({int(ids[-1])}"

    # -- log ---------------------------------------------------------------------------------------
    # Members are `SEQ:JSON`, the sequence zero-padded so that entries with equal ts stay in insertion order.

    @_guarded
    async def log_add(self, entries: list[LogEntry]) -> None:
        if not entries:
            return
        key = f"{self.prefix}log"
        last = int(await self._redis.incrby(f"{key}:seq", len(entries)))
        members = {f"{last - len(entries) + i + 1:016d}:{json.dumps(asdict(e))}": e.ts
                   for i, e in enumerate(entries)}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(key, members)
            pipe.zremrangebyrank(key, 0, -KEEP_LOG - 1)  # keep the newest KEEP_LOG, as the memory store does
            await pipe.execute()

    @_guarded
    async def log_query(self, user: str | None = None, since: float | None = None, rule: str | None = None,
                        limit: int = 200) -> list[LogEntry]:
        found: list[LogEntry] = []
        offset, low = 0, "-inf" if since is None else repr(float(since))
        while len(found) < limit:  # newest first, a page at a time, until `limit` entries match
            page = await self._redis.zrange(f"{self.prefix}log", "+inf", low, desc=True, byscore=True,
                                            offset=offset, num=SCAN)
            for member in page:
                entry = LogEntry(**json.loads(member.decode().split(":", 1)[1]))
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
