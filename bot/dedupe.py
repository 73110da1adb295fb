"""WeChat retries a push it got no answer to within 5 s. Every delivery of one push must get the same answer,
and only the first may run the rules and send.

The first delivery claims the push's key and gets a Future to resolve with its answer; a retry that arrives
meanwhile (or within `ttl` seconds after) waits for that Future instead of deciding again.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Dedupe(Generic[T]):
    def __init__(self, ttl: float = 300.0, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self.clock = clock
        self._seen: OrderedDict[str, tuple[float, asyncio.Future[T]]] = OrderedDict()

    def claim(self, key: str) -> tuple[bool, asyncio.Future[T]]:
        """(True, a new future) for the first delivery; (False, the first's future) for a retry."""
        now = self.clock()
        self._expire(now)
        entry = self._seen.get(key)
        if entry is not None:
            return False, entry[1]
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._seen[key] = (now + self.ttl, future)
        return True, future

    def _expire(self, now: float) -> None:
        """Forget keys older than the TTL, in order. By time alone: a delivery still unanswered after the
        TTL (a stuck handler) must not keep every later key alive."""
        while self._seen:
            key, (expires, _) = next(iter(self._seen.items()))
            if expires > now:
                break
            del self._seen[key]

    def __len__(self) -> int:
        return len(self._seen)
