"""Telling once that the store is down, and once that it is back: not once per push."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("bot.store")


class StoreHealth:
    def __init__(self) -> None:
        self.down_since: float | None = None
        self.failures = 0

    def failed(self, exc: Exception) -> None:
        self.failures += 1
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.error("store unreachable (%s): answering pushes without it — messages go to human agents, "
                      "events get success, nothing is sent", exc)

    def ok(self) -> None:
        if self.down_since is not None:
            log.warning("store reachable again after %.0f s (%d pushes answered without it)",
                        time.monotonic() - self.down_since, self.failures)
            self.down_since, self.failures = None, 0

    @property
    def up(self) -> bool:
        return self.down_since is None
