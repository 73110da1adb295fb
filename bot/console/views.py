"""The console's pages: log in and out, rules with their hits, conversations, the outbox, reloads."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from aiohttp import web

from ..engine.limits import TIMEOUTS
from ..errors import StoreError
from ..outbox import short_user
from ..store import LogEntry, OutboxItem, RuleHits
from ..store.state import in_handoff, load_state
from .auth import same_origin
from .pages import CONSOLE, SESSION, action, go, local_path, page, render, runtime

log = logging.getLogger(__name__)

RECENT_ENTRIES = 2000  # log entries read to list recent users
RECENT_USERS = 50
HISTORY = 300  # entries of one user's history

# What common send failures mean, for operators (the store keeps WeChat's errcode and an English reason).
ERRCODE_ZH = {
    -1: "微信系统繁忙", 40001: "access_token 无效（appsecret 错误？）", 40003: "openid 不属于本账号",
    43004: "用户未关注公众号", 45009: "接口当日调用次数已用完", 45015: "用户超过 48 小时未互动，不能再发消息",
    45047: "客服消息条数已用完，需等用户再次发消息", 48001: "账号没有该接口权限",
}


def today(request: web.Request) -> str:
    rt = runtime(request)
    return datetime.fromtimestamp(rt.clock(), rt.settings.timezone).date().isoformat()


# ---- logging in and out ---------------------------------------------------------------------------------


@page
async def index(request: web.Request) -> web.StreamResponse:
    raise go("/admin/rules")


async def login_page(request: web.Request, error: str = "", status: int = 200) -> web.StreamResponse:
    sessions = request.app[CONSOLE].sessions
    after = local_path(request.query.get("next"))
    if not error:
        try:
            if await sessions.current(request) is not None:
                raise go(after)
        except StoreError:
            pass  # the form is shown; logging in will say what is wrong
    nonce = sessions.login_nonce()
    response = render(request, "login.html", status=status, title="登录 Log in", nonce=nonce, next=after,
                      error=error)
    sessions.set_login_nonce(request, response, nonce)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    sessions = request.app[CONSOLE].sessions
    form = await request.post()
    remote = request.remote or "?"
    nonce, token, after = (str(form.get(name, "")) for name in ("nonce", "token", "next"))
    if not sessions.login_form_ok(request, nonce) or not same_origin(request):
        log.warning("console login refused from %s: stale login form or foreign Origin", remote)
        return await login_page(request, "登录表单已过期，请重试。 The login form was stale: try again.", 403)
    if sessions.throttled(remote):
        log.warning("console login refused from %s: too many failures", remote)
        return await login_page(request, "失败次数太多，请 10 分钟后再试。 Too many failed logins: try again in "
                                         "10 minutes.", 429)
    if not sessions.token_ok(token, remote):
        return await login_page(request, "令牌不对。 Wrong token.", 401)
    response = go(local_path(after))
    try:
        await sessions.start(request, response)
    except StoreError as exc:
        log.warning("console login failed: the store cannot be reached: %s", exc)
        return await login_page(request, "存储不可用，请稍后再试。 The store cannot be reached: try again soon.", 503)
    log.info("console login from %s", remote)
    raise response


@action
async def logout(request: web.Request) -> web.StreamResponse:
    response = go("/admin/login")
    session = SESSION.get()
    assert session is not None  # @action set it
    await request.app[CONSOLE].sessions.end(session, response)
    log.info("console logout from %s", request.remote)
    raise response


# ---- rules ---------------------------------------------------------------------------------------------


@page
async def rules(request: web.Request) -> web.StreamResponse:
    rt = runtime(request)
    ruleset = rt.rules.current
    problem = ""
    try:
        hits = await rt.store.hits(today(request))
        counts = await rt.store.outbox_counts()
    except StoreError as exc:
        hits, counts, problem = {}, {}, str(exc)
    rows = [(rule, hits.get(rule.name, RuleHits())) for rule in ruleset.rules]
    never = [rule for rule, h in rows if h.total == 0]
    only_never = request.query.get("show") == "never"
    shown = [r for r in rows if r[1].total == 0 or not only_never]
    return render(request, "rules.html", title="规则 Rules", rows=shown,
                  never=len(never), fired_today=sum(1 for _, h in rows if h.today), only_never=only_never,
                  total=len(rows), ruleset=ruleset, failed=counts.get("failed", 0), problem=problem,
                  loaded_at=rt.rules.loaded_at, error=rt.rules.error, timeouts=TIMEOUTS.counts)


# ---- conversations -------------------------------------------------------------------------------------


@dataclass
class RecentUser:
    user: str
    last: float  # when the latest entry was logged
    text: str | None = None  # what they wrote last
    pushes: int = 0
    failed: int = 0
    transfers: int = 0


def recent_users(entries: list[LogEntry]) -> list[RecentUser]:
    """Users of the newest log entries, the latest first, with what they last wrote and what went wrong."""
    users: dict[str, RecentUser] = {}
    for entry in reversed(entries):  # newest first
        user = users.setdefault(entry.user, RecentUser(entry.user, entry.ts))
        if entry.kind == "push":
            user.pushes += 1
            if user.text is None:
                user.text = entry.text or f"[{entry.msg_type}]"
        elif entry.kind == "failed":
            user.failed += 1
        elif entry.kind == "transfer":
            user.transfers += 1
    return list(users.values())[:RECENT_USERS]


@page
async def conversations(request: web.Request) -> web.StreamResponse:
    rt = runtime(request)
    user, rule = request.query.get("user", "").strip(), request.query.get("rule", "").strip()
    if user:
        return await _history(request, user)
    try:
        if rule:
            entries = [e for e in await rt.store.log_query(rule=rule, limit=HISTORY) if e.kind == "push"][::-1]
            return render(request, "rule_pushes.html", title=f"规则 Rule {rule}", rule=rule, entries=entries,
                          where=getattr(rt.rules.current.rule(rule), "where", ""))
        users = recent_users(await rt.store.log_query(limit=RECENT_ENTRIES))
    except StoreError as exc:
        return render(request, "error.html", status=503, title="存储不可用 Store unavailable", message=str(exc))
    return render(request, "conversations.html", title="对话 Conversations", users=users)


async def _history(request: web.Request, user: str) -> web.StreamResponse:
    rt = runtime(request)
    try:
        # what the user sent first when entries share a time (replies may be logged before their push)
        entries = sorted(await rt.store.log_query(user=user, limit=HISTORY), key=lambda e: (e.ts, e.kind != "push"))
        items = [i for i in await rt.store.outbox_items(user=user, limit=50) if i.status in ("pending", "failed")]
        state = await load_state(rt.store, user)
        handoff = await in_handoff(rt.store, user)
    except StoreError as exc:
        return render(request, "error.html", status=503, title="存储不可用 Store unavailable", message=str(exc))
    return render(request, "conversation.html", title="对话 Conversation", user=user, entries=entries,
                  items=items, state=state, handoff=handoff, errcode_zh=ERRCODE_ZH, preview=preview,
                  back=f"/admin/conversations?user={quote(user, safe='')}",
                  done=DONE.get(request.query.get("done", ""), ""))


# ---- the outbox ----------------------------------------------------------------------------------------

DONE = {
    "retried": "已重新排队，马上发送。 Queued again: it is being sent now.",
    "dropped": "已删除。 Dropped.",
    "gone": "这条消息已不是“失败”状态（可能已被别人处理）。 That reply is no longer failed (someone else handled it?).",
    "handoff": "已结束人工接待，机器人会回答这位用户的下一条消息。 The quiet ended: the bot answers this user again.",
    "nohandoff": "这位用户不在人工接待中。 This user was not with agents.",
    "nosender": "没有配置微信 appid/secret，无法发送。 No WeChat credentials are configured: nothing can be sent.",
}


def preview(item: OutboxItem) -> str:
    reply = item.reply
    content = getattr(reply, "content", None)
    if content is not None:
        return str(content)
    title = getattr(reply, "title", "")
    return f"[{reply.kind}] {title}".strip()


@page
async def outbox(request: web.Request) -> web.StreamResponse:
    rt = runtime(request)
    try:
        failed = await rt.store.outbox_items(status="failed", limit=100)
        pending = await rt.store.outbox_items(status="pending", limit=100)
        counts = await rt.store.outbox_counts()
    except StoreError as exc:
        return render(request, "error.html", status=503, title="存储不可用 Store unavailable", message=str(exc))
    return render(request, "outbox.html", title="发送队列 Outbox", failed=failed, pending=pending, counts=counts,
                  done=DONE.get(request.query.get("done", ""), ""), errcode_zh=ERRCODE_ZH, preview=preview,
                  can_send=rt.outbox is not None and rt.outbox.sender is not None, back="/admin/outbox")


def _item_id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise web.HTTPNotFound() from None


async def _back(request: web.Request, done: str) -> web.StreamResponse:
    form = await request.post()
    back = local_path(str(form.get("back", "")), "/admin/outbox")
    raise go(f"{back}{'&' if '?' in back else '?'}done={done}")


@action
async def retry(request: web.Request) -> web.StreamResponse:
    rt = runtime(request)
    if rt.outbox is None or rt.outbox.sender is None:
        return await _back(request, "nosender")
    item = await rt.store.outbox_retry(_item_id(request), rt.clock())
    if item is None:
        return await _back(request, "gone")
    log.info("console: reply %d to %s retried by an operator", item.id, short_user(item.user))
    rt.outbox.kick(item.user)
    return await _back(request, "retried")


@action
async def drop(request: web.Request) -> web.StreamResponse:
    rt = runtime(request)
    id = _item_id(request)
    if not await rt.store.outbox_drop(id):
        return await _back(request, "gone")
    log.info("console: failed reply %d dropped by an operator", id)
    return await _back(request, "dropped")


# ---- reloading -----------------------------------------------------------------------------------------

RELOADED = {
    "swapped": "已加载新规则。 The new rules are live.",
    "same": "规则没有变化。 Nothing changed: the rules are the same.",
    "refused": "新规则有错误，没有加载；旧规则继续工作。 The edit was refused: the previous rules keep serving.",
}


@page
async def reload_page(request: web.Request) -> web.StreamResponse:
    rt = runtime(request)
    return render(request, "reload.html", title="重新加载 Reload", ruleset=rt.rules.current,
                  loaded_at=rt.rules.loaded_at, errors=rt.rules.errors, refused_at=rt.rules.refused_at,
                  restart=rt.rules.restart_needed, done=RELOADED.get(request.query.get("done", ""), ""))


@action
async def reload_now(request: web.Request) -> web.StreamResponse:
    rt = runtime(request)
    assert rt.reloader is not None  # create_app always makes one
    outcome = await rt.reloader.reload("console")
    raise go(f"/admin/rules/reload?done={'swapped' if outcome.swapped else 'refused' if outcome.errors else 'same'}")
