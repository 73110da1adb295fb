"""A semaphore for the send path, where every coroutine per send counts."""

from __future__ import annotations

import asyncio
import collections


class Slots:
    """A counting semaphore whose uncontended take is a plain call (asyncio.Semaphore's `async with` costs
    three coroutines per use). Waiters are served first come, first served; a freed slot goes straight to the
    next waiter.

        if not slots.take_now():
            await slots.take()
        try: ...
        finally: slots.give()
    """

    __slots__ = ("free", "_waiters")

    def __init__(self, count: int) -> None:
        self.free = count
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def take_now(self) -> bool:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        if self.take_now():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed a slot just as it was cancelled: pass it on
            raise

    def give(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot changes hands: `free` stays as it is
                return
        self.free += 1
