"""Ending the quiet after a transfer early (issue 18, item 6): a rule's `end_handoff: true`, entering the session
again (`handoff.end_on_enter`), the console's button and `POST /admin/handoff/end`; and a reload that takes a
changed named window."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from bot.engine import SourceFile, compile_ruleset
from bot.errors import RulesError
from bot.ruletest import load_cases, run_case
from bot.store.state import in_handoff

from .helpers import USER, event_fields, text_fields, write_bot, xml_push
from .test_console import csrf_of, login
from .test_manners import RULES as MANNERS

ADMIN = "end-handoff-admin-t0ken"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
CONFIG = f"admin:\n  token: {ADMIN}\n"
# test_manners' rules (人工 transfers, 你好 answers 您好), and the ways out of the quiet
RULES = {"a.yaml": MANNERS["a.yaml"] + """
  - name: back-to-bot
    when: {equals: [机器人, 返回]}
    reply: 好的，我回来了，请问有什么可以帮您？
    end_handoff: true
  - name: welcome
    when: {event: user_enter_tempsession}
    reply: 欢迎回来
"""}


async def say(bot, fake, content: str, msg_id: int, user: str = USER):
    before = len(fake.sent)
    text = await (await bot.push(xml_push(text_fields(content, user=user, msg_id=msg_id)))).text()
    await bot.drain()
    return ("transfer" if "transfer_customer_service" in text else text), [
        s["text"]["content"] for s in fake.sent[before:]]


async def enter(bot) -> None:
    await bot.push(xml_push(event_fields("user_enter_tempsession", SessionFrom="")))
    await bot.drain()


async def test_a_rule_with_end_handoff_brings_the_bot_back(make_bot, fake):
    bot = await make_bot(RULES)
    assert await say(bot, fake, "人工", 1) == ("transfer", ["正在转接"])
    assert await say(bot, fake, "你好", 2) == ("success", [])  # quiet
    # heard in the quiet, and ends it
    assert await say(bot, fake, "机器人！", 3) == ("success", ["好的，我回来了，请问有什么可以帮您？"])
    assert not await in_handoff(bot.runtime.store, USER)
    assert await say(bot, fake, "你好", 4) == ("success", ["您好"])


async def test_entering_the_session_again_ends_the_quiet_on_a_mini_program(make_bot, fake):
    bot = await make_bot(RULES)
    await say(bot, fake, "人工", 11)
    await enter(bot)
    assert fake.sent[-1]["text"]["content"] == "欢迎回来"
    assert await say(bot, fake, "你好", 12) == ("success", ["您好"])


async def test_end_on_enter_false_keeps_the_quiet(make_bot, fake):
    bot = await make_bot(RULES, config="handoff:\n  end_on_enter: false\n")
    await say(bot, fake, "人工", 21)
    await enter(bot)
    assert await say(bot, fake, "你好", 22) == ("success", [])


async def test_the_admin_endpoint_ends_one_users_quiet(make_bot, fake):
    bot = await make_bot(RULES, config=CONFIG)
    await say(bot, fake, "人工", 31)
    await say(bot, fake, "人工", 32, user="o_other_user")
    assert (await bot.client.post("/admin/handoff/end", json={"user": USER})).status == 401
    for bad in ({}, {"user": ""}, {"user": 5}):
        resp = await bot.client.post("/admin/handoff/end", json=bad, headers=AUTH)
        assert resp.status == 400 and "user" in (await resp.json())["error"]
    resp = await bot.client.post("/admin/handoff/end", data=b"{not json", headers=AUTH)
    assert resp.status == 400
    resp = await bot.client.post("/admin/handoff/end", json={"user": USER}, headers=AUTH)
    assert resp.status == 200 and await resp.json() == {"user": USER, "ended": True}
    again = await bot.client.post("/admin/handoff/end", params={"user": USER}, headers=AUTH)
    assert await again.json() == {"user": USER, "ended": False}
    assert await say(bot, fake, "你好", 33) == ("success", ["您好"])
    assert await say(bot, fake, "你好", 34, user="o_other_user") == ("success", [])  # only that user


async def test_the_admin_endpoint_is_off_without_a_token(make_bot):
    bot = await make_bot(RULES)
    assert (await bot.client.post("/admin/handoff/end", json={"user": USER}, headers=AUTH)).status == 404


async def test_the_console_button_ends_the_quiet(make_bot, fake):
    bot = await make_bot(RULES, config=CONFIG)
    assert (await login(bot, ADMIN)).status == 303
    page = await (await bot.client.get(f"/admin/conversations?user={USER}")).text()
    assert 'id="end-handoff"' not in page  # not with agents: no button
    await say(bot, fake, "人工", 41)
    page = await (await bot.client.get(f"/admin/conversations?user={USER}")).text()
    assert 'id="end-handoff"' in page
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    assert (await bot.client.post("/admin/conversations/end-handoff", data={"user": USER})).status == 403
    resp = await bot.client.post("/admin/conversations/end-handoff", data={"csrf": csrf, "user": USER},
                                 allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].endswith("&done=handoff")
    assert not await in_handoff(bot.runtime.store, USER)
    page = await (await bot.client.get(resp.headers["Location"])).text()
    assert "已结束人工接待" in page and 'id="end-handoff"' not in page
    assert await say(bot, fake, "你好", 42) == ("success", ["您好"])
    resp = await bot.client.post("/admin/conversations/end-handoff", data={"csrf": await csrf_of(bot), "user": ""})
    assert resp.status == 400


@pytest.mark.parametrize("rule,expected", [
    ("    end_handoff: true\n    transfer: true\n    reply: x\n",
     "rules/a.yaml:4: rule 'r': 'end_handoff' brings the user back to the bot; it cannot go with 'transfer: true'"),
    ("    end_handoff: yes please\n    reply: x\n", "rules/a.yaml:4: rule 'r': 'end_handoff' must be true or false"),
    ("    end_handoff: true\n    during_handoff: false\n    reply: x\n",
     "rules/a.yaml:5: rule 'r': 'end_handoff: true' answers during the quiet after a transfer; drop "
     "'during_handoff: false'"),
])
def test_end_handoff_mistakes(rule, expected):
    with pytest.raises(RulesError) as info:
        compile_ruleset([SourceFile("rules/a.yaml", f"rules:\n  - name: r\n    when: {{equals: [a]}}\n{rule}")])
    assert expected in str(info.value)


def test_end_handoff_implies_during_handoff():
    ruleset = compile_ruleset([SourceFile("rules/a.yaml", "rules:\n  - name: r\n    when: {equals: [a]}\n"
                                                          "    end_handoff: true\n    reply: x\n")])
    assert ruleset.rules[0].during_handoff and ruleset.rules[0].end_handoff


TESTS = """
tests:
  - name: 说“机器人”回到机器人
    steps:
      - say: 人工
        expect: {rule: human, transfer: true}
      - say: 你好
        expect: {rule: fallback, reply: []}
      - say: 返回
        expect: {rule: back-to-bot}
      - say: 你好
        expect: {rule: hello, reply: 您好}
  - name: 重新进入客服
    steps:
      - say: 人工
        expect: {transfer: true}
      - event: user_enter_tempsession
        expect: {rule: welcome}
      - say: 你好
        expect: {rule: hello}
