"""The references kefu's throughput is measured against: the least an aiohttp server can do per push.

    python -m bench.bare --port P [--loop asyncio|uvloop] [--send API_BASE [--send-mode after|within|background]]

- bare: read the body of any POST and answer `success`. No signature, no parsing, no store.
- minimal (`--minimal TOKEN`): the hand-written minimal handler the targets are set against: check the
  query's signature (sha1 of the sorted token, timestamp and nonce), parse the XML with ElementTree, look the
  Content up in a dict, answer `success` to a hit and transfer_customer_service XML to a miss, as a mini
  program's server does. No dedupe, no store, no templates, no reply, no log line, no outbox: what a push
  costs when nothing else is done.
- bare+send (`--send`): the bare app, plus one outbound POST per push — a JSON body like a customer-service
  message — to the fake WeChat API at API_BASE, through one pooled ClientSession, its answer read and parsed.

Which send is the fair reference for kefu's *sustained* rate (`--send-mode`, default `after`):

- `after` (the reference): the answer is written and flushed to the client first, then the same handler
  makes the send. The client has its answer as early as kefu gives it (kefu answers, then its outbox sends),
  but the connection's next push is only read once the send is done, so sends can never fall behind: every
  push counted has had its send completed. That is the sustained rate's own definition (no backlog), with
  nothing but the two HTTP exchanges in it: no queue, no store, no bookkeeping. kefu's sustained rate over
  this reference is the price of its outbox: the durable queue, the lanes, the store writes.
- `within`: send, then answer. Same work per push, but the answer waits for the send, which measures a
  different latency and is not how kefu answers.
- `background`: answer, then send from a task nobody waits for. It measures how fast pushes are answered
  while sends pile up without bound — an answer rate, not a sustained one; kept to show the difference.

The event loop is chosen as kefu's own is (`--loop`), so that the ratios compare the same loop.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import time
import xml.etree.ElementTree as ET

import aiohttp
from aiohttp import web

SEND_PATH = "/cgi-bin/message/custom/send?access_token=BENCH_TOKEN"


def make_app(send_base: str | None = None, send_mode: str = "after", minimal: str | None = None,
             replies: dict[str, str] | None = None) -> web.Application:
    app = web.Application()
    session_key = web.AppKey("session", aiohttp.ClientSession)
    numbers = itertools.count()
    pending: set[asyncio.Task[None]] = set()

    async def send(session: aiohttp.ClientSession) -> None:
        n = next(numbers)
        payload = json.dumps({"touser": f"oBench{n:022d}", "msgtype": "text",
                              "text": {"content": f"您的快递已发出，单号 {n}。"}}, ensure_ascii=False).encode()
        async with session.post(send_base + SEND_PATH, data=payload,
                                headers={"Content-Type": "application/json"}) as resp:
            answer = json.loads(await resp.read())
        if answer.get("errcode"):
            raise RuntimeError(f"send refused: {answer}")

    async def push(request: web.Request) -> web.Response:
        body = await request.read()
        if minimal is not None:
            return answer_minimal(minimal, replies or {}, request.query, body)
        if send_base is None:
            return web.Response(text="success")
        session = request.app[session_key]
        if send_mode == "within":
            await send(session)
            return web.Response(text="success")
        response = web.Response(text="success")
        await response.prepare(request)
        await response.write_eof()  # the client has its answer now
        if send_mode == "background":
            task = asyncio.create_task(send(session))
            pending.add(task)
            task.add_done_callback(pending.discard)
        else:
            await send(session)  # the connection's next push waits for this send
        return response

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def lifecycle(app: web.Application):
        app[session_key] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
        yield
        await app[session_key].close()

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", healthz)
    app.router.add_post("/{tail:.*}", push)
    app.cleanup_ctx.append(lifecycle)
    return app


def answer_minimal(token: str, replies: dict[str, str], query, body: bytes) -> web.Response:
    parts = sorted((token, query.get("timestamp", ""), query.get("nonce", "")))
    if hashlib.sha1("".join(parts).encode()).hexdigest() != query.get("signature"):
        return web.Response(status=403, text="forbidden")
    fields = {child.tag: child.text or "" for child in ET.fromstring(body)}
    if fields.get("Content", "") in replies:
        return web.Response(text="success")  # a mini program's answer to a hit (its reply goes by the API)
    return web.Response(text=(
        f"<xml><ToUserName><![CDATA[{fields['FromUserName']}]]></ToUserName>"
        f"<FromUserName><![CDATA[{fields['ToUserName']}]]></FromUserName><CreateTime>{int(time.time())}</CreateTime>"
        f"<MsgType><![CDATA[transfer_customer_service]]></MsgType></xml>"), content_type="text/xml")


def use_loop(name: str) -> None:
    """Install the event loop policy the way kefu's server does (uvloop's when asked for)."""
    if name == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    p.add_argument("--send", metavar="API_BASE", help="also POST once per push to this (fake) WeChat API")
    p.add_argument("--minimal", metavar="TOKEN", help="the minimal handler, checking signatures with TOKEN")
    p.add_argument("--hit", action="append", default=[], metavar="TEXT=REPLY",
                   help="with --minimal: a text the dict answers, and its reply (repeatable)")
    p.add_argument("--send-mode", choices=("after", "within", "background"), default="after")
    a = p.parse_args()
    use_loop(a.loop)
    # as kefu serve runs its app: run_app with its default backlog, no access log
    replies = dict(hit.split("=", 1) for hit in a.hit)
    app = make_app(a.send.rstrip("/") if a.send else None, a.send_mode, a.minimal, replies)
    web.run_app(app, host=a.host, port=a.port, access_log=None, shutdown_timeout=5.0, print=None)


if __name__ == "__main__":
    main()
