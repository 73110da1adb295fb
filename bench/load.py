"""A load generator in its own process: pre-signed pushes with distinct users and MsgIds, many connections,
per-request latency with timestamps. Prints one JSON object on stdout when done.

    python -m bench.load URL --token T --seconds 10 --connections 32 [--body-template xml|json] [--rps N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import aiohttp

from bot.protocol.signature import sign

TEXTS = ["我的快递到哪了", "关键词1", "问题6", "随便问问"]


def bodies(kind: str, n: int, text: str) -> list[bytes]:
    out = []
    for i in range(n):
        if kind == "json":
            out.append(json.dumps({"ToUserName": "gh_bench", "FromUserName": f"o_user_{i % 5000:05d}",
                                   "CreateTime": 1714112445, "MsgType": "text", "Content": text,
                                   "MsgId": 10**17 + i}, ensure_ascii=False).encode())
        else:
            out.append((f"<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><FromUserName><![CDATA["
                        f"o_user_{i % 5000:05d}]]></FromUserName><CreateTime>1714112445</CreateTime>"
                        f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{text}]]></Content>"
                        f"<MsgId>{10**17 + i}</MsgId></xml>").encode())
    return out


async def run(url: str, token: str, seconds: float, connections: int, kind: str, text: str,
              rps: float | None) -> dict:
    query = {"timestamp": "1714112445", "nonce": "1"}
    query["signature"] = sign(token, query["timestamp"], query["nonce"])
    pool = bodies(kind, 200_000, text)
    samples: list[tuple[float, float, int]] = []  # (start, latency, status)
    counter = 0
    deadline = time.perf_counter() + seconds
    interval = connections / rps if rps else 0.0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
        async def worker(w: int) -> None:
            nonlocal counter
            next_at = time.perf_counter() + (interval * w / connections if interval else 0)
            while time.perf_counter() < deadline:
                if interval:
                    delay = next_at - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    next_at += interval
                body = pool[counter % len(pool)]
                counter += 1
                start = time.perf_counter()
                try:
                    async with session.post(url, params=query, data=body) as resp:
                        await resp.read()
                        status = resp.status
                except aiohttp.ClientError:
                    status = 0
                samples.append((start, time.perf_counter() - start, status))
        started = time.perf_counter()
        await asyncio.gather(*[worker(w) for w in range(connections)])
        elapsed = time.perf_counter() - started
    return {"started": started, "elapsed": elapsed, "samples": samples,
            "epoch_offset": time.time() - time.perf_counter()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--token", required=True)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--body", choices=("xml", "json"), default="xml")
    p.add_argument("--text", default=TEXTS[0])
    p.add_argument("--rps", type=float, default=None, help="a fixed request rate instead of as fast as possible")
    a = p.parse_args()
    result = asyncio.run(run(a.url, a.token, a.seconds, a.connections, a.body, a.text, a.rps))
    # wall-clock times, so the server's process can line them up with its own events
    off = result.pop("epoch_offset")
    result["samples"] = [(s + off, lat, st) for s, lat, st in result["samples"]]
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
