"""A fake WeChat API: an aiohttp app that issues and checks access tokens, records every call, and fails on
demand. Tests run it on `aiohttp_server` and point `wechat.api_base` at it."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

APPID = "wx0123456789abcdef"
SECRET = "s3cr3t-appsecret-value-0123456789"


@dataclass
class Call:
    path: str
    query: dict[str, str]
    body: Any
    raw: bytes
    answer: Any = None


@dataclass
class Failure:
    """What the fake does instead of answering normally, once."""

    errcode: int | None = None  # answer HTTP 200 with this errcode
    http: int | None = None  # answer this HTTP status
    delay: float = 0.0  # answer after this many seconds (latency, not synchronisation)
    drop: bool = False  # close the connection without answering
    hold: asyncio.Event | None = None  # wait for this event before answering


@dataclass
class FakeWeChat:
    appid: str = APPID
    secret: str = SECRET
    calls: list[Call] = field(default_factory=list)
    valid_tokens: set[str] = field(default_factory=set)
    failures: dict[str, deque[Failure]] = field(default_factory=dict)
    expires_in: int = 7200

    def __post_init__(self) -> None:
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()

    # ---- test controls ---------------------------------------------------------------------------

    def fail(self, path: str, *failures: Failure) -> None:
        self.failures.setdefault(path, deque()).extend(failures)

    def revoke_tokens(self) -> None:
        """As if another process fetched a new token: every token handed out so far is now invalid."""
        self.valid_tokens.clear()

    def calls_to(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.path == path]

    @property
    def sent(self) -> list[dict[str, Any]]:
        """Bodies of successful sends, in order."""
        return [c.body for c in self.calls_to("/cgi-bin/message/custom/send")
                if isinstance(c.answer, dict) and c.answer.get("errcode") == 0]

    async def wait_for(self, predicate, timeout: float = 5.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    async def wait_sent(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        await self.wait_for(lambda: len(self.sent) >= n, timeout)
        return self.sent

    # ---- the app ---------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/cgi-bin/token", self._token)
        app.router.add_post("/cgi-bin/stable_token", self._stable_token)
        app.router.add_post("/cgi-bin/message/custom/send", self._send)
        app.router.add_post("/cgi-bin/media/upload", self._upload)
        app.router.add_post("/cgi-bin/message/custom/typing", self._typing)
        return app

    async def _typing(self, request: web.Request) -> web.StreamResponse:
        call, failure = await self._record(request)
        ok = request.query.get("access_token") in self.valid_tokens and isinstance(call.body, dict) \
            and call.body.get("command") in ("Typing", "CancelTyping")
        normal = {"errcode": 0, "errmsg": "ok"} if ok else {"errcode": 40001, "errmsg": "invalid"}
        return await self._answer(request, call, failure, normal)

    def forget_media(self) -> None:
        """As if 3 days had passed: every media_id handed out so far is unknown now (40007)."""
        self.media_ids.clear()

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        if not hasattr(self, "media_ids"):
            self.media_ids = set()
        form = await request.post()
        call = Call(request.path, dict(request.query), {"fields": sorted(form)}, b"")
        self.calls.append(call)
        async with self._changed:
            self._changed.notify_all()
        queue = self.failures.get(request.path)
        failure = queue.popleft() if queue else None
        if request.query.get("access_token") not in self.valid_tokens:
            normal: dict[str, Any] = {"errcode": 40001, "errmsg": "invalid credential"}
        elif "media" not in form or request.query.get("type") != "image":
            normal = {"errcode": 41005, "errmsg": "media data missing"}
        else:
            media_id = f"UPLOADED_{next(self._ids)}"
            self.media_ids.add(media_id)
            normal = {"type": "image", "media_id": media_id, "created_at": 1714112445}
        return await self._answer(request, call, failure, normal)

    async def _record(self, request: web.Request) -> tuple[Call, Failure | None]:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        call = Call(request.path, dict(request.query), body, raw)
        self.calls.append(call)
        async with self._changed:
            self._changed.notify_all()
        queue = self.failures.get(request.path)
        return call, (queue.popleft() if queue else None)

    async def _answer(self, request: web.Request, call: Call, failure: Failure | None,
                      normal: dict[str, Any]) -> web.StreamResponse:
        answer: Any = normal
        if failure is not None:
            if failure.hold is not None:
                await failure.hold.wait()
            if failure.delay:
                await asyncio.sleep(failure.delay)
            if failure.drop:
                assert request.transport is not None
                request.transport.close()
                answer = "dropped"
            elif failure.http is not None:
                answer = f"HTTP {failure.http}"
            elif failure.errcode is not None:
                answer = {"errcode": failure.errcode, "errmsg": f"fake error {failure.errcode}"}
        call.answer = answer
        async with self._changed:
            self._changed.notify_all()
        if isinstance(answer, dict):
            return web.json_response(answer)
        if failure is not None and failure.http is not None:
            return web.Response(status=failure.http, text="fake server error")
        return web.Response(status=500, text="dropped")

    def _issue(self) -> dict[str, Any]:
        token = f"ACCESS_TOKEN_{next(self._ids)}_{'x' * 16}"
        self.valid_tokens.add(token)
        return {"access_token": token, "expires_in": self.expires_in}

    async def _token(self, request: web.Request) -> web.StreamResponse:
        call, failure = await self._record(request)
        q = request.query
        if q.get("grant_type") != "client_credential" or q.get("appid") != self.appid:
            normal = {"errcode": 40013, "errmsg": "invalid appid"}
        elif q.get("secret") != self.secret:
            normal = {"errcode": 40125, "errmsg": "invalid appsecret"}
        else:
            normal = self._issue()
        return await self._answer(request, call, failure, normal)

    async def _stable_token(self, request: web.Request) -> web.StreamResponse:
        call, failure = await self._record(request)
        body = call.body or {}
        if body.get("appid") != self.appid:
            normal = {"errcode": 40013, "errmsg": "invalid appid"}
        elif body.get("secret") != self.secret:
            normal = {"errcode": 40125, "errmsg": "invalid appsecret"}
        elif self.valid_tokens and not body.get("force_refresh"):
            normal = {"access_token": sorted(self.valid_tokens)[-1], "expires_in": self.expires_in}
        else:
            normal = self._issue()
        return await self._answer(request, call, failure, normal)

    async def _send(self, request: web.Request) -> web.StreamResponse:
        call, failure = await self._record(request)
        if request.query.get("access_token") not in self.valid_tokens:
            normal = {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid"}
        elif not isinstance(call.body, dict) or "touser" not in call.body or "msgtype" not in call.body:
            normal = {"errcode": 44002, "errmsg": "empty post data"}
        elif _media_id_of(call.body) is not None and _media_id_of(call.body) not in getattr(self, "media_ids", ()):
            normal = {"errcode": 40007, "errmsg": "invalid media_id"}
        else:
            normal = {"errcode": 0, "errmsg": "ok"}
        return await self._answer(request, call, failure, normal)


def _media_id_of(body: dict[str, Any]) -> str | None:
    """The uploaded media a send refers to (UPLOADED_… ids: tests also use made-up ids that need no upload)."""
    value = (body.get("image") or {}).get("media_id") or (body.get("miniprogrampage") or {}).get("thumb_media_id")
    return value if isinstance(value, str) and value.startswith("UPLOADED_") else None
