"""Try it: what the live rules would do with a message — without sending, storing or logging anything.

The message is made up and played through the same conversation turn the server runs (bot/turn.py's
`dry_turn`: it reads and writes nothing). Given a user's openid, that user's conversation state, cooldowns,
handoff and send allowance are read from the store, so the answer is the one that user would get now."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..chat import vars_of
from ..engine.outcome import Plan
from ..errors import ProtocolError, StoreError
from ..messages import Decision, Message, Reply, State
from ..protocol.wire import message_from_fields
from ..store import MemoryStore
from ..turn import Turn, dry_turn
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
    """What the page shows for one try: the turn's plan, and what was read about the user."""

    turn: Turn
    user: str  # "" when no openid was given (a stranger with no records)

    @property
    def plan(self) -> Plan:
        return self.turn.plan

    @property
    def decision(self) -> Decision:
        return self.turn.plan.decision

    @property
    def where(self) -> str:
        return self.decision.where

    @property
    def replies(self) -> tuple[Reply, ...]:
        return self.plan.sent  # as they would be sent: long texts split, within the allowance

    @property
    def state(self) -> State | None:
        return self.turn.records.state

    @property
    def cooling(self) -> list[str]:
        return sorted(self.turn.records.cooling)

    @property
    def handoff(self) -> bool:
        return self.turn.records.handoff


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
    now = rt.clock()
    message = make_message(kind, text, event, key, user or TRY_USER, now)
    store = rt.store if user else MemoryStore()  # no openid: a user the store knows nothing of
    return Tried(await dry_turn(rt.rules.current, rt.settings, store, message, now), user)


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
