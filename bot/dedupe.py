"""WeChat retries a push it got no answer to within 5 s. Every delivery of one push must get the same answer,
and only the first may run the rules and send.

The first delivery claims the push's key and gets a Future to resolve with its answer; a retry that arrives
meanwhile waits for that Future instead of deciding again. Once answered (`settle`), the key keeps only the
answer — for most pushes the one shared `success` — so that the window holds no Future per push for the
cycle collector to walk.

Keys are kept in generations: a new generation starts every `ttl / GENERATIONS` seconds and the oldest is
dropped whole, so a key is remembered for between `ttl` and `ttl` plus one generation, forgetting costs nothing
per push, and memory is bounded by the window, never by how long the process runs.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

GENERATIONS = 4
WINDOW = 75.0  # seconds: WeChat retries within ~15 s; its documents ask to remember keys at least a minute


class Dedupe(Generic[T]):
    def __init__(self, ttl: float = WINDOW, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self.clock = clock
        self.step = ttl / GENERATIONS
        self._generations: deque[tuple[float, dict[str, asyncio.Future[T] | T]]] = deque()

    def claim(self, key: str) -> tuple[bool, asyncio.Future[T]]:
        """(True, a new future) for the first delivery; (False, the first's future) for a retry."""
        now = self.clock()
        generations = self._generations
        if not generations or now - generations[-1][0] >= self.step:
            self._rotate(now)
        for _, seen in generations:
            entry = seen.get(key)
            if entry is not None:
                if isinstance(entry, asyncio.Future):
                    return False, entry
                done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
                done.set_result(entry)
                return False, done
        future = asyncio.get_running_loop().create_future()
        generations[-1][1][key] = future
        return True, future

    def settle(self, key: str, future: asyncio.Future[T], value: T) -> None:
        """Resolve the first delivery's future and keep only `value` for later retries."""
        if not future.done():
            future.set_result(value)
        for _, seen in reversed(self._generations):
            if seen.get(key) is future:
                seen[key] = value
                return

    def _rotate(self, now: float) -> None:
        """Start a generation; drop those that began more than ttl + one step ago. By time alone: a delivery
        still unanswered after the window (a stuck handler) must not keep later keys alive."""
        generations = self._generations
        generations.append((now, {}))
        while now - generations[0][0] > self.ttl + self.step:
            generations.popleft()

    def __len__(self) -> int:
        return sum(len(seen) for _, seen in self._generations)
