"""The web console at /admin, for operators: which rules fire and which never do, try a message against the
live rules, read a user's conversation, retry or drop failed replies, reload the rules.

`setup(app)` adds its routes; `create_app` calls it only when `admin.token` is set (without a token /admin is
404). Pages are rendered on the server and work without JavaScript. The bearer-token JSON endpoints
`GET /admin/status` and `POST /admin/reload` stay as they are; the console's own reload button posts to
`/admin/rules/reload`.

Routes (all under /admin; every page needs a session, every POST its CSRF token — see auth.py):
    GET  /admin                     → /admin/rules
    GET  /admin/login   POST /admin/login   POST /admin/logout
    GET  /admin/rules               rules with their hits (?show=never: those that never fired)
    GET  /admin/try     POST /admin/try     try a message or an event
    GET  /admin/conversations       recent users; ?user=OPENID one user's history; ?rule=NAME a rule's pushes
    GET  /admin/outbox              pending and failed replies
    POST /admin/outbox/{id}/retry   POST /admin/outbox/{id}/drop
    POST /admin/conversations/end-handoff   end one user's quiet after a transfer (handoff.py)
    GET  /admin/rules/reload        the live version, the last refused edit; POST: reload now
    GET  /admin/insights            what no rule answers, with draft rules, and charts (?since=1d|7d|30d)
    GET  /admin/static/{name}       the stylesheet and the script
"""

from __future__ import annotations

from aiohttp import web

from ..runtime import RUNTIME
from . import handoff, insights, trying, views
from .auth import Sessions
from .pages import CONSOLE, HEADERS, Console, make_env, static_files


def setup(app: web.Application) -> None:
    rt = app[RUNTIME]
    app[CONSOLE] = Console(make_env(rt), Sessions(rt.settings.admin.token, rt.store, rt.clock))
    files = static_files()

    async def static(request: web.Request) -> web.Response:
        found = files.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        body, kind = found
        return web.Response(body=body, content_type=kind, charset="utf-8",
                            headers={**HEADERS, "Cache-Control": "max-age=3600"})

    router = app.router
    router.add_get("/admin", views.index)
    router.add_get("/admin/", views.index)
    router.add_get("/admin/login", views.login_page)
    router.add_post("/admin/login", views.login)
    router.add_post("/admin/logout", views.logout)
    router.add_get("/admin/rules", views.rules)
    router.add_get("/admin/try", trying.try_page)
    router.add_post("/admin/try", trying.try_run)
    router.add_get("/admin/conversations", views.conversations)
    router.add_get("/admin/outbox", views.outbox)
    router.add_post("/admin/outbox/{id}/retry", views.retry)
    router.add_post("/admin/outbox/{id}/drop", views.drop)
    router.add_post("/admin/conversations/end-handoff", handoff.end_quiet)
    router.add_get("/admin/rules/reload", views.reload_page)
    router.add_post("/admin/rules/reload", views.reload_now)
    router.add_get("/admin/static/{name}", static)
    insights.setup(app)
