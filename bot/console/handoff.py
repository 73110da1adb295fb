"""Ending one user's quiet after a transfer by hand: the console's 结束人工 button on a conversation (scripts use
`POST /admin/handoff/end`, bot/admin.py). Mini programs get no kf_close_session, so without this (or a rule
with `end_handoff: true`, or `handoff.end_on_enter`) the bot stays silent for the whole `handoff.quiet` even
when the agent finished long before."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from .. import admin
from .pages import action, go, runtime


@action
async def end_quiet(request: web.Request) -> web.StreamResponse:
    """The console's button (a form with `user`; @action checks the session and the CSRF token)."""
    rt = runtime(request)
    form = await request.post()
    user = str(form.get("user", "")).strip()
    if not user or len(user) > admin.MAX_OPENID:
        raise web.HTTPBadRequest(text="no user")
    ended = await admin.end_quiet(rt, user, "console")
    raise go(f"/admin/conversations?user={quote(user, safe='')}&done={'handoff' if ended else 'nohandoff'}")