"""


async def test_kefu_test_plays_the_ways_out(tmp_path):
    write_bot(tmp_path, RULES)
    (tmp_path / "rules" / "a.test.yaml").write_text(TESTS, encoding="utf-8")
    from bot.config import load_settings
    from bot.sources import load_ruleset

    settings = load_settings(tmp_path / "bot.yaml")
    ruleset = load_ruleset(settings)
    zone = ZoneInfo("Asia/Shanghai")
    now = datetime(2026, 12, 1, 10, 0, tzinfo=zone)
    cases = load_cases(tmp_path / "rules" / "a.test.yaml", tmp_path, zone)
    assert [await run_case(ruleset, case, now, settings) for case in cases] == [[], []]
    kept = await run_case(ruleset, cases[1], now, replace(settings, handoff=replace(settings.handoff,
                                                                                    end_on_enter=False)))
    assert len(kept) == 1 and "expected rule 'hello', got 'fallback'" in kept[0].what


async def test_a_reload_takes_a_changed_window(make_bot, fake, tmp_path):
    rules = {"a.yaml": "rules:\n  - name: hours\n    when: {equals: [几点]}\n"
                       "    reply: '客服时间：{{ hours.service }}'\n"}
    bot = await make_bot(rules, config=CONFIG + "hours:\n  service: {hours: '09:00-21:00'}\n")
    assert await say(bot, fake, "几点", 51) == ("success", ["客服时间：每天 09:00-21:00"])
    config = tmp_path / "bot.yaml"
    config.write_text(config.read_text(encoding="utf-8").replace("09:00-21:00", "10:00-22:00"), encoding="utf-8")
    body = await (await bot.client.post("/admin/reload", headers=AUTH)).json()
    assert body["reloaded"] is True and body["restart_needed"] == []
    assert await say(bot, fake, "几点", 52) == ("success", ["客服时间：每天 10:00-22:00"])
