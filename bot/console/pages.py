"""What every console page shares: the Jinja environment (its own, autoescaping — not the rule templates'
sandbox), rendering with the security headers, and the decorators that guard pages (a session) and actions
(a session, the CSRF token and a same-origin check)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web

from ..errors import StoreError
from ..runtime import RUNTIME, Runtime
from .auth import Session, Sessions, same_origin

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # (no-referrer would make browsers send `Origin: null` on POSTs)
}
# The session of the request being handled, set by @page and @action for the handler's duration (and reset
# after: requests on one keep-alive connection run in one task).
SESSION: ContextVar[Session | None] = ContextVar("kefu_console_session", default=None)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Console:
    env: jinja2.Environment
    sessions: Sessions


CONSOLE = web.AppKey("console", Console)


def make_env(runtime: Runtime) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, auto_reload=False, trim_blocks=True,
                             lstrip_blocks=True)
    zone = runtime.settings.timezone

    def when(ts: float | None) -> str:
        """An epoch as local time: the time alone for today, else with the date."""
        if ts is None:
            return "—"
        moment = datetime.fromtimestamp(ts, zone)
        today = datetime.fromtimestamp(runtime.clock(), zone).date()
        return moment.strftime("%H:%M:%S" if moment.date() == today else "%Y-%m-%d %H:%M")

    env.filters["when"] = when
    env.filters["full_time"] = lambda ts: datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M:%S") \
        if ts is not None else ""
    env.filters["q"] = lambda value: quote(str(value), safe="")
    return env


def runtime(request: web.Request) -> Runtime:
    return request.app[RUNTIME]


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    console = request.app[CONSOLE]
    session = SESSION.get()
    page = console.env.get_template(template).render(
        csrf=session.csrf if session is not None else "", signed_in=session is not None, path=request.path,
        **context)
    return web.Response(text=page, status=status, content_type="text/html", charset="utf-8", headers=HEADERS)


def go(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location, headers=HEADERS)


def local_path(value: str | None, default: str = "/admin/rules") -> str:
    """`value` if it is a path of this console (a safe place to send the browser back to), else `default`."""
    if value and value.startswith("/admin/") and not value.startswith("//") and "\\" not in value \
            and all(ord(c) > 32 for c in value):
        return value
    return default


def _unavailable(request: web.Request, exc: StoreError) -> web.Response:
    log.warning("console: the store cannot be reached: %s", exc)
    return render(request, "error.html", status=503, title="存储不可用 Store unavailable",
                  message="kefu 的存储（store）现在连不上，请稍后再试。 The store cannot be reached; try again soon.")


def page(handler: Handler) -> Handler:
    """A page for signed-in operators: without a session, off to the login form (and back here after)."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            session = await request.app[CONSOLE].sessions.current(request)
            if session is None:
                raise go(f"/admin/login?next={quote(request.path_qs, safe='')}")
            return await _as(session, handler, request)
        except StoreError as exc:
            return _unavailable(request, exc)

    return guarded


async def _as(session: Session, handler: Handler, request: web.Request) -> web.StreamResponse:
    token = SESSION.set(session)
    try:
        return await handler(request)
    finally:
        SESSION.reset(token)


def action(handler: Handler) -> Handler:
    """A POST for signed-in operators: also the session's CSRF token in the form, and no foreign Origin."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            sessions = request.app[CONSOLE].sessions
            session = await sessions.current(request)
            if session is None:
                raise go("/admin/login")
            form = await request.post()
            token = form.get("csrf")
            if not same_origin(request) or not isinstance(token, str) or not sessions.csrf_ok(session, token):
                log.warning("console: %s %s refused from %s: bad CSRF token or foreign Origin", request.method,
                            request.path, request.remote)
                return render(request, "error.html", status=403, title="请求被拒绝 Request refused",
                              message="表单已过期或来自别的网站，请返回重试。 The form is stale or came from another "
                                      "site: go back, reload the page and try again.")
            return await _as(session, handler, request)
        except StoreError as exc:
            return _unavailable(request, exc)

    return guarded


STATIC = {"console.css": "text/css", "console.js": "text/javascript"}


def static_files() -> dict[str, tuple[bytes, str]]:
    return {name: ((HERE / "static" / name).read_bytes(), kind) for name, kind in STATIC.items()}
