"""Try it: what the live rules would do with a message — without sending, storing or logging anything.

As `kefu chat` does, the message is made up and handed to `decide()` with the live rule set. Given a user's
openid, that user's conversation state, cooldowns and handoff are read from the store (only read), so the
answer is the one that user would get now."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from ..chat import vars_of
from ..engine import decide
from ..errors import ProtocolError, StoreError
from ..messages import Decision, Message, Reply
from ..protocol.wire import message_from_fields
from ..store.state import in_handoff, load_cooldowns, load_state
from ..textsplit import split_replies
from .pages import action, page, render, runtime

log = logging.getLogger(__name__)

TRY_USER = "o_console_try"
TRY_ACCOUNT = "gh_kefu_console"
KINDS = ("text", "image", "event")
EVENTS = (  # (event, what it is)
    ("user_enter_tempsession", "用户进入客服会话 user opens customer service (mini program)"),
    ("subscribe", "关注 follow (official account)"),
    ("unsubscribe", "取消关注 unfollow"),
    ("SCAN", "扫码 scanned a QR code"),
    ("CLICK", "点击菜单 menu click (key)"),
    ("VIEW", "菜单链接 menu link"),
    ("kf_create_session", "客服接入 agent took the session"),
    ("kf_close_session", "客服关闭会话 agent closed the session"),
)
_ids = itertools.count(1)


@dataclass
class Tried:
    """What the page shows for one try."""

    decision: Decision
    where: str  # file:line of the rule that fired ("" for the fallback)
    replies: tuple[Reply, ...]  # as they would be sent (long texts split)
    user: str
    state: Any = None
    cooling: list[str] = field(default_factory=list)
    handoff: bool = False


def make_message(kind: str, text: str, event: str, key: str, user: str, now: float) -> Message:
    fields: dict[str, Any] = {"ToUserName": TRY_ACCOUNT, "FromUserName": user, "CreateTime": str(int(now))}
    if kind == "event":
        fields.update(MsgType="event", Event=event or "user_enter_tempsession")
        if key:
            fields["EventKey"] = key
        if fields["Event"].lower() == "user_enter_tempsession":
            fields["SessionFrom"] = key
    elif kind == "image":
        fields.update(MsgType="image", PicUrl="https://example.invalid/console.jpg", MediaId="console_media",
                      MsgId=str(next(_ids)))
    else:
        fields.update(MsgType="text", Content=text, MsgId=str(next(_ids)))
    return message_from_fields(fields)


def describe(reply: Reply) -> str:
    content = getattr(reply, "content", None)
    if isinstance(content, str):
        return content
    return ", ".join(f"{k}={v}" for k, v in vars_of(reply).items() if k != "kind")


async def try_message(request: web.Request, kind: str, text: str, event: str, key: str, user: str) -> Tried:
    rt = runtime(request)
    ruleset = rt.rules.current
    now = rt.clock()
    message = make_message(kind, text, event, key, user or TRY_USER, now)
    state, cooling, handoff = None, {}, False
    if user:  # read-only: what this user would get now
        state = await load_state(rt.store, user) if ruleset.uses_state else None
        cooling = await load_cooldowns(rt.store, user, now) if ruleset.uses_cooldown else {}
        handoff = bool(rt.settings.handoff.quiet) and not message.is_event and await in_handoff(rt.store, user)
    decision = decide(ruleset, message, datetime.fromtimestamp(now, rt.settings.timezone), state,
                      cooling=frozenset(cooling), handoff=handoff)
    rule = ruleset.rule(decision.rule) if decision.rule else None
    return Tried(decision, rule.where if rule is not None else "", split_replies(decision.replies),
                 user, state, sorted(cooling), handoff)


def _form(values: dict[str, str], tried: Tried | None = None, error: str = "") -> dict[str, Any]:
    return {"title": "试一试 Try it", "form": values, "kinds": KINDS, "events": EVENTS, "tried": tried,
            "error": error, "describe": describe}


@page
async def try_page(request: web.Request) -> web.StreamResponse:
    values = {"kind": "text", "text": "", "event": "user_enter_tempsession", "key": "",
              "user": request.query.get("user", "")}
    return render(request, "try.html", **_form(values))


@action
async def try_run(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    values = {name: str(form.get(name, "")).strip() if name != "text" else str(form.get(name, ""))
              for name in ("kind", "text", "event", "key", "user")}
    if values["kind"] not in KINDS:
        values["kind"] = "text"
    try:
        tried = await try_message(request, values["kind"], values["text"], values["event"], values["key"],
                                  values["user"])
    except ProtocolError as exc:
        return render(request, "try.html", status=400, **_form(values, error=str(exc)))
    except StoreError as exc:
        return render(request, "try.html", status=503, **_form(values, error=f"存储不可用 store unavailable: {exc}"))
    return render(request, "try.html", **_form(values, tried))
