"""The access_token: one owner per process (and, with a shared store, one fetch at a time across instances).

The token is cached until shortly before it expires and refreshed by one request at a time, however many
sends are waiting for it. A refused fetch (a wrong secret, a missing IP whitelist entry, a proxy that wants
other credentials) is remembered for FAILED_FETCH_PAUSE seconds: the token API has a daily quota.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .errcodes import Verdict
from .errors import StoreError, WeChatAPIError
from .store.base import Store

log = logging.getLogger(__name__)

LOCK_TTL = 15.0  # seconds: the shared refresh lock (a token fetch takes well under that)
SHARED_POLL = 0.1  # seconds between looks for the token another instance is fetching
FAILED_FETCH_PAUSE = 30.0  # seconds to remember that WeChat refused a token (the token API has a quota)


class TokenSource(Protocol):
    """What fetches a fresh token: the API client."""

    def fetch_token(self) -> Awaitable[tuple[str, float]]: ...


class TokenManager:
    """Owns the access_token: one refresh at a time, cached until shortly before expiry.

    With a shared store (several instances, one appid), the token lives in the store too: an instance
    first adopts the shared token; only one instance at a time (a lock with expiry in the store) fetches a
    new one, the others wait for it. After a 40001, the shared token is read again before fetching: if
    another instance has refreshed meanwhile, its token is simply taken."""

    def __init__(self, api: TokenSource, appid: str, clock: Callable[[], float] = time.time,
                 store: Store | None = None):
        self._api = api
        self._clock = clock
        self._store = store if store is not None and store.shared else None
        self._key = f"wechat:token:{appid}"
        self._token: str | None = None
        self._expires_at = 0.0
        self._bad: str | None = None  # a token WeChat refused: never adopt it again from the store
        self._lock = asyncio.Lock()
        self._failure: tuple[float, WeChatAPIError] | None = None  # (until, error) of a refused fetch
        self.refreshes = 0

    def cached(self) -> str | None:
        """The token while it is fresh (every send but the first after a refresh), without awaiting."""
        token = self._token
        return token if token is not None and self._clock() < self._expires_at else None

    async def get(self) -> str:
        token = self._token
        if token is not None and self._clock() < self._expires_at:
            return token
        async with self._lock:
            if self._token is not None and self._clock() < self._expires_at:
                return self._token  # another waiter refreshed while we queued
            if self._failure is not None and self._clock() < self._failure[0]:
                raise self._failure[1]  # a wrong secret or a missing IP whitelist entry: don't hammer
            if self._store is not None and await self._adopt_shared():
                return self._token  # type: ignore[return-value]
            return await self._refresh()

    async def _refresh(self) -> str:
        owner = f"{id(self):x}-{time.monotonic_ns()}"
        locked = False
        if self._store is not None:
            locked = await self.shared(self._store.set_if_absent(self._key + ":lock", owner, LOCK_TTL), True)
            if not locked:  # another instance is fetching: wait for its token
                deadline = time.monotonic() + LOCK_TTL
                while time.monotonic() < deadline:
                    await asyncio.sleep(SHARED_POLL)
                    if await self._adopt_shared():
                        return self._token  # type: ignore[return-value]
        try:
            try:
                token, expires_in = await self._api.fetch_token()
            except WeChatAPIError as exc:
                if exc.verdict is not Verdict.TRANSIENT:
                    self._failure = (self._clock() + FAILED_FETCH_PAUSE, exc)
                raise
            self._failure, self._bad = None, None
            self.refreshes += 1
            margin = min(300.0, expires_in / 2)
            self._token, self._expires_at = token, self._clock() + expires_in - margin
            if self._store is not None:
                await self.shared(self._store.set(self._key, f"{token}\n{self._expires_at}", expires_in), None)
            return token
        finally:
            if locked and self._store is not None:
                await self.shared(self._store.delete_if(self._key + ":lock", owner), None)

    async def _adopt_shared(self) -> bool:
        assert self._store is not None
        value = await self.shared(self._store.get(self._key), None)
        if not value:
            return False
        token, _, expires = value.partition("\n")
        try:
            expires_at = float(expires)
        except ValueError:
            return False
        if token == self._bad or self._clock() >= expires_at:
            return False
        self._token, self._expires_at = token, expires_at
        return True

    async def shared(self, call: Any, fallback: Any) -> Any:
        """A store call that may fail: without the store, this instance manages its token alone."""
        try:
            return await call
        except StoreError as exc:
            log.warning("WeChat API: the store is unavailable for the shared access_token (%s)", exc)
            return fallback

    def invalidate(self, token: str) -> None:
        """Forget `token` if it is still the cached one (a concurrent refresh may have replaced it), and
        never adopt it from the store again."""
        self._bad = token
        if self._token == token:
            self._token, self._expires_at = None, 0.0
