"""The web console at /admin, through the real app: login, sessions and CSRF; rule hits; try it; conversations;
retrying and dropping failed replies; reloads."""

from __future__ import annotations

import html
import logging
import re
import time

import pytest

from bot.console.auth import COOKIE, MAX_FAILURES, SESSION_TTL
from bot.console.pages import CONSOLE
from bot.store.state import start_handoff

from .fakewechat import Failure
from .helpers import USER, event_fields, text_fields, xml_push

ADMIN = "c0nsole-admin-t0ken-9f3e"
CONFIG = f"admin:\n  token: {ADMIN}\n"
SEND = "/cgi-bin/message/custom/send"
RULES = {
    "10-welcome.yaml": "rules:\n"
                       "  - name: welcome\n"
                       "    when: {event: user_enter_tempsession}\n"
                       "    reply: 欢迎光临{{ vars.shop_name }}\n",
    "20-orders.yaml": "rules:\n"
                      "  - name: shipping\n"
                      "    when: {keywords: [快递, 物流]}\n"
                      "    reply: 明天到\n"
                      "  - name: human\n"
                      "    when: {equals: [人工]}\n"
                      "    transfer: true\n"
                      "  - name: menu\n"
                      "    when: {event: CLICK, event_key: menu_1}\n"
                      "    reply: 菜单一\n"
                      "  - name: broken-template\n"
                      "    when: {equals: [坏]}\n"
                      "    reply: '{{ 1 // 0 }}'\n"
                      "  - name: never\n"
                      "    when: {equals: [从来没人说]}\n"
                      "    reply: 不会发生\n",
}
PAGES = ["/admin", "/admin/rules", "/admin/try", "/admin/conversations", f"/admin/conversations?user={USER}",
         "/admin/outbox", "/admin/rules/reload", "/admin/insights"]
POSTS = ["/admin/try", "/admin/outbox/1/retry", "/admin/outbox/1/drop", "/admin/rules/reload", "/admin/logout",
         "/admin/conversations/end-handoff"]


