"""kill -9 with replies pending, restart: every reply is delivered, none twice, each user's in order."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from bot.store import open_store

from .fakewechat import Failure
from .helpers import TOKEN, signed_query, text_fields, write_bot, xml_push
from .stores import flush_prefix, redis_url, require_redis

ROOT = Path(__file__).resolve().parent.parent
RULES = {"a.yaml": "rules:\n  - name: order\n    when: {regex: '订单(?P<no>\\d+)'}\n"
                   "    reply:\n      - text: '查询 {{ match.no }}'\n      - text: '稍候 {{ match.no }}'\n"}


async def start(config: Path, port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "serve", "--config", str(config), "--port", str(port), "--no-watch",
        cwd=ROOT, stderr=asyncio.subprocess.PIPE)
    lines = []
    while True:
        line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        assert line, "serve exited: " + "".join(lines)
        lines.append(line)
        if "listening on" in line:
            break
    asyncio.get_running_loop().create_task(_drain(proc))  # keep reading its log so it never blocks
    return proc


async def _drain(proc: asyncio.subprocess.Process) -> None:
    while await proc.stderr.readline():
        pass


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_kill_9_with_pending_replies_then_restart(backend, tmp_path, fake, unused_tcp_port):
    if backend == "redis":
        require_redis()
        url = redis_url()
    else:
        url = f"sqlite:///{tmp_path}/kefu.db"
    config = write_bot(tmp_path, RULES, api_base=fake.base, store=url, config="outbox:\n  lease: 1\n")
    hold = asyncio.Event()
    fake.fail("/cgi-bin/token", Failure(hold=hold))  # WeChat does not answer: replies stay pending
    proc = await start(config, unused_tcp_port)
    base = f"http://127.0.0.1:{unused_tcp_port}/wechat"
    try:
        async with aiohttp.ClientSession() as session:
            for i in range(3):
                body = xml_push(text_fields(f"订单{i}", user=f"user{i % 2}", msg_id=4000 + i))
                async with session.post(base, params=signed_query(token=TOKEN), data=body) as resp:
                    assert resp.status == 200 and await resp.text() == "success"
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    store = open_store(url)
    await store.open()
    assert (await store.outbox_counts())["pending"] == 6  # stored before each push was answered
    await store.close()
    hold.set()  # WeChat answers again
    proc = await start(config, unused_tcp_port)
    try:
        sent = await fake.wait_sent(6, timeout=30)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)
    texts = [s["text"]["content"] for s in sent]
    assert sorted(texts) == sorted(f"{kind} {i}" for i in range(3) for kind in ("查询", "稍候"))  # none twice
    for user in ("user0", "user1"):
        mine = [s["text"]["content"] for s in sent if s["touser"] == user]
        assert mine == sorted(mine, key=lambda t: (t.split()[1], t.startswith("稍候")))  # in order
    assert proc.returncode == 0  # SIGTERM: a clean shutdown
    if backend == "redis":
        await flush_prefix(url)


async def test_sigterm_with_a_send_in_flight_exits_cleanly_and_keeps_it(tmp_path, fake, unused_tcp_port):
    import time

    url = f"sqlite:///{tmp_path}/kefu.db"
    config = write_bot(tmp_path, RULES, api_base=fake.base, store=url)
    hold = asyncio.Event()
    fake.fail("/cgi-bin/token", Failure(hold=hold))  # the send hangs on WeChat
    proc = await start(config, unused_tcp_port)
    try:
        async with aiohttp.ClientSession() as session:
            body = xml_push(text_fields("订单7", msg_id=7007))
            async with session.post(f"http://127.0.0.1:{unused_tcp_port}/wechat",
                                    params=signed_query(token=TOKEN), data=body) as resp:
                assert await resp.text() == "success"
        await fake.wait_for(lambda: len(fake.calls_to("/cgi-bin/token")) == 1)  # the send is in flight
        started = time.monotonic()
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)
        assert time.monotonic() - started < 10
        assert proc.returncode == 0
    finally:
        hold.set()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    store = open_store(url)
    await store.open()
    assert (await store.outbox_counts())["pending"] == 2  # left for the next start
    await store.close()
