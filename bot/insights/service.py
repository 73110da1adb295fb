"""Reading a period of the conversation log and making its Report, off the event loop, cached per period.

The log is read a page at a time (Store.log_page): each page is one short store call, so pushes keep their
turn at the store between pages. Each page is tallied in a worker thread while the next one is read, and the
grouping runs there too: the event loop only awaits. A period's Report is kept for CACHE_FOR seconds (and
while the rules stay the same); asking again while it is being made waits for the same work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..config import Settings, parse_duration
from ..engine import RuleSet
from ..store import Store
from .figures import Report, Tally

PAGE = 5000  # log entries per store call
CACHE_FOR = 300.0  # seconds a period's report is reused
PERIODS = ("1d", "7d", "30d")  # the console's choices; `kefu report --since` takes any duration


class PeriodError(ValueError):
    """--since / ?since= is not a duration."""


@dataclass(frozen=True, slots=True)
class Period:
    name: str  # as shown: 7d
    seconds: int

    @classmethod
    def parse(cls, text: str, keep: int) -> Period:
        seconds = parse_duration(text)
        if not seconds:
            raise PeriodError(f"a period like 24h, 7d or 30d, not {text!r}")
        if seconds > keep:  # log.keep bounds what is analysed: older entries are gone or going
            return cls(f"{keep // 86400}d" if keep % 86400 == 0 else f"{keep}s", keep)
        return cls(text.strip(), seconds)


async def make_report(store: Store, settings: Settings, ruleset: RuleSet, period: Period, now: float) -> Report:
    """Read the period from the store and make its report; the tallying and grouping run in a worker thread."""
    tally = Tally(now - period.seconds, now, settings.timezone, frozenset(settings.insights.catch_all))
    after, adding = None, None
    while True:
        page, after = await store.log_page(tally.since, tally.until, after, PAGE)
        if adding is not None:
            await adding
        adding = asyncio.create_task(asyncio.to_thread(tally.add, page))  # while the next page is read
        if after is None:
            break
    await adding
    return await asyncio.to_thread(tally.report, period.name, ruleset, settings.insights.examples)


class Insights:
    """The console's reports, one per period, cached."""

    def __init__(self, store: Store, settings: Settings, rules: Callable[[], RuleSet],
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.settings, self.rules, self.clock = store, settings, rules, clock
        self._made: dict[str, tuple[float, str, Report]] = {}  # period → (when, rules version, report)
        self._making: dict[str, asyncio.Task[Report]] = {}

    def period(self, text: str) -> Period:
        return Period.parse(text, self.settings.log.keep)

    async def report(self, period: Period) -> Report:
        ruleset = self.rules()
        made = self._made.get(period.name)
        if made is not None and self.clock() - made[0] < CACHE_FOR and made[1] == ruleset.version:
            return made[2]
        task = self._making.get(period.name)
        if task is None:
            task = self._making[period.name] = asyncio.create_task(self._make(period, ruleset))
        return await asyncio.shield(task)  # a reader that goes away does not cancel the others' report

    async def _make(self, period: Period, ruleset: RuleSet) -> Report:
        try:
            now = self.clock()
            report = await make_report(self.store, self.settings, ruleset, period, now)
            self._made[period.name] = (now, ruleset.version, report)
            return report
        finally:
            self._making.pop(period.name, None)

    async def close(self) -> None:
        """Cancel reports being made (the app is stopping)."""
        for task in list(self._making.values()):
            task.cancel()
        await asyncio.gather(*self._making.values(), return_exceptions=True)
