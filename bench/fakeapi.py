"""A fake WeChat API for benchmarks, in its own process (so it does not share the measured process's core):
issues tokens, accepts every send after a fixed latency, counts sends.

    python -m bench.fakeapi --port 0 --latency 0.05     # prints "PORT <n>" when listening
    GET /stats → {"sends": N, "tokens": M}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from aiohttp import web

ACCEPTED = b'{"errcode":0,"errmsg":"ok"}'  # what WeChat answers an accepted send, byte for byte (compact)


def make_app(latency: float) -> web.Application:
    counts = {"sends": 0, "tokens": 0}

    async def token(request: web.Request) -> web.Response:
        counts["tokens"] += 1
        return web.json_response({"access_token": f"BENCH_TOKEN_{counts['tokens']}", "expires_in": 7200})

    async def send(request: web.Request) -> web.Response:
        await request.read()
        if latency:
            await asyncio.sleep(latency)
        counts["sends"] += 1
        return web.Response(body=ACCEPTED, content_type="application/json")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(counts)

    app = web.Application()
    app.router.add_get("/cgi-bin/token", token)
    app.router.add_post("/cgi-bin/stable_token", token)
    app.router.add_post("/cgi-bin/message/custom/send", send)
    app.router.add_get("/stats", stats)
    return app


async def serve(port: int, latency: float) -> None:
    runner = web.AppRunner(make_app(latency), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    print(f"PORT {site._server.sockets[0].getsockname()[1]}", flush=True)  # noqa: SLF001
    await asyncio.Event().wait()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.05)
    a = p.parse_args()
    try:
        asyncio.run(serve(a.port, a.latency))
    except KeyboardInterrupt:
        sys.exit(0)


async def start_fake_api(latency: float) -> tuple[asyncio.subprocess.Process, str]:
    """Start the fake API in a child process; return it and its base URL."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.fakeapi", "--latency", str(latency),
                                                stdout=asyncio.subprocess.PIPE)
    line = (await proc.stdout.readline()).decode()
    return proc, f"http://127.0.0.1:{int(line.split()[1])}"


async def stats(base: str) -> dict:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(base + "/stats") as resp:
        return json.loads(await resp.text())


if __name__ == "__main__":
    main()