async def login(bot, token: str = ADMIN, **headers: str):
    page = await bot.client.get("/admin/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', await page.text()).group(1)
    return await bot.client.post("/admin/login", data={"nonce": nonce, "token": token, "next": "/admin/rules"},
                                 headers=headers, allow_redirects=False)


async def signed_in(make_bot, **kw):
    bot = await make_bot(RULES, config=CONFIG, **kw)
    assert (await login(bot)).status == 303
    return bot


async def csrf_of(bot) -> str:
    text = await (await bot.client.get("/admin/rules")).text()
    return re.search(r'name="csrf" value="([^"]+)"', text).group(1)


async def page_text(bot, path: str) -> str:
    resp = await bot.client.get(path)
    assert resp.status == 200, (path, resp.status)
    return html.unescape(await resp.text())


def row(text: str, rule: str) -> str:
    return re.search(rf'<tr id="rule-{re.escape(rule)}".*?</tr>', text, re.S).group(0)


def counts(text: str, rule: str) -> tuple[int, int]:
    found = row(text, rule)
    today = re.search(r'class="num today">(\d+)<', found).group(1)
    total = re.search(r'class="num total">(\d+)<', found).group(1)
    return int(today), int(total)


# ---- access ----------------------------------------------------------------------------------------------


async def test_the_console_is_off_without_a_token(make_bot):
    bot = await make_bot(RULES)
    for path in (*PAGES, "/admin/login", "/admin/static/console.css"):
        assert (await bot.client.get(path, allow_redirects=False)).status == 404, path
    assert (await bot.client.post("/admin/login", data={"token": ""})).status == 404


async def test_every_page_sends_a_stranger_to_the_login_form(make_bot):
    bot = await make_bot(RULES, config=CONFIG)
    for path in PAGES:
        resp = await bot.client.get(path, allow_redirects=False)
        assert resp.status == 303, path
        assert resp.headers["Location"].startswith("/admin/login"), path
    for path in POSTS:
        resp = await bot.client.post(path, data={"csrf": "x"}, allow_redirects=False)
        assert (resp.status, resp.headers["Location"]) == (303, "/admin/login"), path
    forged = {COOKIE: f"abc.{int(time.time()) + 3600}.AAAA"}
    resp = await bot.client.get("/admin/rules", cookies=forged, allow_redirects=False)
    assert resp.status == 303
    # the curl endpoints keep their bearer token
    assert (await bot.client.get("/admin/status")).status == 401
    assert (await bot.client.get("/admin/status", headers={"Authorization": f"Bearer {ADMIN}"})).status == 200


async def test_a_wrong_token_gets_no_session_and_is_logged_without_what_was_typed(make_bot, caplog):
    bot = await make_bot(RULES, config=CONFIG)
    caplog.set_level(logging.INFO)
    resp = await login(bot, "wrong-guess-123")
    assert resp.status == 401
    assert COOKIE not in resp.cookies
    assert "Wrong token" in await resp.text()
    assert (await bot.client.get("/admin/rules", allow_redirects=False)).status == 303
    assert "console login refused" in caplog.text and "wrong-guess-123" not in caplog.text
    assert (await login(bot)).status == 303
    for path in PAGES:  # the admin token appears in no page, and in no log line
        assert ADMIN not in await page_text(bot, path)
    assert ADMIN not in caplog.text
    assert ADMIN not in repr(bot.client.app[CONSOLE])


async def test_failed_logins_are_limited(make_bot):
    bot = await make_bot(RULES, config=CONFIG)
    for _ in range(MAX_FAILURES):
        assert (await login(bot, "nope")).status == 401
    resp = await login(bot)  # even the right token, from there, for a while
    assert resp.status == 429 and COOKIE not in resp.cookies


async def test_the_login_form_needs_its_own_nonce_and_origin(make_bot):
    bot = await make_bot(RULES, config=CONFIG)
    resp = await bot.client.post("/admin/login", data={"token": ADMIN}, allow_redirects=False)
    assert resp.status == 403 and COOKIE not in resp.cookies
    resp = await login(bot, Origin="https://evil.example")
    assert resp.status == 403 and COOKIE not in resp.cookies


async def test_session_cookie_flags(make_bot):
    bot = await make_bot(RULES, config=CONFIG)
    resp = await login(bot)
    cookie = resp.cookies[COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/admin"
    assert int(cookie["max-age"]) == SESSION_TTL and not cookie["secure"]  # plain http: a Secure cookie would be lost
    assert ADMIN not in cookie.value
    bot.client.session.cookie_jar.clear()
    behind_tls = await login(bot, **{"X-Forwarded-Proto": "https"})
    assert behind_tls.cookies[COOKIE]["secure"]
    page = await bot.client.get("/admin/rules")
    assert page.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


async def test_sessions_expire_and_logging_out_ends_them_everywhere(make_bot):
    bot = await signed_in(make_bot)
    sessions = bot.client.app[CONSOLE].sessions
    cookie = bot.client.session.cookie_jar.filter_cookies(bot.client.make_url("/admin"))[COOKIE].value
    sessions._clock = lambda: time.time() + SESSION_TTL + 1
    assert (await bot.client.get("/admin/rules", allow_redirects=False)).status == 303
    sessions._clock = time.time
    resp = await bot.client.post("/admin/logout", data={"csrf": await csrf_of(bot)}, allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (303, "/admin/login")
    assert (await bot.client.get("/admin/rules", allow_redirects=False)).status == 303
    replayed = await bot.client.get("/admin/rules", cookies={COOKIE: cookie}, allow_redirects=False)
    assert replayed.status == 303  # a copy of the cookie is no good after logout


async def test_a_session_holds_on_every_instance_sharing_the_store_and_ends_with_the_token(make_bot, tmp_path):
    url = f"sqlite:///{tmp_path}/kefu.db"
    first = await signed_in(make_bot, store=url)
    second = await make_bot(RULES, config=CONFIG, store=url)  # another instance of the fleet
    cookie = first.client.session.cookie_jar.filter_cookies(first.client.make_url("/admin"))[COOKIE].value
    assert (await second.client.get("/admin/rules", cookies={COOKIE: cookie}, allow_redirects=False)).status == 200
    rotated = await make_bot(RULES, config="admin:\n  token: a-new-token-after-a-leak\n", store=url)
    assert (await rotated.client.get("/admin/rules", cookies={COOKIE: cookie}, allow_redirects=False)).status == 303


async def test_every_post_needs_the_sessions_csrf_token_and_a_same_origin(make_bot):
    bot = await signed_in(make_bot)
    csrf = await csrf_of(bot)
    for path in POSTS:
        assert (await bot.client.post(path, data={})).status == 403, path
        assert (await bot.client.post(path, data={"csrf": csrf[:-1] + "x"})).status == 403, path
        foreign = await bot.client.post(path, data={"csrf": csrf}, headers={"Origin": "https://evil.example"})
        assert foreign.status == 403, path
    same = await bot.client.post("/admin/try", data={"csrf": csrf, "text": "快递"},
                                 headers={"Origin": str(bot.client.make_url("")).rstrip("/")})
    assert same.status == 200
    other = await make_bot(RULES, config=CONFIG)  # another session's token is no good either
    await login(other)
    assert (await other.client.post("/admin/try", data={"csrf": csrf, "text": "快递"})).status == 403


async def test_static_files(make_bot):
    bot = await make_bot(RULES, config=CONFIG)
    css = await bot.client.get("/admin/static/console.css")
    assert css.status == 200 and css.content_type == "text/css"
    assert (await bot.client.get("/admin/static/nope.css")).status == 404


# ---- rules and their hits --------------------------------------------------------------------------------


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_rules_show_hits_today_and_in_total_and_the_rules_that_never_fired(make_bot, tmp_path, store):
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path}/kefu.db"
    bot = await signed_in(make_bot, store=url)
    before = await page_text(bot, "/admin/rules")
    assert counts(before, "shipping") == (0, 0) and "never fired" in row(before, "shipping")
    assert "<code>rules/20-orders.yaml:2</code>" in row(before, "shipping")
    for text in ("快递到哪了", "物流", "还没到快递", "人工"):
        assert (await bot.push(xml_push(text_fields(text)))).status == 200
    await bot.push(xml_push(event_fields("user_enter_tempsession", SessionFrom="")))
    await bot.push(xml_push(text_fields("随便说说")))  # the fallback: no rule's hit
    await bot.drain()
    after = await page_text(bot, "/admin/rules")
    assert counts(after, "shipping") == (3, 3) and counts(after, "human") == (1, 1)
    assert counts(after, "welcome") == (1, 1) and counts(after, "never") == (0, 0)
    assert "never fired" not in row(after, "shipping") and "never fired" in row(after, "never")
    assert re.search(r'id="never-count">(\d+)<', after).group(1) == "3"  # menu, broken-template, never
    only = await page_text(bot, "/admin/rules?show=never")
    assert 'id="rule-never"' in only and 'id="rule-shipping"' not in only
    pushes = await page_text(bot, "/admin/conversations?rule=shipping")
    assert pushes.count(f">{USER}<") == 3 and "物流" in pushes


# ---- try it ----------------------------------------------------------------------------------------------


async def test_try_it_shows_the_rule_the_replies_and_transfer_and_sends_nothing(make_bot, fake):
    bot = await signed_in(make_bot)
    csrf = await csrf_of(bot)

    async def attempt(**form: str) -> str:
        resp = await bot.client.post("/admin/try", data={"csrf": csrf, **form})
        assert resp.status == 200
        return html.unescape(await resp.text())

    shown = await attempt(kind="text", text="我的快递到哪了")
    assert re.search(r'id="result-rule">shipping<', shown) and "rules/20-orders.yaml:2" in shown
    assert "明天到" in shown and re.search(r'id="result-transfer">否 no', shown)
    shown = await attempt(kind="text", text="人工")
    assert re.search(r'id="result-rule">human<', shown) and re.search(r'id="result-transfer"><b[^>]*>是 yes', shown)
    shown = await attempt(kind="event", event="user_enter_tempsession", key="")
    assert re.search(r'id="result-rule">welcome<', shown) and "欢迎光临测试小店" in shown
    shown = await attempt(kind="event", event="CLICK", key="menu_1")
    assert re.search(r'id="result-rule">menu<', shown) and "菜单一" in shown
    shown = await attempt(kind="text", text="坏")
    assert re.search(r'id="result-rule">broken-template<', shown) and "ZeroDivisionError" in shown
    shown = await attempt(kind="text", text="无关的话")
    assert re.search(r'id="result-rule">\(fallback\)<', shown)
    await start_handoff(bot.runtime.store, USER, 600)  # that user is with agents: the bot keeps quiet
    shown = await attempt(kind="text", text="无关的话", user=USER)
    assert "the bot stays quiet" in shown
    await bot.drain()
    assert fake.calls_to(SEND) == []
    assert await bot.runtime.store.log_query() == []  # nothing logged
    assert await bot.runtime.store.hits("2000-01-01") == {}  # no hits counted


async def test_try_it_reads_but_never_writes_the_users_state(make_bot):
    rules = {"a.yaml": "rules:\n"
                       "  - name: ask\n    when: {equals: [退货]}\n    reply: 请发订单号\n"
                       "    set_state: waiting_order\n    ttl: 10m\n"
                       "  - name: got-order\n    when: {state: waiting_order, regex: '\\d{6}'}\n    reply: 收到订单\n"}
    bot = await make_bot(rules, config=CONFIG)
    await login(bot)
    csrf = await csrf_of(bot)
    shown = html.unescape(await (await bot.client.post("/admin/try", data={
        "csrf": csrf, "kind": "text", "text": "退货", "user": USER})).text())
    assert "waiting_order" in shown  # the change it would make…
    assert await bot.runtime.store.get(f"state:{USER}") is None  # …is not made
    await bot.push(xml_push(text_fields("退货")))  # the real thing sets the state
    await bot.drain()
    shown = html.unescape(await (await bot.client.post("/admin/try", data={
        "csrf": csrf, "kind": "text", "text": "123456", "user": USER})).text())
    assert re.search(r'id="result-rule">got-order<', shown)


# ---- conversations ---------------------------------------------------------------------------------------


async def test_conversations_list_recent_users_and_one_users_history(make_bot, fake):
    bot = await signed_in(make_bot)
    other = "oOTHERuser-0000000000000001"
    fake.fail(SEND, Failure(errcode=45015))
    await bot.push(xml_push(text_fields("快递到了吗")))  # its reply fails
    await bot.push(xml_push(text_fields("人工")))
    await bot.drain()  # USER's failed send is logged before `other` writes: `other` is the latest
    await bot.push(xml_push(text_fields("你好", user=other)))
    await bot.drain()
    listing = await page_text(bot, "/admin/conversations")
    assert listing.index(other) < listing.index(USER)  # the latest first
    assert "1 失败 failed" in listing and "1 转人工 transfer" in listing
    history = await page_text(bot, f"/admin/conversations?user={USER}")
    timeline = re.search(r'<ol class="timeline".*?</ol>', history, re.S).group(0)
    assert timeline.index("快递到了吗") < timeline.index("人工")
    assert "<b>shipping</b>" in timeline and "<b>human</b>" in timeline
    assert "errcode 45015" in timeline and "48 小时" in timeline  # what failed and why
    assert "转人工 Transfer" in timeline
    assert other not in timeline


# ---- the outbox ------------------------------------------------------------------------------------------


async def failed_reply(bot, fake) -> int:
    fake.fail(SEND, Failure(errcode=45015))
    await bot.push(xml_push(text_fields("快递")))
    await bot.drain()
    [item] = await bot.runtime.store.outbox_items(status="failed")
    return item.id


async def test_a_failed_reply_shows_its_reason_and_a_retry_sends_it_now(make_bot, fake):
    bot = await signed_in(make_bot)
    id = await failed_reply(bot, fake)
    shown = await page_text(bot, "/admin/outbox")
    failed = re.search(r'<table class="cards" id="failed">.*?</table>', shown, re.S).group(0)
    assert f'data-id="{id}"' in failed and "45015" in failed and "明天到" in failed
    resp = await bot.client.post(f"/admin/outbox/{id}/retry",
                                 data={"csrf": await csrf_of(bot), "back": "/admin/outbox"}, allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (303, "/admin/outbox?done=retried")
    sent = await fake.wait_sent(1, timeout=2.0)  # the lane is woken: not left for the next scan
    assert sent[-1]["text"]["content"] == "明天到" and sent[-1]["touser"] == USER
    await bot.drain()
    assert (await bot.runtime.store.outbox_get(id)).status == "sent"
    shown = await page_text(bot, "/admin/outbox?done=retried")
    assert "Queued again" in shown and f'data-id="{id}"' not in shown.split('id="pending"')[0].split('id="failed"')[1]
    again = await bot.client.post(f"/admin/outbox/{id}/retry", data={"csrf": await csrf_of(bot)}, allow_redirects=False)
    assert again.headers["Location"].endswith("done=gone")  # only failed replies are retried
    assert len(fake.sent) == 1


async def test_dropping_a_failed_reply(make_bot, fake):
    bot = await signed_in(make_bot)
    id = await failed_reply(bot, fake)
    back = f"/admin/conversations?user={USER}"
    resp = await bot.client.post(f"/admin/outbox/{id}/drop", data={"csrf": await csrf_of(bot), "back": back},
                                 allow_redirects=False)
    assert resp.headers["Location"] == f"{back}&done=dropped"
    assert await bot.runtime.store.outbox_get(id) is None
    assert (await bot.runtime.store.outbox_counts())["failed"] == 0
    history = await page_text(bot, back)
    assert "errcode 45015" in history  # the conversation still says what happened
    resp = await bot.client.post(f"/admin/outbox/{id}/drop",
                                 data={"csrf": await csrf_of(bot), "back": "//evil.example/"}, allow_redirects=False)
    assert resp.headers["Location"] == "/admin/outbox?done=gone"  # and never sends the browser elsewhere
    assert fake.sent == []


# ---- reloads ---------------------------------------------------------------------------------------------


async def test_a_refused_reload_shows_file_and_line_and_the_rules_keep_serving(make_bot, tmp_path):
    bot = await signed_in(make_bot)
    version = bot.runtime.rules.current.version
    shown = await page_text(bot, "/admin/rules/reload")
    assert version in shown and "None: the live rules are the latest edit" in shown
    (tmp_path / "rules" / "30-broken.yaml").write_text(
        "rules:\n  - name: oops\n    when: {keyword: [x]}\n    reply: y\n", encoding="utf-8")
    resp = await bot.client.post("/admin/rules/reload", data={"csrf": await csrf_of(bot)}, allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (303, "/admin/rules/reload?done=refused")
    shown = await page_text(bot, "/admin/rules/reload?done=refused")
    refused = re.search(r'<section class="card bad" id="refused">.*?</section>', shown, re.S).group(0)
    assert "rules/30-broken.yaml:3" in refused and "keyword" in refused
    assert bot.runtime.rules.current.version == version
    assert "The last edit was refused" in await page_text(bot, "/admin/rules")
    (tmp_path / "rules" / "30-broken.yaml").write_text(
        "rules:\n  - name: oops\n    when: {keywords: [x]}\n    reply: y\n", encoding="utf-8")
    resp = await bot.client.post("/admin/rules/reload", data={"csrf": await csrf_of(bot)}, allow_redirects=False)
    assert resp.headers["Location"] == "/admin/rules/reload?done=swapped"
    shown = await page_text(bot, "/admin/rules/reload")
    assert bot.runtime.rules.current.version in shown and "since fixed" in shown
    assert 'id="rule-oops"' in await page_text(bot, "/admin/rules")
