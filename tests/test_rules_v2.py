"""Matching that fits Chinese text, and conditions: normalisation, session_from, page, user, any, not, time,
and a fallback that depends on the hour."""

from __future__ import annotations

from datetime import datetime
from types import MappingProxyType
from zoneinfo import ZoneInfo

import pytest

from bot.engine import SourceFile, compile_ruleset, decide
from bot.engine.conditions import normalize
from bot.errors import RulesError
from bot.protocol.wire import message_from_fields

TZ = ZoneInfo("Asia/Shanghai")
MONDAY_10 = datetime(2026, 11, 30, 10, 0, tzinfo=TZ)  # a Monday
MONDAY_23 = datetime(2026, 11, 30, 23, 30, tzinfo=TZ)
SATURDAY_10 = datetime(2026, 12, 5, 10, 0, tzinfo=TZ)
NATIONAL_DAY = datetime(2026, 10, 3, 10, 0, tzinfo=TZ)


def rules(text: str):
    return compile_ruleset([SourceFile("rules/a.yaml", text)])


def text(content: str, user: str = "o_user"):
    return message_from_fields(MappingProxyType({"FromUserName": user, "ToUserName": "gh", "MsgType": "text",
                                                 "Content": content, "MsgId": "1"}))


def event(name: str, **fields):
    return message_from_fields(MappingProxyType({"FromUserName": "o_user", "ToUserName": "gh", "MsgType": "event",
                                                 "Event": name, **fields}))


def page(path: str):
    return message_from_fields(MappingProxyType({"FromUserName": "o_user", "ToUserName": "gh",
                                                 "MsgType": "miniprogrampage", "PagePath": path, "Title": "t",
                                                 "MsgId": "2"}))


def fired(ruleset, message, now=MONDAY_10):
    return decide(ruleset, message, now).rule


@pytest.mark.parametrize("raw,expected", [
    ("  ＡＢＣ１２３？！ ", "abc123"), ("人工。", "人工"), ("【发货】", "发货"), ("转人工～", "转人工"),
    ("Hello, World!!", "hello, world"), ("人工😀", "人工"), ("¥100", "¥100"), ("", ""), ("？？", ""),
])
def test_normalize(raw, expected):
    assert normalize(raw) == expected


NORMALIZING = rules("""
rules:
  - name: human
    when: {equals: [人工, 转人工]}
    transfer: true
  - name: vip
    when: {keywords: [VIP会员]}
    reply: vip
  - name: invoice
    when: {prefix: [发票]}
    reply: "抬头：{{ match.rest }}"
  - name: exact
    normalize: false
    when: {equals: [ABC]}
    reply: exact
  - name: order
    normalize: all
    when: {regex: 'order(?P<no>\\d+)'}
    reply: "{{ match.no }}"
""")


@pytest.mark.parametrize("content,rule", [
    ("人工", "human"), ("人工！", "human"), (" 转人工。", "human"), ("人 工", None),
    ("我要开ｖｉｐ会员", "vip"), ("我要开VIP会员", "vip"), ("我要开vip会员", "vip"),
    ("【发票】某某公司", "invoice"), ("发票 某某公司", "invoice"), ("开发票", None), ("ABC", "exact"), ("abc", None),
    ("ＯＲＤＥＲ１２３", "order"),
])
def test_normalised_matching(content, rule):
    assert fired(NORMALIZING, text(content)) == rule


SYMBOLS = rules("""
rules:
  - name: csharp
    when: {keywords: [C#]}
    reply: c#
  - name: cpp
    when: {keywords: [C++]}
    reply: c++
  - name: grade
    when: {equals: [A+]}
    reply: a+
  - name: command
    when: {prefix: [/start]}
    reply: "{{ match.rest }}"
  - name: question
    when: {keywords: ['？']}
    reply: q
""")


@pytest.mark.parametrize("content,rule", [
    ("cancel my order", None), ("Can I get a refund", None), ("c", None), ("a", None), ("start", None),
    ("C#课程", "csharp"), ("学ｃ＃", "csharp"), ("C++ 入门", "cpp"), ("c++", "cpp"), ("A+", "grade"),
    ("ａ＋", "grade"), (" A+ ", "grade"), ("/start 1", "command"), ("？/START", "command"), ("有吗?", "question"),
])
def test_a_value_keeps_its_symbols_and_is_matched_as_written(content, rule):
    """Values are folded like the text (case, width) but never cut down: `C#` is not `c`, which would fire on
    almost every message."""
    assert fired(SYMBOLS, text(content)) == rule


