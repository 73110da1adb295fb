"""Conversations: set_state, remember, state in when, clear_state — through real pushes and the store."""

from __future__ import annotations

import pytest

from bot.engine import SourceFile, compile_ruleset
from bot.errors import RulesError

from .helpers import text_fields, xml_push

FLOW = {"a.yaml": """
rules:
  - name: start
    when: {keywords: [退货], not: {state: awaiting_order}}
    reply: 请发送订单号
    set_state: awaiting_order
    ttl: 10m
  - name: order
    priority: 10
    when: {state: awaiting_order, regex: '(?P<no>\\d{6,})'}
    reply: '收到 {{ match.no }}，原因？'
    set_state: awaiting_reason
    remember: {order_no: '{{ match.no }}'}
  - name: reason
    priority: 10
    when: {state: awaiting_reason, msgtype: text}
    reply: '订单 {{ state.order_no }}：{{ message.content }}'
    clear_state: true
    transfer: true
  - name: where
    when: {equals: [状态]}
    reply: '{{ state.name }}'
"""}


async def say(bot, fake, content: str, msg_id: int) -> tuple[str, str | None]:
    before = len(fake.sent)
    answer = await (await bot.push(xml_push(text_fields(content, msg_id=msg_id)))).text()
    await bot.drain()
    sent = fake.sent[before:]
    return ("transfer" if "transfer_customer_service" in answer else answer), (
        sent[0]["text"]["content"] if sent else None)


async def test_a_conversation_through_real_pushes(make_bot, fake):
    bot = await make_bot(FLOW, config="handoff:\n  quiet: 0\n")  # what follows the transfer is about state
    assert await say(bot, fake, "状态", 1) == ("success", "none")
    assert await say(bot, fake, "我要退货", 2) == ("success", "请发送订单号")
    assert await say(bot, fake, "状态", 3) == ("success", "awaiting_order")
    assert await say(bot, fake, "单号 2024060112", 4) == ("success", "收到 2024060112，原因？")
    assert await say(bot, fake, "尺码不对", 5) == ("transfer", "订单 2024060112：尺码不对")
    assert await say(bot, fake, "状态", 6) == ("success", "none")  # cleared


async def test_state_set_through_one_instance_is_seen_by_another(fleet_of, fake):
    first, second = await fleet_of(FLOW, 2)
    assert await say(first, fake, "我要退货", 11) == ("success", "请发送订单号")
    assert await say(second, fake, "单号 99999999", 12) == ("success", "收到 99999999，原因？")
    assert await say(first, fake, "太大了", 13) == ("transfer", "订单 99999999：太大了")


async def test_state_expires(make_bot, fake):
    bot = await make_bot(FLOW)
    await say(bot, fake, "我要退货", 21)
    stored = await bot.runtime.store.get("state:o9AgO5Kd5ggOC-bXrbNODIiE3bGY")
    assert stored and "awaiting_order" in stored
    bot.runtime.store._clock = lambda: 10**11  # memory store: far in the future
    assert await say(bot, fake, "状态", 22) == ("success", "none")


def test_rule_sets_without_state_do_not_load_it():
    plain = compile_ruleset([SourceFile("rules/a.yaml", "rules:\n  - name: r\n    when: {equals: [a]}\n"
                                                         "    reply: x\n")])
    stateful = compile_ruleset([SourceFile("rules/a.yaml", FLOW["a.yaml"])])
    assert plain.uses_state is False and stateful.uses_state is True


@pytest.mark.parametrize("keys,message", [
    ("set_state: a\n    clear_state: true", "cannot go together"),
    ("set_state: a\n    ttl: forever", "'ttl' must be a duration"),
    ("ttl: 10m", "'ttl' goes with 'set_state'"),
    ("remember: {x: y}", "'remember' goes with 'set_state'"),
    ("set_state: none", "is a name (not 'none')"),
    ("set_state: a\n    remember: [x]", "'remember' maps names to values"),
])
def test_state_mistakes_are_reported(keys, message):
    with pytest.raises(RulesError) as info:
        compile_ruleset([SourceFile("rules/a.yaml", f"rules:\n  - name: r\n    when: {{equals: [a]}}\n"
                                                    f"    reply: x\n    {keys}\n")])
    assert message in str(info.value) and str(info.value).startswith("rules/a.yaml:")
