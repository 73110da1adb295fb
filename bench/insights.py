"""The insights over a large log: `python -m bench.insights [--messages 1000000] [--runs 3]`.

Generates a week of a shop's conversation log (bench/chatlog.py: 1,000,000 pushes by default — user messages
and a few events — with the replies and transfers that go with them) into a sqlite store (kept in /tmp between
runs: generating it takes a while), then makes the 7-day report the way the console does (Insights.report: the
store read page by page, counted and grouped in a worker process, the suggestions in a thread) while a ticker
on the event loop measures how long the loop is ever held up.
Prints, per run: seconds for the whole report, messages per second, the CPU seconds it took in all processes
(what it would take on free cores: the machine is shared, so wall time swings with the others' load), and the
longest and 99th percentile gap of a 5 ms ticker (what a push would have waited)."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path

from bench.chatlog import generate
from bot.config import Settings
from bot.engine import RuleSet
from bot.insights.service import Insights, Period
from bot.store import open_store
from bot.store.sqlite import SqliteStore

DAY = 86400
TICK = 0.005


async def fill(path: Path, messages: int, start: float) -> int:
    store = SqliteStore(str(path))
    await store.open()
    batch, written = [], 0
    try:
        for entry in generate(messages, start):
            batch.append(entry)
            if len(batch) == 5000:
                await store.log_add(batch)
                written += len(batch)
                batch = []
        await store.log_add(batch)
        written += len(batch)
    finally:
        await store.close()
    return written


async def ticker(gaps: list[float], stop: asyncio.Event) -> None:
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(TICK)
        now = time.perf_counter()
        gaps.append(now - last - TICK)
        last = now


async def one_run(url: str, now: float) -> tuple[float, float, list[float], int, int]:
    """The console's way: Insights.report, with its worker process (started afresh: counted in the time)."""
    settings = Settings(store=url)
    ruleset = RuleSet(rules=(), fallbacks=(), vars={}, version="bench", files=(), templates=())
    store = open_store(url)
    await store.open()
    insights = Insights(store, settings, lambda: ruleset, clock=lambda: now)
    gaps: list[float] = []
    stop = asyncio.Event()
    tick = asyncio.create_task(ticker(gaps, stop))
    cpu = _cpu()
    try:
        started = time.perf_counter()
        report = await insights.report(Period("7d", 7 * DAY))
        seconds = time.perf_counter() - started
    finally:
        stop.set()
        await tick
        await insights.close(wait=True)  # the workers' CPU time is counted once they are joined
        await store.close()
    return seconds, _cpu() - cpu, gaps, report.messages, len(report.suggestions)


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the worker processes), all threads."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--db", type=Path, default=None, help="where the generated log is kept")
    args = parser.parse_args()
    path = args.db or Path(f"/tmp/kefu-bench-insights-{args.messages}.db")
    marker = path.with_suffix(".ready")
    if not marker.exists():  # the log's times are fixed (a week before `now` as stored in the marker)
        path.unlink(missing_ok=True)
        now = time.time()
        started = time.perf_counter()
        entries = asyncio.run(fill(path, args.messages, now - 7 * DAY))
        print(f"generated {args.messages:,} messages ({entries:,} log entries) in {time.perf_counter() - started:.1f} s"
              f" into {path}")
        marker.write_text(repr(now))
    now = float(marker.read_text())
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    totals = []
    for run in range(1, args.runs + 1):
        seconds, cpu, gaps, messages, groups = asyncio.run(one_run(f"sqlite:///{path}", now))
        totals.append(seconds)
        gaps.sort()
        p99 = gaps[int(len(gaps) * 0.99)] if gaps else 0.0
        print(f"run {run}: report of {messages:,} user messages in {seconds:.2f} s "
              f"({messages / seconds:,.0f} messages/s; {cpu:.1f} CPU-seconds in all processes), {groups} groups; "
              f"event loop held at most "
              f"{gaps[-1] * 1000 if gaps else 0:.1f} ms (p99 {p99 * 1000:.1f} ms, {len(gaps)} ticks)")
    print(f"median {statistics.median(totals):.2f} s, min {min(totals):.2f} s, max {max(totals):.2f} s; "
          f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
