"""The admin endpoints (`/admin/status`, `/admin/reload`, `/admin/handoff/end`), behind `Authorization: Bearer
<admin.token>`."""

from __future__ import annotations

import hmac
import json
import logging

from aiohttp import web

from .outbox import short_user
from .runtime import RUNTIME, Runtime
from .store.state import end_handoff, in_handoff

log = logging.getLogger(__name__)


def setup(app: web.Application) -> None:
    app.router.add_get("/admin/status", handle_admin_status)
    app.router.add_post("/admin/reload", handle_admin_reload)
    app.router.add_post("/admin/handoff/end", handle_admin_end_handoff)


def _authorized(rt: Runtime, request: web.Request) -> bool:
    expected = rt.settings.admin.token.reveal()
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8"), expected.encode("utf-8"))


def _unauthorized(request: web.Request) -> web.Response:
    log.warning("admin request refused from %s: missing or wrong token", request.remote)
    return web.json_response({"error": "unauthorized"}, status=401,
                             headers={"WWW-Authenticate": 'Bearer realm="kefu"'})


async def handle_admin_status(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    if not _authorized(rt, request):
        return _unauthorized(request)
    return web.json_response(rt.rules.status(), dumps=_dumps)


async def handle_admin_reload(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    if not _authorized(rt, request):
        return _unauthorized(request)
    outcome = await rt.reloader.reload("POST /admin/reload")
    status = rt.rules.status()
    status["reloaded"] = outcome.swapped
    return web.json_response(status, dumps=_dumps)


async def handle_admin_end_handoff(request: web.Request) -> web.Response:
    """`POST /admin/handoff/end` with `{"user": OPENID}` (or `?user=OPENID`) and the admin bearer token:
    `{"user", "ended"}` — ended is false when the user was not in the quiet."""
    rt = request.app[RUNTIME]
    if not _authorized(rt, request):
        return _unauthorized(request)
    user = request.query.get("user", "")
    if not user and request.can_read_body:
        try:
            body = json.loads(await request.read() or b"{}")
        except (ValueError, UnicodeDecodeError):
            return web.json_response({"error": "the body must be JSON: {\"user\": \"OPENID\"}"}, status=400)
        user = body.get("user", "") if isinstance(body, dict) else ""
    if not isinstance(user, str) or not user.strip() or len(user) > MAX_OPENID:
        return web.json_response({"error": "say whose quiet to end: {\"user\": \"OPENID\"}"}, status=400)
    user = user.strip()
    return web.json_response({"user": user, "ended": await end_quiet(rt, user, "admin endpoint")})


MAX_OPENID = 128  # openids are 28 characters; anything much longer is not one


async def end_quiet(rt: Runtime, user: str, by: str) -> bool:
    """End the user's quiet after a transfer (the console's button and the endpoint above); whether it was on."""
    was_on = await in_handoff(rt.store, user)
    await end_handoff(rt.store, user)
    log.info("%s: the quiet after a transfer of %s ended (%s)", by, short_user(user),
             "it was on" if was_on else "it was not on")
    return was_on


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)
