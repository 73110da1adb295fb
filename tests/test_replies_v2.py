"""choice: one of several replies, weighted; typing: "typing…" before the replies."""

from __future__ import annotations

from datetime import datetime
from types import MappingProxyType
from zoneinfo import ZoneInfo

import pytest

from bot.engine import SourceFile, compile_ruleset, decide
from bot.errors import RulesError
from bot.protocol.wire import message_from_fields

from .helpers import text_fields, xml_push

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
CHOICE = compile_ruleset([SourceFile("rules/a.yaml", """
rules:
  - name: hi
    when: {equals: [你好]}
    reply:
      - choice:
          - 您好！
          - {text: '嗨，{{ vars.shop }}', weight: 2}
          - {image: MEDIA_HI, weight: 1}
      - text: 有什么可以帮您？
""")], vars={"shop": "小店"})
HELLO = message_from_fields(MappingProxyType({"FromUserName": "o", "ToUserName": "gh", "MsgType": "text",
                                              "Content": "你好", "MsgId": "1"}))


@pytest.mark.parametrize("point,first", [(0.0, "您好！"), (0.24, "您好！"), (0.26, "嗨，小店"), (0.74, "嗨，小店"),
                                         (0.76, "image")])
def test_choice_picks_by_weight_with_the_random_source_given(point, first):
    decision = decide(CHOICE, HELLO, NOW, random=lambda: point)
    got = decision.replies[0].content if decision.replies[0].kind == "text" else decision.replies[0].kind
    assert got == first
    assert decision.replies[1].content == "有什么可以帮您？"


def test_choice_is_spread_by_weight():
    import random

    rng = random.Random(7)
    counts: dict[str, int] = {}
    for _ in range(4000):
        reply = decide(CHOICE, HELLO, NOW, random=rng.random).replies[0]
        key = reply.kind if reply.kind != "text" else reply.content
        counts[key] = counts.get(key, 0) + 1
    assert 0.2 < counts["您好！"] / 4000 < 0.3 and 0.45 < counts["嗨，小店"] / 4000 < 0.55


@pytest.mark.parametrize("reply,message", [
    ("{choice: [只有一个]}", "'choice' is a list of at least two replies"),
    ("{choice: [a, {text: b, weight: -1}]}", "a choice's 'weight' is a number, 0 or more (0: never picked)"),
    ("{choice: [{text: a, weight: 0}, {text: b, weight: 0}]}",
     "rules/a.yaml:4: rule 'r': every alternative of this 'choice' has weight 0; give at least one a weight above 0"),
    ("{choice: [a, {text: b, weight: 关}]}", "a choice's 'weight' is a number, 0 or more"),
    ("{choice: [a, {text: b, wieght: 2}]}", "unknown key 'wieght' (did you mean 'weight'?)"),
])
def test_choice_mistakes(reply, message):
    with pytest.raises(RulesError) as info:
        compile_ruleset([SourceFile("rules/a.yaml", f"rules:\n  - name: r\n    when: {{equals: [a]}}\n"
                                                    f"    reply: {reply}\n")])
    assert message in str(info.value)


async def test_typing_goes_before_the_replies(make_bot, fake):
    bot = await make_bot({"a.yaml": "rules:\n  - name: slow\n    typing: true\n    when: {equals: [查询]}\n"
                                    "    reply: [查询中, 查到了]\n"})
    await bot.push(xml_push(text_fields("查询")))
    await bot.drain()
    paths = [c.path.rsplit("/", 1)[-1] for c in fake.calls if c.path.startswith("/cgi-bin/message")]
    assert paths == ["typing", "send", "send"]
    assert fake.calls_to("/cgi-bin/message/custom/typing")[0].body["command"] == "Typing"
    log = await bot.runtime.store.log_query()
    assert [e.kind for e in log if e.kind == "sent"] == ["sent", "sent"]  # typing is not logged as a message
