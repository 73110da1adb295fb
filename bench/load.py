"""A load generator in its own process: pre-signed pushes with distinct users and MsgIds, many connections,
per-request latency with timestamps. Prints one JSON object on stdout when done: `samples` as
(wall-clock start, latency, status) and `answers`, the count of each kind of answer body (success, transfer,
encrypted, passive, other) and `repeats`, the pushes sent a second time because the pool ran out.

    python -m bench.load URL --token T --seconds 10 --connections 32 [--body xml|json] [--rps N]
        [--first N] [--users 0] [--aes-key KEY --appid APPID]

`--first` starts the MsgIds (and users) at an offset, so that a warm-up and a measured run against the same
server never send the same MsgId; `--users 0` gives every push its own user; `--aes-key` sends safe-mode
pushes (each body encrypted, its msg_signature computed, before the run starts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import aiohttp

from bot.protocol.crypto import WeChatCrypto
from bot.protocol.signature import sign

TEXTS = ["我的快递到哪了", "关键词1", "问题6", "随便问问"]


TIMESTAMP, NONCE = "1714112445", "1"


def push_body(kind: str, i: int, text: str, users: int = 5000) -> bytes:
    """The i-th push: MsgId 10**17 + i, from user i % users (every push its own user when users is 0)."""
    user = f"o_user_{i % users:05d}" if users else f"oBench{i:022d}"
    if kind == "json":
        return json.dumps({"ToUserName": "gh_bench", "FromUserName": user, "CreateTime": 1714112445,
                           "MsgType": "text", "Content": text, "MsgId": 10**17 + i}, ensure_ascii=False).encode()
    return (f"<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><FromUserName><![CDATA[{user}]]></FromUserName>"
            f"<CreateTime>1714112445</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content><![CDATA[{text}]]></Content><MsgId>{10**17 + i}</MsgId></xml>").encode()


def bodies(kind: str, n: int, text: str, first: int = 0, users: int = 5000) -> list[bytes]:
    return [push_body(kind, first + i, text, users) for i in range(n)]


def safe_push(token: str, crypto: WeChatCrypto, inner: bytes) -> tuple[dict[str, str], bytes]:
    """A safe-mode push of an inner (XML) message: the query (with its msg_signature) and the envelope."""
    encrypt = crypto.encrypt(inner.decode("utf-8"))
    query = {"timestamp": TIMESTAMP, "nonce": NONCE, "encrypt_type": "aes",
             "signature": sign(token, TIMESTAMP, NONCE),
             "msg_signature": sign(token, TIMESTAMP, NONCE, encrypt)}
    body = (f"<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt>"
            f"</xml>").encode()
    return query, body


def answer_kind(body: bytes) -> str:
    if body == b"success":
        return "success"
    if b"transfer_customer_service" in body:
        return "transfer"
    if b"Encrypt" in body:
        return "encrypted"
    return "passive" if b"<MsgType><![CDATA[text]]></MsgType>" in body else "other"


async def run(url: str, token: str, seconds: float, connections: int, kind: str, text: str,
              rps: float | None, first: int = 0, users: int = 5000, aes_key: str = "", appid: str = "",
              pool_size: int = 200_000) -> dict:
    query = {"timestamp": TIMESTAMP, "nonce": NONCE}
    query["signature"] = sign(token, query["timestamp"], query["nonce"])
    plain = bodies(kind, pool_size, text, first, users)
    crypto = WeChatCrypto(aes_key, appid) if aes_key else None  # safe mode: each push its own msg_signature
    pool = [safe_push(token, crypto, b) if crypto else (query, b) for b in plain]
    samples: list[tuple[float, float, int]] = []  # (start, latency, status)
    answers = {"success": 0, "transfer": 0, "encrypted": 0, "passive": 0, "other": 0}
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
                params, body = pool[counter % len(pool)]
                counter += 1
                start = time.perf_counter()
                try:
                    async with session.post(url, params=params, data=body) as resp:
                        answer = await resp.read()
                        status = resp.status
                    if status == 200:
                        answers[answer_kind(answer)] += 1
                except aiohttp.ClientError:
                    status = 0
                samples.append((start, time.perf_counter() - start, status))
        started = time.perf_counter()
        await asyncio.gather(*[worker(w) for w in range(connections)])
        elapsed = time.perf_counter() - started
    return {"started": started, "elapsed": elapsed, "samples": samples, "answers": answers,
            "repeats": max(0, counter - len(pool)), "epoch_offset": time.time() - time.perf_counter()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--token", required=True)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--body", choices=("xml", "json"), default="xml")
    p.add_argument("--text", default=TEXTS[0])
    p.add_argument("--rps", type=float, default=None, help="a fixed request rate instead of as fast as possible")
    p.add_argument("--first", type=int, default=0, help="the first push's number (MsgId 10**17 + N)")
    p.add_argument("--users", type=int, default=5000, help="pushes come from this many users (0: each its own)")
    p.add_argument("--aes-key", default="", help="safe mode: the EncodingAESKey the server has")
    p.add_argument("--appid", default="", help="safe mode: the appid the server has")
    p.add_argument("--pool", type=int, default=0,
                   help="distinct pushes prepared (default: enough for --rps, else 200,000)")
    a = p.parse_args()
    pool = a.pool or (int(a.rps * a.seconds * 1.1) + 1000 if a.rps else 200_000)
    result = asyncio.run(run(a.url, a.token, a.seconds, a.connections, a.body, a.text, a.rps, a.first, a.users,
                             a.aes_key, a.appid, pool))
    # wall-clock times, so the server's process can line them up with its own events
    off = result.pop("epoch_offset")
    result["samples"] = [(s + off, lat, st) for s, lat, st in result["samples"]]
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
