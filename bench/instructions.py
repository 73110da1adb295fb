"""Instructions per push, counted by valgrind's callgrind: the same number on a busy or a quiet machine.

    python -m bench.instructions              # bare, minimal, kefu answer; bare+send, kefu sustained (5–10 min)
    python -m bench.instructions --pushes 2000 --only answer
    python -m bench.instructions --only answer --match miss --rules 10000 --format json

The throughput suite (bench/suite.py) measures what counts — pushes per second against references run on the
same core — but on a shared VM its rows swing by 20% from one minute to the next. This counts the CPU
instructions each server spends per push instead: every server runs under callgrind (about 50× slower, which
does not matter here), gets a warm-up of pushes, then its counters are zeroed, N pushes are sent (and, for the
sustained rows, their replies are sent to a fake API), and the counters are dumped. The same code and inputs
give the same count to about 0.2%, so a change's effect shows even when it is a few percent.

Instructions are not time: a push's cache misses are not in the count, so kefu, with far more code and data
per push than the references, does worse in the throughput suite than its instruction ratio says. Use this
to see whether a change removes work; use the suite for the targets.

Rows (each its own server process; the loads send pushes with distinct users and MsgIds, 8 at a time):
- bare, minimal, bare+send: the references of bench/bare.py.
- answer: kefu on the memory store, a rule hit with a template, replies held by an API that never answers.
- sustained: the same with every reply sent to bench/fakeapi.py (answering at once); the count includes the
  sends, which are waited for before the counters are dumped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bot.protocol.signature import sign

from .load import NONCE, TIMESTAMP, push_body
from .suite import TEXT, TOKEN, free_port, write_kefu

CONTENT_TYPES = {"xml": "text/xml", "json": "application/json"}
ROWS = ("bare", "minimal", "answer", "bare+send", "sustained")


async def _holding_api(port: int) -> asyncio.Server:
    """An API that accepts connections and never answers: replies stay in the outbox (the answer rows)."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass

    return await asyncio.start_server(hold, "127.0.0.1", port)


async def _wait_up(session: aiohttp.ClientSession, port: int, proc: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.5)
    raise RuntimeError("the server did not start under valgrind")


async def _pushes(session: aiohttp.ClientSession, port: int, first: int, count: int, fmt: str = "xml",
                  match: str = "hit") -> None:
    query = f"?signature={sign(TOKEN, TIMESTAMP, NONCE)}&timestamp={TIMESTAMP}&nonce={NONCE}"
    slots = asyncio.Semaphore(8)

    async def one(i: int) -> None:
        async with slots, session.post(f"http://127.0.0.1:{port}/wechat{query}",
                                       data=push_body(fmt, i, TEXT[match], 0),
                                       headers={"Content-Type": CONTENT_TYPES[fmt]}) as resp:
            await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"push answered {resp.status}")

    await asyncio.gather(*(one(first + i) for i in range(count)))


def _count(out: Path) -> int:
    """The instruction total of the dump callgrind_control -d wrote (out.1)."""
    dumped = Path(f"{out}.1")
    for line in dumped.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dumped}")


async def _sends(fake: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{fake}/stats") as resp:
        return int((await resp.json())["sends"])


async def measure(row: str, work: Path, pushes: int, warmup: int, api: str, fake: str | None,
                  fmt: str = "xml", match: str = "hit", rules: int = 10) -> int:
    port = free_port()
    out = work / f"callgrind.{row}"
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no", sys.executable]
    if row in ("bare", "minimal", "bare+send"):
        cmd += ["-m", "bench.bare", "--port", str(port), "--loop", "uvloop"]
        if row == "minimal":
            cmd += ["--minimal", TOKEN, "--hit", f"{TEXT['hit']}=x"]
        if row == "bare+send":
            cmd += ["--send", api]
    else:
        config = write_kefu(work / row, rules, "memory", api_base=api, concurrency=16, safe=False)
        cmd += ["-m", "bot", "serve", "--config", str(config), "--port", str(port), "--loop", "uvloop"]
    with open(work / f"{row}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, cwd=Path(__file__).parent.parent)
    try:
        async with aiohttp.ClientSession() as session:
            await _wait_up(session, port, proc, 300)
            await _pushes(session, port, 0, warmup, fmt, match)
            if fake is not None and row == "sustained":
                await _settle(fake, warmup)
            subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)
            before = await _sends(fake) if fake is not None and row == "sustained" else 0
            await _pushes(session, port, 1_000_000, pushes, fmt, match)
            if fake is not None and row == "sustained":
                await _settle(fake, before + pushes)
            subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
        return _count(out)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(60)
        if proc.poll() is None:
            proc.kill()


async def _settle(fake: str, expected: int, seconds: float = 300) -> None:
    """Wait until the fake API has had `expected` sends (the outbox under valgrind is slow, not stuck)."""
    deadline = time.monotonic() + seconds
    while await _sends(fake) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the outbox did not send {expected} replies")
        await asyncio.sleep(0.5)


async def run(rows: list[str], pushes: int, warmup: int, fmt: str = "xml", match: str = "hit",
              rules: int = 10) -> dict[str, int]:
    work = Path(tempfile.mkdtemp(prefix="kefu-instructions-"))
    holding_port, fake_port = free_port(), free_port()
    holding = await _holding_api(holding_port)
    fake_proc = subprocess.Popen([sys.executable, "-m", "bench.fakeapi", "--port", str(fake_port)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 cwd=Path(__file__).parent.parent)
    fake = f"http://127.0.0.1:{fake_port}"
    results: dict[str, int] = {}
    try:
        for row in rows:
            api = fake if row in ("bare+send", "sustained") else f"http://127.0.0.1:{holding_port}"
            total = await measure(row, work, pushes, warmup, api, fake, fmt, match, rules)
            results[row] = total // pushes
            print(f"  {row:<10} {results[row]:>10,} instructions per push", flush=True)
    finally:
        holding.close()
        fake_proc.terminate()
        shutil.rmtree(work, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pushes", type=int, default=1000, help="pushes counted per row (after the warm-up)")
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--format", choices=sorted(CONTENT_TYPES), default="xml",
                   help="the pushes' format (the references read any body the same way)")
    p.add_argument("--match", choices=sorted(TEXT), default="hit", help="kefu's rows: the rule hit, or no match")
    p.add_argument("--rules", type=int, default=10, help="kefu's rows: keyword rules (the hit is the last one)")
    p.add_argument("--only", default=",".join(ROWS), help=f"rows, comma-separated: {', '.join(ROWS)}")
    a = p.parse_args(argv)
    rows = [r for r in a.only.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        p.error(f"unknown rows {unknown}: choose from {', '.join(ROWS)}")
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    print(f"kefu bench: instructions per push under callgrind, {a.pushes} {a.format} pushes per row after "
          f"{a.warmup}; kefu: {a.rules} rules, {a.match}")
    results = asyncio.run(run(rows, a.pushes, a.warmup, a.format, a.match, a.rules))
    print()
    bare, send = results.get("bare"), results.get("bare+send")
    for row, n in results.items():
        ratio = f"{bare / n:.2f}× bare" if bare else ""
        if row == "sustained" and send:
            ratio += f"   {send / n:.2f}× bare+send"
        print(f"{row:<10} {n:>10,}   {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