def test_a_prefix_with_symbols_gives_the_rest_in_the_users_characters():
    assert decide(SYMBOLS, text("！／ｓｔａｒｔ　ＡＢＣ"), MONDAY_10).replies[0].content == "ＡＢＣ"


def test_prefix_rest_keeps_the_users_characters_without_the_separator():
    decision = decide(NORMALIZING, text("发票：ＡＢＣ有限公司"), MONDAY_10)
    assert decision.replies[0].content == "抬头：ＡＢＣ有限公司"
    assert decision.match["rest_raw"] == "：ＡＢＣ有限公司"


def test_regex_sees_the_original_text_by_default():
    ruleset = rules("rules:\n  - name: r\n    when: {regex: 'ORDER'}\n    reply: x\n")
    assert fired(ruleset, text("ORDER")) == "r" and fired(ruleset, text("order")) is None


FIELDS = rules("""
rules:
  - name: from-order-page
    when: {event: user_enter_tempsession, session_from: order_page}
    reply: a
  - name: from-goods
    when: {event: user_enter_tempsession, session_from: {regex: '^goods_(?P<goods>\\d+)$'}}
    reply: "{{ match.goods }}"
  - name: page
    when: {page: {regex: '^pages/item/'}}
    reply: p
  - name: exact-page
    priority: 1
    when: {page: pages/cart/index}
    reply: cart
  - name: testers
    priority: 5
    when: {user: [o_tester_1, o_tester_2], keywords: [测试]}
    reply: t
""")


@pytest.mark.parametrize("message,rule", [
    (event("user_enter_tempsession", SessionFrom="order_page"), "from-order-page"),
    (event("user_enter_tempsession", SessionFrom="goods_42"), "from-goods"),
    (event("user_enter_tempsession", SessionFrom="other"), None),
    (event("user_enter_tempsession"), None),
    (page("pages/item/9"), "page"), (page("pages/cart/index"), "exact-page"), (page("pages/x"), None),
    (text("测试一下", user="o_tester_2"), "testers"), (text("测试一下"), None),
])
def test_field_conditions(message, rule):
    assert fired(FIELDS, message) == rule


def test_session_from_regex_captures():
    assert decide(FIELDS, event("user_enter_tempsession", SessionFrom="goods_42"), MONDAY_10).replies[0].content == "42"


LOGIC = rules("""
rules:
  - name: any-of
    when:
      any:
        - {keywords: [退货]}
        - {keywords: [退款], not: {keywords: [不]}}
    reply: refund
  - name: not-tester
    when: {keywords: [价格], not: {user: [o_tester]}}
    reply: price
""")


@pytest.mark.parametrize("content,user,rule", [
    ("我要退货", "o_user", "any-of"), ("我要退款", "o_user", "any-of"), ("我不要退款", "o_user", None),
    ("价格多少", "o_user", "not-tester"), ("价格多少", "o_tester", None),
])
def test_any_and_not(content, user, rule):
    assert fired(LOGIC, text(content, user)) == rule


HOURS = rules("""
rules:
  - name: night
    when: {keywords: [在吗], time: {hours: '22:00-06:00'}}
    reply: 夜间
  - name: workday
    when: {keywords: [在吗], time: {weekdays: mon-fri, hours: ['09:00-12:00', '13:00-18:00']}}
    reply: 工作时间
  - name: holiday
    priority: 10
    when: {keywords: [在吗], time: {dates: ['2026-10-01..2026-10-07', '2026-12-25']}}
    reply: 假期
fallback:
  - when: {not: {time: {weekdays: mon-fri, hours: '09:00-18:00'}}}
    reply: 客服下班了，明早9点回复您
  - transfer: true
""")


@pytest.mark.parametrize("now,rule", [
    (MONDAY_10, "workday"), (MONDAY_23, "night"), (SATURDAY_10, None), (NATIONAL_DAY, "holiday"),
    (datetime(2026, 11, 30, 12, 30, tzinfo=TZ), None), (datetime(2026, 12, 1, 5, 59, tzinfo=TZ), "night"),
    (datetime(2026, 12, 1, 6, 0, tzinfo=TZ), None), (datetime(2026, 12, 25, 10, 0, tzinfo=TZ), "holiday"),
])
def test_time_windows(now, rule):
    assert fired(HOURS, text("在吗"), now) == rule


