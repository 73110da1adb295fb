"""WeChat's send allowance: replies beyond it are dropped and logged instead of failing with 45047."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from bot.allowance import Allowance, key, opened, parse, save, take
from bot.config import QuotaSettings
from bot.protocol.wire import message_from_fields
from bot.store.memory import MemoryStore

from .helpers import event_fields, text_fields, xml_push

Q = QuotaSettings()
MANY = {"a.yaml": """
rules:
  - name: many
    when: {equals: [多条]}
    reply: [一, 二, 三]
  - name: welcome
    when: {event: user_enter_tempsession}
    reply: [欢迎, 有什么可以帮您, 第三条]
  - name: closed
    when: {event: kf_close_session}
    reply: 会话结束
"""}


def msg(**fields):
    return message_from_fields(MappingProxyType({"FromUserName": "o", "ToUserName": "gh", **fields}))


@pytest.mark.parametrize("current,message,expected", [
    (None, msg(MsgType="text", Content="x"), Allowance(5, 1000 + 48 * 3600)),
    (Allowance(1, 1500), msg(MsgType="text", Content="x"), Allowance(5, 1000 + 48 * 3600)),  # resets
    (None, msg(MsgType="event", Event="user_enter_tempsession"), Allowance(2, 1060)),
    (Allowance(4, 5000), msg(MsgType="event", Event="user_enter_tempsession"), Allowance(4, 5000)),
    (None, msg(MsgType="event", Event="kf_close_session"), None),
    (Allowance(3, 900), msg(MsgType="event", Event="LOCATION"), None),  # expired
])
def test_opened(current, message, expected):
    assert opened(current, message, 1000, Q, "miniprogram") == expected


def test_official_account_events_that_open_an_allowance():
    for event in ("subscribe", "SCAN", "CLICK"):
        assert opened(None, msg(MsgType="event", Event=event), 0, Q, "official_account") == Allowance(2, 60)
    assert opened(None, msg(MsgType="event", Event="VIEW"), 0, Q, "official_account") is None


def test_take():
    assert take(Allowance(5, 100), 3, 0) == (3, Allowance(2, 100))
    assert take(Allowance(2, 100), 3, 0) == (2, Allowance(0, 100))
    assert take(Allowance(2, 100), 1, 200) == (0, Allowance(2, 100))
    assert take(None, 1, 0) == (0, None)


async def test_replies_beyond_the_allowance_are_dropped_and_logged(make_bot, fake, caplog):
    bot = await make_bot(MANY, config="quota:\n  per_message: 4\n")
    await bot.push(xml_push(text_fields("多条")))  # opens 4: three go
    await bot.push(xml_push(text_fields("多条")))  # opens 4 again (it resets): three go
    await bot.drain()
    assert len(fake.sent) == 6
    await bot.push(xml_push(event_fields("user_enter_tempsession")))  # 1 left of the 4 ≥ 2? no: 4-3=1 → 2 new
    await bot.drain()
    assert [s["text"]["content"] for s in fake.sent[6:]] == ["欢迎", "有什么可以帮您"]  # the third dropped
    failed = [e for e in await bot.runtime.store.log_query(user=fake.sent[0]["touser"]) if e.kind == "failed"]
    assert [(e.text, e.errcode) for e in failed] == [("第三条", 45047)]
    assert any("send allowance" in r.getMessage() for r in caplog.records)


async def test_no_allowance_no_send(make_bot, fake):
    bot = await make_bot(MANY)
    await bot.push(xml_push(event_fields("kf_close_session", KfAccount="a@x")))
    await bot.drain()
    assert fake.sent == []


async def test_the_allowance_can_be_turned_off(make_bot, fake):
    bot = await make_bot(MANY, config="quota:\n  enabled: false\n")
    await bot.push(xml_push(event_fields("kf_close_session", KfAccount="a@x")))
    await bot.drain()
    assert len(fake.sent) == 1


@pytest.mark.parametrize("raw,expected", [
    ("5 1714285645.25", Allowance(5, 1714285645.25)),
    ('{"left": 2, "until": 1060.0}', Allowance(2, 1060.0)),  # as versions before 2026-11-28 wrote it
    ("", None), (None, None), ("garbage", None), ("1 2 3", None), ('{"left": "x"}', None),
])
def test_stored_records_old_and_new_are_read(raw, expected):
    assert parse(raw) == expected


async def test_a_saved_allowance_reads_back_exactly():
    store = MemoryStore()
    record = Allowance(3, 1714112445.123456)
    await save(store, "o1", record, now=1714112000.0)
    assert parse(await store.get(key("o1"))) == record
