"""The peers kefu's speed is judged against: what a careful user of another library writes for the same job.

    python -m bench.peers wechatpy --port P --token T --send API_BASE --hit TEXT=REPLY [--loop asyncio|uvloop]
    gunicorn -w 1 -k sync -b 127.0.0.1:P 'bench.peers:werobot_app("T", "TEXT=REPLY")'

- wechatpy+send: an aiohttp app with wechatpy's `check_signature` and `parse_message`, a dict lookup of the
  text, the answer `success`, and the reply sent to the (fake) WeChat API with aiohttp's ClientSession in a
  background task — the mini program job, without dedupe, store, retries, send order or a log line.
- werobot: WeRoBot's own WSGI app (bottle) on gunicorn, one sync worker, answering the hit with a passive
  text reply; it has no outbox, so it cannot do the mini program job at all. Its sessions are off (its default
  reads and writes an SQLite row per push, which a keyword reply does not need).

Both check each push's signature against the token, as kefu does. `pip install -e '.[bench]'` brings them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import aiohttp
from aiohttp import web

from .bare import SEND_PATH, use_loop


def wechatpy_app(token: str, send_base: str, replies: dict[str, str]) -> web.Application:
    from wechatpy import parse_message
    from wechatpy.exceptions import InvalidSignatureException
    from wechatpy.utils import check_signature

    app = web.Application()
    session_key = web.AppKey("session", aiohttp.ClientSession)
    pending: set[asyncio.Task[None]] = set()

    async def send(session: aiohttp.ClientSession, user: str, text: str) -> None:
        payload = json.dumps({"touser": user, "msgtype": "text", "text": {"content": text}},
                             ensure_ascii=False).encode()
        async with session.post(send_base + SEND_PATH, data=payload,
                                headers={"Content-Type": "application/json"}) as resp:
            await resp.read()

    async def push(request: web.Request) -> web.Response:
        q = request.query
        try:
            check_signature(token, q.get("signature", ""), q.get("timestamp", ""), q.get("nonce", ""))
        except InvalidSignatureException:
            return web.Response(status=403, text="forbidden")
        message = parse_message(await request.read())
        reply = replies.get(getattr(message, "content", ""))
        if reply is not None:
            task = asyncio.create_task(send(request.app[session_key], message.source, reply))
            pending.add(task)
            task.add_done_callback(pending.discard)
        return web.Response(text="success")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def lifecycle(app: web.Application):
        app[session_key] = aiohttp.ClientSession()
        yield
        await app[session_key].close()

    app.router.add_get("/readyz", healthz)
    app.router.add_post("/{tail:.*}", push)
    app.cleanup_ctx.append(lifecycle)
    return app


def werobot_app(token: str, *hits: str) -> Any:
    """The WSGI app gunicorn runs: `bench.peers:werobot_app("TOKEN", "TEXT=REPLY")`."""
    from werobot import WeRoBot

    replies = dict(hit.split("=", 1) for hit in hits)
    robot = WeRoBot(token=token)
    robot.config["SESSION_STORAGE"] = False

    @robot.text
    def answer(message: Any) -> str:
        return replies.get(message.content, "")

    app = robot.wsgi
    app.route("/readyz", ["GET"], lambda: "ok")  # the bench's readiness probe; signature-free
    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("peer", choices=("wechatpy",))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8082)
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    p.add_argument("--token", required=True)
    p.add_argument("--send", required=True, metavar="API_BASE", help="the (fake) WeChat API the replies go to")
    p.add_argument("--hit", action="append", default=[], metavar="TEXT=REPLY")
    a = p.parse_args()
    use_loop(a.loop)
    replies = dict(hit.split("=", 1) for hit in a.hit)
    app = wechatpy_app(a.token, a.send.rstrip("/"), replies)
    web.run_app(app, host=a.host, port=a.port, access_log=None, shutdown_timeout=5.0, print=None)


if __name__ == "__main__":
    main()
