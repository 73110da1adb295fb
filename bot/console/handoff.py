"""Ending one user's quiet after a transfer by hand: the console's 结束人工 button on a conversation, and the
bearer-token endpoint `POST /admin/handoff/end` for scripts. Mini programs get no kf_close_session, so
without this (or a rule with `end_handoff: true`, or `handoff.end_on_enter`) the bot stays silent for the
whole `handoff.quiet` even when the agent finished long before."""

from __future__ import annotations

import json
import logging
from urllib.parse import quote

from aiohttp import web

from ..outbox import short_user
from ..admin import _authorized, _unauthorized
from ..runtime import RUNTIME
from ..store.state import end_handoff, in_handoff
from .pages import action, go, runtime

log = logging.getLogger(__name__)

MAX_OPENID = 128  # openids are 28 characters; anything much longer is not one


async def end_quiet(request: web.Request) -> web.StreamResponse:
    """The console's button (a form with `user`; @action checks the session and the CSRF token)."""
    rt = runtime(request)
    form = await request.post()
    user = str(form.get("user", "")).strip()
    if not user or len(user) > MAX_OPENID:
        raise web.HTTPBadRequest(text="no user")
    ended = await in_handoff(rt.store, user)
    await end_handoff(rt.store, user)
    log.info("console: the quiet after a transfer of %s ended by an operator", short_user(user))
    raise go(f"/admin/conversations?user={quote(user, safe='')}&done={'handoff' if ended else 'nohandoff'}")


end_quiet_action = action(end_quiet)


async def end_quiet_api(request: web.Request) -> web.Response:
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
    ended = await in_handoff(rt.store, user)
    await end_handoff(rt.store, user)
    log.info("admin: the quiet after a transfer of %s ended (%s)", short_user(user),
             "it was on" if ended else "it was not on")
    return web.json_response({"user": user, "ended": ended})
