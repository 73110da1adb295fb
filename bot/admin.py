"""The admin endpoints (`/admin/status`, `/admin/reload`), behind `Authorization: Bearer <admin.token>`."""

from __future__ import annotations

import hmac
import json
import logging

from aiohttp import web

from .runtime import RUNTIME, Runtime

log = logging.getLogger(__name__)


def setup(app: web.Application) -> None:
    app.router.add_get("/admin/status", handle_admin_status)
    app.router.add_post("/admin/reload", handle_admin_reload)


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


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)
