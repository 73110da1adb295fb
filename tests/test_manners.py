"""Manners: quiet while the user is with human agents, and cooldowns."""

from __future__ import annotations

from .helpers import event_fields, text_fields, xml_push

RULES = {"a.yaml": """
rules:
  - name: human
    when: {equals: [人工]}
    reply: 正在转接
    transfer: true
    during_handoff: true
  - name: hello
    when: {equals: [你好]}
    reply: 您好
  - name: promo
    cooldown: 10m
    when: {keywords: [优惠]}
    reply: 本周满100减20
  - name: promo-again
    when: {keywords: [优惠]}
    reply: 优惠信息刚发过了，往上翻翻哦
  - name: closed
    when: {event: kf_close_session}
    reply: 人工服务结束，有问题随时问我
"""}


async def answer(bot, fake, content: str, msg_id: int):
    before = len(fake.sent)
    text = await (await bot.push(xml_push(text_fields(content, msg_id=msg_id)))).text()
    await bot.drain()
    return ("transfer" if "transfer_customer_service" in text else text), [
        s["text"]["content"] for s in fake.sent[before:]]


async def test_quiet_while_with_agents_unless_the_rule_says_otherwise(make_bot, fake):
    bot = await make_bot(RULES)
    assert await answer(bot, fake, "你好", 1) == ("success", ["您好"])
    assert await answer(bot, fake, "人工", 2) == ("transfer", ["正在转接"])
    assert await answer(bot, fake, "你好", 3) == ("success", [])  # with agents: the bot keeps out of it
    assert await answer(bot, fake, "随便问问", 4) == ("success", [])  # not even a transfer
    assert await answer(bot, fake, "人工", 5) == ("transfer", ["正在转接"])  # during_handoff: true
    await bot.push(xml_push(event_fields("kf_close_session", KfAccount="a@x")))  # the agent closes
    await bot.drain()
    assert fake.sent[-1]["text"]["content"] == "人工服务结束，有问题随时问我"
    assert await answer(bot, fake, "你好", 6) == ("success", ["您好"])  # the bot answers again


async def test_the_quiet_ends_by_itself(make_bot, fake):
    bot = await make_bot(RULES)
    await answer(bot, fake, "人工", 11)
    bot.runtime.store._clock = lambda: 10**11  # memory store: long after handoff.quiet
    assert await answer(bot, fake, "你好", 12) == ("success", ["您好"])


async def test_the_quiet_can_be_turned_off(make_bot, fake):
    bot = await make_bot(RULES, config="handoff:\n  quiet: 0\n")
    await answer(bot, fake, "人工", 21)
    assert await answer(bot, fake, "你好", 22) == ("success", ["您好"])


async def test_a_cooling_rule_is_skipped_and_matching_continues(make_bot, fake):
    bot = await make_bot(RULES)
    assert await answer(bot, fake, "有优惠吗", 31) == ("success", ["本周满100减20"])
    assert await answer(bot, fake, "还有优惠吗", 32) == ("success", ["优惠信息刚发过了，往上翻翻哦"])
    bot.runtime.store._clock = lambda: 10**11  # ten minutes (and then some) later
    assert await answer(bot, fake, "优惠", 33) == ("success", ["本周满100减20"])


async def test_cooldowns_are_per_user(make_bot, fake):
    bot = await make_bot(RULES)
    await answer(bot, fake, "优惠", 41)
    other = await (await bot.push(xml_push(text_fields("优惠", user="o_another_user", msg_id=42)))).text()
    await bot.drain()
    assert other == "success" and fake.sent[-1]["text"]["content"] == "本周满100减20"


async def test_cooldowns_are_shared_by_instances(fleet_of, fake):
    first, second = await fleet_of(RULES, 2)
    await answer(first, fake, "优惠", 51)
    assert await answer(second, fake, "优惠", 52) == ("success", ["优惠信息刚发过了，往上翻翻哦"])
