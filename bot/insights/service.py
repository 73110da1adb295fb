"""Reading a period of the conversation log and making its Report, off the event loop, cached per period.

The log is read a page at a time (Store.log_page), each page one short store call, so that pushes keep
their turn at the store. For a store other processes can open (sqlite, redis) the reading and counting run
in worker processes, a slice of the period each with a store connection of its own, and the merging and
grouping in one more worker step: a million messages are seconds of Python, which in a thread would hold the
server's GIL. The memory store lives in the server's process: its log
(at most 20,000 entries) is counted in a worker thread. Only the rules' part — close rules, the rule that
answers a group now, the drafts — runs in the server (a thread), on the live rule set. A period's Report is
kept for CACHE_FOR seconds while the rules stay the same; asking while it is being made waits for that work.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from ..config import Settings, parse_duration
from ..engine import RuleSet
from ..errors import StoreError
from ..store import Store, open_store
from ..store.base import LogEntry, LogKind
from .figures import Report, Tally, suggest

PAGE = 5000  # log entries per call to the server's own store (pushes wait for no longer than one call)
WORKER_PAGE = 20_000  # a worker process has a store connection of its own
WORKERS = max(1, min(4, os.cpu_count() or 1))  # processes counting slices of the period side by side
KEEP_REPORTS = 8  # periods kept in the cache (?since= takes any duration)
KINDS: tuple[LogKind, ...] = ("push", "transfer")  # what the figures count (not the replies sent)
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


async def read_into(store: Store, tally: Tally, add: Callable[[list[LogEntry]], Awaitable[None]] | None = None,
                    page: int = PAGE) -> Tally:
    """Count the period's log into `tally`, page by page, the next page read while this one is counted; `add`
    counts a page elsewhere (a thread)."""
    reading = asyncio.ensure_future(store.log_page(tally.since, tally.until, None, page, kinds=KINDS))
    try:
        while True:
            entries, after = await reading
            if after is not None:
                reading = asyncio.ensure_future(store.log_page(tally.since, tally.until, after, page, kinds=KINDS))
            if add is None:
                tally.add(entries)
            else:
                await add(entries)
            if after is None:
                return tally
    finally:
        reading.cancel()  # a page still being read when counting failed (or the report was cancelled)


def count(url: str, since: float, until: float, zone: str, catch_all: frozenset[str], into: str) -> str:
    """Count a slice of the period from the store at `url` into the file `into` (in a worker process). The
    counts go through a file, not back through the pool: unpickling them is one long step that would hold
    the server's GIL; `merge` reads them in another worker."""

    async def run() -> Tally:
        store = open_store(url)
        await store.open()
        try:
            return await read_into(store, Tally(since, until, ZoneInfo(zone), catch_all), page=WORKER_PAGE)
        finally:
            await store.close()

    counted = asyncio.run(run())
    with open(into, "wb") as file:
        pickle.dump(counted, file, pickle.HIGHEST_PROTOCOL)
    return into


def merge(paths: list[str], period: str) -> Report:
    """The slices' counts merged, and the period's figures and groups made of them (in a worker process)."""
    whole: Tally | None = None
    for path in paths:
        with open(path, "rb") as file:
            part = pickle.load(file)
        whole = part if whole is None else whole.merge(part)
    assert whole is not None  # there is always at least one slice
    return whole.report(period)


def worker_pool() -> ProcessPoolExecutor:
    """Processes spawned, not forked: the server has threads (the sqlite store's) a fork would copy mid-step."""
    return ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("spawn"))


async def count_in(pool: Executor, settings: Settings, since: float, until: float, period: str) -> Report:
    """The period's figures and groups: WORKERS slices of time counted side by side, then merged, in the pool's
    processes (through files in a private temporary folder, removed after). Only the small Report comes back."""
    zone, catch_all = settings.timezone.key, frozenset(settings.insights.catch_all)
    cuts = [since + (until - since) * i / WORKERS for i in range(WORKERS)] + [until]
    loop = asyncio.get_running_loop()
    folder = await asyncio.to_thread(tempfile.mkdtemp, prefix="kefu-insights-")
    try:
        paths = await asyncio.gather(*(
            loop.run_in_executor(pool, count, settings.store, a, b, zone, catch_all, f"{folder}/{i}.pickle")
            for i, (a, b) in enumerate(itertools.pairwise(cuts))))
        return await loop.run_in_executor(pool, merge, list(paths), period)
    finally:
        await asyncio.to_thread(shutil.rmtree, folder, True)


def finish(report: Report, settings: Settings, ruleset: RuleSet) -> Report:
    return suggest(report, ruleset, settings.timezone, frozenset(settings.insights.catch_all),
                   settings.insights.examples)


class Insights:
    """The console's reports, one per period, cached."""

    def __init__(self, store: Store, settings: Settings, rules: Callable[[], RuleSet],
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.settings, self.rules, self.clock = store, settings, rules, clock
        self._made: dict[str, tuple[float, str, Report]] = {}  # period → (when, rules version, report)
        self._making: dict[str, asyncio.Task[Report]] = {}
        self._pool: Executor | None = None

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
            zone, catch_all = self.settings.timezone, frozenset(self.settings.insights.catch_all)
            if self.store.kind == "memory":  # only this process can read it
                counted = Tally(now - period.seconds, now, zone, catch_all)
                await read_into(self.store, counted, lambda page: asyncio.to_thread(counted.add, page))
                report = await asyncio.to_thread(counted.report, period.name)
            else:
                if self._pool is None:
                    self._pool = worker_pool()
                try:
                    report = await count_in(self._pool, self.settings, now - period.seconds, now, period.name)
                except BrokenProcessPool as exc:  # a worker died (killed, out of memory): a new pool next time
                    self._pool = None
                    raise StoreError(f"insights: a worker process died ({exc}); try again") from exc
            report = await asyncio.to_thread(finish, report, self.settings, ruleset)
            self._made[period.name] = (now, ruleset.version, report)
            while len(self._made) > KEEP_REPORTS:
                del self._made[min(self._made, key=lambda name: self._made[name][0])]
            return report
        finally:
            self._making.pop(period.name, None)

    async def close(self, wait: bool = False) -> None:
        """Cancel reports being made and stop the worker processes (the app is stopping); `wait` for them."""
        for task in list(self._making.values()):
            task.cancel()
        await asyncio.gather(*self._making.values(), return_exceptions=True)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, wait, cancel_futures=True)
