"""The Redis store's Lua scripts, the encodings they share with bot/store/redis.py, and the translation of
Redis's errors into StoreError.

Changes to several keys run as one script (one round trip), so every instance sees them whole. Scripts that
read items return each as one JSON array (built by the item() Lua function), decoded with one json.loads.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Awaitable, Callable, Coroutine
from hashlib import sha1
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from redis.exceptions import RedisError

from ..config import redact_url
from ..errors import StoreError
from ..messages import reply_from_dict
from .base import OutboxItem

_dumps = json.dumps
P = ParamSpec("P")
T = TypeVar("T")


class _Store(Protocol):
    url: str


S = TypeVar("S", bound=_Store)

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

SCRIPTS = {"touch_if": _TOUCH_IF, "delete_if": _DELETE_IF, "set_nx_get": _SET_NX_GET, "add": _OUTBOX_ADD,
            "update": _OUTBOX_UPDATE, "next": _OUTBOX_NEXT, "lane": _LANE_NEXT, "items": _OUTBOX_ITEMS,
            "purge": _OUTBOX_PURGE, "log_add": _LOG_ADD, "drop": _OUTBOX_DROP, "retry": _OUTBOX_RETRY,
            "get": _OUTBOX_GET, "hits_add": _HITS_ADD}
SHAS = {name: sha1(source.encode()).hexdigest() for name, source in SCRIPTS.items()}

def decode_item(raw: bytes) -> OutboxItem:
    """An item from the JSON array the item() Lua function builds."""
    try:
        id, status, user, push, created, send_as, reply, attempts, errcode, error, next_try = json.loads(raw)
        return OutboxItem(id=int(id), user=user, reply=reply_from_dict(reply), push=push, created_at=float(created),
                          send_as=send_as, status=status, attempts=int(attempts), errcode=errcode, error=error,
                          next_try=float(next_try))
    except (KeyError, TypeError, ValueError) as exc:
        id = raw[1:raw.find(b",")].decode(errors="replace")
        raise StoreError(f"redis: outbox item {id} is malformed ({exc!r})") from exc


def unread_fields(raw: bytes) -> tuple[str, str]:
    """attempts and errcode of an item decode_item() could not read, as far as they can be read (else 0, null)."""
    try:
        values = json.loads(raw)
        return str(int(values[7])), _dumps(values[8] if isinstance(values[8], int) else None)
    except (ValueError, TypeError, IndexError):
        return "0", "null"


def done_args(item: OutboxItem) -> list[Any]:
    """What update() needs to write back an item (after its keys)."""
    return [item.id, item.user, item.status, item.attempts, _dumps(item.errcode), _dumps(item.error),
            _dumps(float(item.next_try))]


def encode(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")  # any str round-trips, as in the memory store


def ms(ttl: float) -> int:
    """A ttl in whole milliseconds, rounded up, at least 1 (Redis refuses 0)."""
    return max(1, math.ceil(ttl * 1000))


def pairs(raw: Any) -> dict[bytes, bytes]:
    """HGETALL's answer as a dict, whether the client parsed it (RESP2: a dict) or not (a flat list)."""
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=True))


def guarded(method: Callable[Concatenate[S, P], Awaitable[T]]) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """Turn whatever Redis or the network raises into a StoreError with a short message."""

    @functools.wraps(method)
    async def run(self: S, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(self, *args, **kwargs)
        except (RedisError, OSError) as exc:  # OSError covers ConnectionError and TimeoutError
            detail = redact_url(str(exc).splitlines()[0][:200]) if str(exc) else type(exc).__name__
            raise StoreError(f"redis {redact_url(self.url)}: {method.__name__} failed: {detail}") from exc

    return run
