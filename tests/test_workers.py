"""`kefu serve --workers N`: N processes on one port, one shared store, every push answered and sent once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.store import open_store

from .helpers import TOKEN, signed_query, text_fields, write_bot, xml_push
from .stores import flush_prefix, redis_url, require_redis

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = aiohttp.ClientTimeout(total=15)
RULES = {"a.yaml": "rules:\n  - name: order\n    when: {regex: '订单(?P<no>\\d+)'}\n    reply: '查询 {{ match.no }}'\n"}


async def start(config: Path, port: int, *extra: str) -> tuple[asyncio.subprocess.Process, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "serve", "--config", str(config), "--port", str(port), "--no-watch", *extra,
        cwd=ROOT, stderr=asyncio.subprocess.PIPE)
    lines: list[str] = []

    async def drain() -> None:  # keep reading its log so that it never blocks
        while line := await proc.stderr.readline():
            lines.append(line.decode())

    asyncio.get_running_loop().create_task(drain())
    return proc, lines


def children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry))
    return found


async def wait_until(predicate, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def ready_pids(base: str, want: int, timeout: float = 20.0) -> set[int]:
    """The pids that answer /readyz over fresh connections, until `want` of them have."""
    pids: set[int] = set()
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True), timeout=TIMEOUT) as session:
        while len(pids) < want:
            assert asyncio.get_running_loop().time() < deadline, f"only {pids} answered"
            try:
                async with session.get(f"{base}/readyz") as resp:
                    if resp.status == 200:
                        pids.add((await resp.json())["pid"])
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)  # not listening yet
    return pids


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_two_workers_answer_and_send_each_push_once(backend, tmp_path, fake, unused_tcp_port):
    if backend == "redis":
        require_redis()
        url = redis_url()
    else:
        url = f"sqlite:///{tmp_path}/kefu.db"
    config = write_bot(tmp_path, RULES, api_base=fake.base, store=url)
    proc, log = await start(config, unused_tcp_port, "--workers", "2")
    base = f"http://127.0.0.1:{unused_tcp_port}"
    try:
        await _steps(proc, base, url, fake, log)
    except BaseException:
        print("".join(log))
        raise
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if backend == "redis":
            await flush_prefix(url)


async def _steps(proc, base: str, url: str, fake, log: list[str]) -> None:
    """Two workers answer; each push is answered and sent once; a killed worker is replaced; SIGTERM stops."""
    assert len(await ready_pids(base, 2)) == 2
    assert len(children(proc.pid)) == 2
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True), timeout=TIMEOUT) as session:
        async def deliver(i: int) -> str:
            body = xml_push(text_fields(f"订单{i}", user=f"user{i % 7}", msg_id=9000 + i))
            async with session.post(f"{base}/wechat", params=signed_query(token=TOKEN), data=body) as resp:
                assert resp.status == 200
                return await resp.text()

        # each push delivered three times at once, on separate connections: WeChat's retries
        answers = await asyncio.gather(*(deliver(i) for i in range(30) for _ in range(3)))
    assert set(answers) == {"success"}
    store = open_store(url)
    await store.open()
    try:
        async def counts() -> dict[str, int]:
            return await store.outbox_counts()

        deadline = asyncio.get_running_loop().time() + 20
        while (c := await counts())["sent"] < 30 or c["pending"]:
            assert asyncio.get_running_loop().time() < deadline, c
            await asyncio.sleep(0.05)
        assert c["sent"] == 30 and c["failed"] == 0
    finally:
        await store.close()
    texts = sorted(s["text"]["content"] for s in fake.sent)
    assert texts == sorted(f"查询 {i}" for i in range(30))  # each once, none twice

    # /metrics through the shared port counts the whole server, whichever worker answers the scrape
    async def scrape() -> tuple[int, tuple[float, float]]:
        """(the pid that answered, (text pushes answered, retries)): one connection, so one worker."""
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), timeout=TIMEOUT) as session:
            async with session.get(f"{base}/readyz") as resp:
                pid = (await resp.json())["pid"]
            async with session.get(f"{base}/metrics") as resp:
                text = await resp.text()
        pushes = retries = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "kefu_pushes_total" and sample.labels == {"type": "text", "answer": "success"}:
                    pushes = sample.value
                elif sample.name == "kefu_push_retries_total":
                    retries = sample.value
        return pid, (pushes, retries)

    seen: dict[int, tuple[float, float]] = {}
    deadline = asyncio.get_running_loop().time() + 20
    while len(seen) < 2 or any(v != (30, 60) for v in seen.values()):
        assert asyncio.get_running_loop().time() < deadline, seen
        pid, counts = await scrape()
        seen[pid] = counts  # each worker's newest answer: both must come to the whole server's counts
        await asyncio.sleep(0.05)

    # a worker that dies is replaced
    victim = min(children(proc.pid))
    os.kill(victim, signal.SIGKILL)
    await wait_until(lambda: len(children(proc.pid)) == 2 and victim not in children(proc.pid))
    await wait_until(lambda: any(f"worker {victim} exited with signal SIGKILL; starting another" in line
                                 for line in log))

    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 15) == 0
    assert not children(proc.pid)


async def run(config: Path, port: int, *extra: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "serve", "--config", str(config), "--port", str(port), "--no-watch", *extra,
        cwd=ROOT, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, err.decode()


async def test_workers_refuse_the_memory_store(tmp_path, unused_tcp_port):
    config = write_bot(tmp_path, RULES, store="memory://")
    code, err = await run(config, unused_tcp_port, "--workers", "2")
    assert code == 2 and "needs a store the workers share" in err


async def test_workers_stop_at_a_broken_rule_file_with_its_line(tmp_path, unused_tcp_port):
    config = write_bot(tmp_path, {"a.yaml": "rules:\n  - name: x\n    when: {keyword: [a]}\n    reply: b\n"},
                       store=f"sqlite:///{tmp_path}/kefu.db")
    code, err = await run(config, unused_tcp_port, "--workers", "2")
    assert code == 1 and "a.yaml:3:" in err and "keyword" in err and "listening" not in err
