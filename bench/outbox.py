"""How fast the outbox sends, and how fast pushes are answered on each store.

    python -m bench.outbox [--replies 5000] [--latency 0.05] [--seconds 8]

1. Sends per second from one process: N replies to N users stored in the outbox, sent through the real API
   client to a fake WeChat API (another process) that answers each send after `--latency` seconds.
2. Pushes answered per second on the memory, sqlite and redis stores (redis when one is reachable): a
   separate load process sends signed pushes that hit a rule; each reply is stored and sent to the fake API.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from bot.config import OutboxSettings, Secret, WeChatSettings, load_settings
from bot.messages import TextReply
from bot.outbox import Outbox
from bot.server import RUNTIME, create_app
from bot.store import open_store
from bot.wechat_api import RetryPolicy, WeChatAPI

from .fakeapi import start_fake_api, stats

RULES = "rules:\n  - name: hit\n    when: {keywords: [快递]}\n    reply: 您的快递已发出，单号 {{ message.msg_id }}。\n"


async def sends_per_second(base: str, replies: int, store_url: str, concurrency: int) -> dict:
    store = open_store(store_url)
    await store.open()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        api = WeChatAPI(WeChatSettings(appid="wxbench", secret=Secret("s"), api_base=base), session,
                        RetryPolicy(timeout=10))
        outbox = Outbox(store, api.send, OutboxSettings(concurrency=concurrency))
        await api.tokens.get()
        started = time.perf_counter()
        for i in range(replies):
            await outbox.submit(f"user{i}", (TextReply(f"回复 {i}"),), f"msg:{i}")
        await outbox.drain()
        elapsed = time.perf_counter() - started
        await outbox.close()
    counts = await store.outbox_counts()
    await store.close()
    return {"store": store_url.split(":")[0], "replies": replies, "seconds": elapsed,
            "per_second": replies / elapsed, "sent": counts["sent"]}


def redis_reachable() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
        return True
    except OSError:
        return False


async def push_rate(base: str, store_url: str, seconds: float, connections: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="kefu-bench-store-"))
    (root / "rules").mkdir()
    (root / "rules" / "a.yaml").write_text(RULES, encoding="utf-8")
    config = root / "bot.yaml"
    config.write_text(f"wechat:\n  appid: wxbench\n  secret: s\n  token: bench-token\n  api_base: {base}\n"
                      f"store: '{store_url}'\nsecurity:\n  max_timestamp_age: 0\n", encoding="utf-8")
    app = create_app(load_settings(config))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
    before = (await stats(base))["sends"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.load", f"http://127.0.0.1:{port}/wechat", "--token", "bench-token",
        "--seconds", str(seconds), "--connections", str(connections), "--text", "我的快递到哪了",
        stdout=subprocess.PIPE)
    out, _ = await proc.communicate()
    result = json.loads(out)
    await app[RUNTIME].outbox.drain()
    sent = (await stats(base))["sends"] - before
    await runner.cleanup()
    latencies = sorted(lat for _, lat, status in result["samples"] if status == 200)
    errors = sum(1 for _, _, status in result["samples"] if status != 200)
    return {"store": store_url.split(":")[0], "pushes": len(result["samples"]), "errors": errors,
            "per_second": len(result["samples"]) / result["elapsed"],
            "p50_ms": statistics.median(latencies) * 1000 if latencies else 0,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else 0, "sent": sent}


async def main_async(args: argparse.Namespace) -> None:
    proc, base = await start_fake_api(args.latency)
    try:
        tmp = tempfile.mkdtemp(prefix="kefu-bench-outbox-")
        stores = ["memory://", f"sqlite:///{tmp}/kefu.db"]
        if redis_reachable():
            stores.append(f"redis://127.0.0.1:6379/0?prefix=kefu-bench-{int(time.time())}:")
        print(f"sends per second: {args.replies} replies to {args.replies} users, fake API answering in "
              f"{args.latency * 1000:.0f} ms, concurrency {args.concurrency}")
        for url in stores:
            r = await sends_per_second(base, args.replies, url, args.concurrency)
            print(f"  {r['store']:<7} {r['per_second']:>8.0f} sends/s  ({r['sent']} sent in {r['seconds']:.2f} s)")
        print(f"\npushes answered per second (rule hit, one reply each sent to the fake API), "
              f"{args.connections} connections, {args.seconds:.0f} s")
        for url in stores:
            r = await push_rate(base, url, args.seconds, args.connections)
            print(f"  {r['store']:<7} {r['per_second']:>8.0f} pushes/s  p50 {r['p50_ms']:.1f} ms  "
                  f"p99 {r['p99_ms']:.1f} ms  errors {r['errors']}  replies sent {r['sent']}/{r['pushes']}")
    finally:
        proc.terminate()
        await proc.wait()
        await _forget_redis_keys(stores)


async def _forget_redis_keys(stores: list[str]) -> None:
    """The benchmark's keys live under their own prefix: delete them so runs do not pile up in Redis."""
    import redis.asyncio as aioredis

    for url in stores:
        if url.startswith("redis://"):
            prefix = url.split("prefix=", 1)[1]
            client = aioredis.from_url(url.split("?", 1)[0])
            try:
                batch = []
                async for key in client.scan_iter(match=f"{prefix}*", count=5000):
                    batch.append(key)
                    if len(batch) >= 5000:
                        await client.delete(*batch)
                        batch = []
                if batch:
                    await client.delete(*batch)
            finally:
                await client.aclose()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replies", type=int, default=5000)
    p.add_argument("--latency", type=float, default=0.05)
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--connections", type=int, default=32)
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
