"""How long a reload takes, and how long pushes wait because of one.

    python -m bench.reload [--sizes 100,1000,10000] [--seconds 12]

For each size: the cold load (startup, `kefu check`), a reload after one rule file changed (what an operator's
edit costs), and a reload after every file changed (each the median of three). Then, with 10,000 rules, a
server under a steady load from a separate process while the rules are reloaded every two seconds: the longest
event-loop stall, and the push latency during reloads against the latency outside them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web

from bot.config import load_settings
from bot.server import RUNTIME, create_app
from bot.sources import load_ruleset

from .corpus import write_corpus


def timed(fn, *args):
    """Time a build as `kefu serve` runs it: with full garbage collections paused (see Reloader)."""
    thresholds = gc.get_threshold()
    gc.set_threshold(thresholds[0], thresholds[1], 1_000_000)
    try:
        start = time.perf_counter()
        result = fn(*args)
        return result, time.perf_counter() - start
    finally:
        gc.set_threshold(*thresholds)


def touch_all(root: Path, tag: str) -> None:
    for path in sorted((root / "rules").glob("*.yaml")):
        path.write_text(path.read_text(encoding="utf-8").replace("固定回复", f"固定回复{tag}"), encoding="utf-8")


def reload_times(sizes: list[int], repeats: int = 3) -> list[dict]:
    """Per size: the cold load, and the median of `repeats` reloads after one file changed and after every
    file changed (a single reload of half a second swings by a third on a shared VM; all are kept)."""
    rows = []
    for n in sizes:
        root = Path(tempfile.mkdtemp(prefix=f"kefu-bench-{n}-"))
        settings = load_settings(write_corpus(root, n))
        current, cold = timed(load_ruleset, settings)
        one, every = [], []
        for i in range(repeats):
            edited = root / "rules" / "00000.yaml"
            edited.write_text(edited.read_text(encoding="utf-8") + f"\n# edit {i}\n", encoding="utf-8")
            current, seconds = timed(load_ruleset, settings, current)
            one.append(seconds)
            touch_all(root, f"x{i}")
            current, seconds = timed(load_ruleset, settings, current)
            every.append(seconds)
        rows.append({"rules": n, "cold_s": cold, "one_file_s": statistics.median(one),
                     "all_files_s": statistics.median(every), "one_file_runs": one, "all_files_runs": every})
    return rows


async def stall_under_load(n: int, seconds: float, connections: int, rps: float,
                           plain_gc: bool = False) -> dict:
    root = Path(tempfile.mkdtemp(prefix="kefu-bench-stall-"))
    config = write_corpus(root, n)
    settings = load_settings(config)
    app = create_app(settings, config=config, tune_gc=not plain_gc)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the port the OS chose
    reloader = app[RUNTIME].reloader

    lags: list[tuple[float, float]] = []
    stop = asyncio.Event()

    async def monitor() -> None:  # how late a 5 ms sleep wakes up = how long the loop was blocked
        while not stop.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append((time.time(), time.perf_counter() - start - 0.005))

    windows: list[tuple[float, float]] = []

    async def reloads() -> None:
        i = 0
        await asyncio.sleep(2)
        while not stop.is_set():
            i += 1
            touch_all(root, str(i))  # every file changes: the most a reload can cost
            start = time.time()
            await reloader.reload(f"bench {i}")
            windows.append((start, time.time()))
            await asyncio.sleep(2)

    tasks = [asyncio.create_task(monitor()), asyncio.create_task(reloads())]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.load", f"http://127.0.0.1:{port}/wechat", "--token", "bench-token",
        "--seconds", str(seconds), "--connections", str(connections), "--rps", str(rps),
        "--text", "关键词1", stdout=subprocess.PIPE)
    out, _ = await proc.communicate()
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    await runner.cleanup()
    result = json.loads(out)

    def during(t: float) -> bool:
        return any(a <= t <= b for a, b in windows)

    in_reload = [lat for start, lat, _ in result["samples"] if during(start)]
    outside = [lat for start, lat, _ in result["samples"] if not during(start)]
    errors = sum(1 for _, _, status in result["samples"] if status != 200)
    return {
        "rules": n, "reloads": len(windows), "requests": len(result["samples"]), "errors": errors,
        "reload_s": statistics.median(b - a for a, b in windows) if windows else None,
        "max_loop_stall_ms": max((lag for t, lag in lags if during(t)), default=0) * 1000,
        "max_loop_stall_outside_ms": max((lag for t, lag in lags if not during(t)), default=0) * 1000,
        "latency_during_p99_ms": _pct(in_reload, 99) * 1000, "latency_during_max_ms": max(in_reload or [0]) * 1000,
        "latency_outside_p99_ms": _pct(outside, 99) * 1000, "latency_outside_max_ms": max(outside or [0]) * 1000,
    }


def _pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--seconds", type=float, default=12)
    ap.add_argument("--rps", type=float, default=500, help="the steady load during the stall test")
    ap.add_argument("--plain-gc", action="store_true", help="without kefu's garbage-collector tuning")
    args = ap.parse_args()
    print("reload time (seconds)")
    print(f"{'rules':>8} {'cold load':>10} {'1 file changed':>15} {'all changed':>12}")
    for row in reload_times([int(s) for s in args.sizes.split(",")]):
        print(f"{row['rules']:>8} {row['cold_s']:>10.3f} {row['one_file_s']:>15.3f} {row['all_files_s']:>12.3f}")
    r = asyncio.run(stall_under_load(10_000, args.seconds, 16, args.rps, args.plain_gc))
    print(f"\nunder load ({args.rps:.0f} pushes/s, {r['rules']} rules, every file rewritten and reloaded "
          f"every 2 s): {r['reloads']} reloads of {r['reload_s']:.2f} s, {r['requests']} pushes, "
          f"{r['errors']} errors")
    print(f"  longest event-loop stall: {r['max_loop_stall_ms']:.1f} ms during reloads, "
          f"{r['max_loop_stall_outside_ms']:.1f} ms outside")
    print(f"  push latency during reloads: p99 {r['latency_during_p99_ms']:.1f} ms, max "
          f"{r['latency_during_max_ms']:.1f} ms; outside: p99 {r['latency_outside_p99_ms']:.1f} ms, max "
          f"{r['latency_outside_max_ms']:.1f} ms")


if __name__ == "__main__":
    main()