@pytest.mark.parametrize("weekdays,days", [
    ("mon", {0}), ("monday", {0}), ("Fri-Mon", {4, 5, 6, 0}), ("'mon,wed,fri'", {0, 2, 4}),
    ("'mon wed  fri'", {0, 2, 4}), ("'mon, sat - sun'", {0, 5, 6}), ("[mon, 'wed,thu']", {0, 2, 3}),
    ("tues-thurs", {1, 2, 3}), ("Thurs", {3}), ("weds", {2}), ("wedn", {2}),  # English's own short forms
])
def test_weekdays_are_names_ranges_or_several_of_them(weekdays, days):
    ruleset = rules(f"rules:\n  - name: r\n    when: {{time: {{weekdays: {weekdays}}}}}\n    reply: x\n")
    assert ruleset.rules[0].when.weekdays == frozenset(days)


@pytest.mark.parametrize("now", [datetime(2026, 11, 30, 0, 0, tzinfo=TZ), MONDAY_23,
                                 datetime(2026, 11, 30, 23, 59, 59, 999999, tzinfo=TZ)])
def test_midnight_to_midnight_is_the_whole_day(now):
    ruleset = rules("rules:\n  - name: r\n    when: {keywords: [在吗], time: {hours: '00:00-24:00'}}\n    reply: x\n")
    assert fired(ruleset, text("在吗"), now) == "r"


@pytest.mark.parametrize("now,reply,transfer", [
    (MONDAY_10, None, True), (MONDAY_23, "客服下班了，明早9点回复您", False),
    (SATURDAY_10, "客服下班了，明早9点回复您", False),
])
def test_fallback_depends_on_the_hour(now, reply, transfer):
    decision = decide(HOURS, text("随便问问"), now)
    assert decision.rule is None and decision.transfer is transfer
    assert [r.content for r in decision.replies] == ([reply] if reply else [])


@pytest.mark.parametrize("when,message", [
    ("{time: {weekdays: mon-funday}}", "rules/a.yaml:3: rule 'r': 'time': weekdays: 'mon-funday' is not a weekday"),
    ("{time: {weekdays: monkey}}", "'monkey' is not a weekday or range (did you mean 'monday'?)"),
    ("{time: {weekdays: 'mon,wed,fry'}}", "weekdays: 'mon,wed,fry': 'fry' is not a weekday or range (did you mean"),
    ("{time: {weekdays: ','}}", "names no weekday"),
    ("{time: {hours: '12:00-12:00'}}", "is an empty hour range"),
    ("{time: {hours: '9-18'}}", "is not an hour range like 09:00-18:00"),
    ("{time: {hours: '09:00-09:00'}}", "is an empty hour range"),
    ("{time: {dates: ['2026-10-07..2026-10-01']}}", "ends before it starts"),
    ("{time: {days: mon}}", "unknown key 'days'"),
    ("{any: {keywords: [a]}}", "'any' is a list of when-blocks"),
    ("{not: [a]}", "'when' must be a mapping"),
    ("{session_from: {regex: '('}}", "bad regex"),
])
def test_condition_mistakes_are_reported_with_file_and_line(when, message):
    with pytest.raises(RulesError) as info:
        rules(f"rules:\n  - name: r\n    when: {when}\n    reply: x\n")
    assert message in str(info.value)
    assert str(info.value).startswith("rules/a.yaml:3:")


def test_normalize_must_be_true_false_or_all():
    with pytest.raises(RulesError) as info:
        rules("rules:\n  - name: r\n    normalize: sometimes\n    when: {equals: [a]}\n    reply: x\n")
    assert "rules/a.yaml:3: rule 'r': 'normalize' is true" in str(info.value)


@pytest.mark.parametrize("value,content", [
    ("退款？", "我要退款"), ("怎么退货?", "请问怎么退货"), ("【优惠券】", "有优惠券吗"), ("🎁礼品", "礼品怎么领"),
])
def test_a_keyword_written_with_punctuation_around_it_matches_the_plain_word(value, content):
    """Only symbols that belong to a word are kept (C#, /start): an operator's question mark, brackets or emoji
    around a keyword are not part of it, as they were not before values kept their symbols."""
    ruleset = rules(f"rules:\n  - name: r\n    when: {{keywords: ['{value}']}}\n    reply: ok\n")
    assert fired(ruleset, text(content)) == "r"


@pytest.mark.parametrize("value,content", [("人工！", "人工"), ("转人工。", "转人工"), ("A+", "a+")])
def test_equals_with_sentence_punctuation_matches_the_bare_text(value, content):
    ruleset = rules(f"rules:\n  - name: r\n    when: {{equals: ['{value}']}}\n    reply: ok\n")
    assert fired(ruleset, text(content)) == "r"


def test_monkey_is_no_monday():
    with pytest.raises(RulesError, match="'monkey' is not a weekday"):
        rules("rules:\n  - name: r\n    when: {time: {weekdays: monkey}}\n    reply: x\n")
