"""The rule language gaps of issue 18: `all:` and keyword groups, bot.yaml's named time windows, `weight: 0`,
`match.rest` without its separator, per-platform defaults, and what `kefu check` warns about."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from types import MappingProxyType
from zoneinfo import ZoneInfo

import pytest

from bot.__main__ import main
from bot.config import parse_settings
from bot.engine import SourceFile, compile_ruleset, decide
from bot.engine.conditions import Subject
from bot.engine.index import build_index
from bot.engine.lint import warnings
from bot.errors import ConfigError, RulesError
from bot.hours import describe
from bot.protocol.wire import message_from_fields

from .helpers import write_bot
from .test_index import both

TZ = ZoneInfo("Asia/Shanghai")
MONDAY_10 = datetime(2026, 11, 30, 10, 0, tzinfo=TZ)
MONDAY_20 = datetime(2026, 11, 30, 20, 0, tzinfo=TZ)
SATURDAY_10 = datetime(2026, 12, 5, 10, 0, tzinfo=TZ)
NATIONAL_DAY = datetime(2026, 10, 3, 10, 0, tzinfo=TZ)

BOT_YAML = """\
wechat:
  platform: miniprogram
hours:
  business: {weekdays: mon-fri, hours: '09:00-18:00'}
  holidays:
    dates: ['2026-10-01..2026-10-07']
  evening: {hours: ['18:00-24:00', '00:00-01:00']}
"""


def settings(text: str = BOT_YAML):
    return parse_settings(text, "bot.yaml", Path("/tmp"), env={})


def rules(text: str, windows=None, platform: str = "miniprogram"):
    return compile_ruleset([SourceFile("rules/a.yaml", text)], windows=windows, platform=platform)


def problems(text: str, windows=None) -> list[str]:
    with pytest.raises(RulesError) as info:
        rules(text, windows)
    return [str(p) for p in info.value.problems]


def text(content: str):
    return message_from_fields(MappingProxyType({"FromUserName": "o_user", "ToUserName": "gh", "MsgType": "text",
                                                 "Content": content, "MsgId": "1"}))


def event(name: str):
    return message_from_fields(MappingProxyType({"FromUserName": "o_user", "ToUserName": "gh", "MsgType": "event",
                                                 "Event": name, "CreateTime": "1"}))


# ---- 1. all: and keyword groups -----------------------------------------------------------------------

ALL = rules("""
rules:
  - name: refund-order
    when:
      all:
        - keywords: [退款]
        - keywords: [订单, 单号]
    reply: 退款订单 {{ match.keyword }}
  - name: groups
    when:
      keywords: [发票, [换货, 尺码], [ＶＩＰ, 会员卡]]
    reply: "{{ match.keyword }} {{ match.keywords | default('-') }}"
  - name: refund
    when: {keywords: [退款]}
    reply: 退款
""")


@pytest.mark.parametrize("content,rule,captures", [
    ("我要退款，订单 123", "refund-order", {"keyword": "订单"}),
    ("退款的单号是多少", "refund-order", {"keyword": "单号"}),
    ("我要退款", "refund", {"keyword": "退款"}),
    ("订单", None, {}),
    ("换货，尺码不对", "groups", {"keyword": "换货", "keywords": ["换货", "尺码"]}),
    ("尺码要换货", "groups", {"keyword": "换货", "keywords": ["换货", "尺码"]}),  # in any order
    ("我要换货", None, {}),  # one word of a group is not enough
    ("vip会员卡", "groups", {"keyword": "vip", "keywords": ["vip", "会员卡"]}),  # folded like every keyword
    ("开发票", "groups", {"keyword": "发票"}),
])
def test_all_and_keyword_groups(content, rule, captures):
    assert both(ALL, text(content)) == (rule, captures)


def test_a_keyword_group_renders_its_words():
    assert decide(ALL, text("换货 尺码"), MONDAY_10).replies[0].content == "换货 ['换货', '尺码']"


def test_keyword_groups_are_found_through_the_index():
    index = build_index(ALL.rules)
    assert index.candidates(Subject.of(text("天气不错"), MONDAY_10)) == ()  # no word of any rule: none is tried
    # a group is looked up by one of its words (any will do: all must occur)
    assert index.candidates(Subject.of(text("换货"), MONDAY_10)) == (1,)
    assert index.candidates(Subject.of(text("尺码"), MONDAY_10)) == ()


@pytest.mark.parametrize("when,expected", [
    ("{all: []}", "rules/a.yaml:4: rule 'r': 'all' is a list of when-blocks, every one of which must hold"),
    ("{all: [{keyword: [x]}]}", "rules/a.yaml:4: rule 'r': all[1]: unknown key 'keyword' (did you mean 'keywords'?)"),
    ("{keywords: [a, []]}", "rules/a.yaml:4: rule 'r': 'keywords': a group is a list of words that must all occur"),
    ("{keywords: [a, [b, 1]]}", "rules/a.yaml:4: rule 'r': 'keywords' group must be text, not a number"),
    ("{keywords: [a, [b, [c]]]}", "rules/a.yaml:4: rule 'r': 'keywords' group must be text, not a list"),
])
def test_all_and_group_mistakes_say_file_and_line(when, expected):
    found = problems(f"rules:\n  - name: r\n    reply: x\n    when: {when}\n")
    assert any(expected in p for p in found), found


def test_equals_with_numbers_is_one_problem_per_line():
    assert problems("rules:\n  - name: r\n    reply: x\n    when: {equals: [1, 2]}\n") == [
        "rules/a.yaml:4: rule 'r': 'equals' must be text, not a number (put them in quotes)"]
    found = problems("rules:\n  - name: r\n    reply: x\n    when:\n      equals:\n        - 1\n        - 2\n")
    assert found == [f"rules/a.yaml:{n}: rule 'r': 'equals' must be text, not a number (put it in quotes)"
                     for n in (6, 7)]


# ---- 2. named time windows ----------------------------------------------------------------------------

WINDOWS = settings().hours
TIMED = rules("""
rules:
  - name: holiday
    when: {keywords: [发货], time: holidays}
    reply: 国庆期间暂停发货
  - name: working
    when:
      keywords: [发货]
      time: business
      not: {time: holidays}
    reply: 今天发货
  - name: late
    when: {keywords: [发货], time: [evening]}
    reply: 明天发货（客服时间 {{ hours.business }}）
""", WINDOWS)


@pytest.mark.parametrize("now,rule", [
    (MONDAY_10, "working"), (SATURDAY_10, None), (NATIONAL_DAY, "holiday"), (MONDAY_20, "late"),
    (datetime(2026, 12, 1, 0, 30, tzinfo=TZ), "late"),
])
def test_rules_name_windows_from_bot_yaml(now, rule):
    assert decide(TIMED, text("发货了吗"), now).rule == rule


def test_templates_print_a_window_in_words():
    assert decide(TIMED, text("发货"), MONDAY_20).replies[0].content == "明天发货（客服时间 周一至周五 09:00-18:00）"
    assert {name: str(w) for name, w in WINDOWS.items()} == {
        "business": "周一至周五 09:00-18:00", "holidays": "2026-10-01至2026-10-07",
        "evening": "每天 18:00-24:00、00:00-01:00"}


@pytest.mark.parametrize("spec,words", [
    ("{weekdays: [mon, wed, fri]}", "周一、周三、周五"), ("{weekdays: sat-mon, hours: '10:00-16:00'}",
                                                          "周一、周六至周日 10:00-16:00"),
    ("{hours: '00:00-24:00'}", "每天 00:00-24:00"), ("{weekdays: mon-sun}", "每天"),
    ("{dates: ['2027-01-01', '2027-02-10..2027-02-17']}", "2027-01-01、2027-02-10至2027-02-17"),
])
def test_describe(spec, words):
    assert describe(settings(f"hours:\n  w: {spec}\n").hours["w"].condition) == words


def test_a_window_the_rules_do_not_know_is_refused_with_its_line():
    found = problems("rules:\n  - name: r\n    reply: x\n    when: {time: busines}\n", WINDOWS)
    assert found == ["rules/a.yaml:4: rule 'r': 'time': no time window named 'busines'; bot.yaml names business, "
                     "evening, holidays (did you mean 'business'?)"]
    assert problems("rules:\n  - name: r\n    reply: x\n    when: {time: business}\n") == [
        "rules/a.yaml:4: rule 'r': 'time': no time window named 'business'; name windows under 'hours:' in bot.yaml"]


def test_a_template_naming_a_window_bot_yaml_lacks_is_refused_with_its_line():
    assert problems("rules:\n  - name: r\n    when: {equals: [a]}\n    reply: '{{ hours.busines }}'\n",
                    WINDOWS) == ["rules/a.yaml:4: rule 'r': reply uses hours.busines, a time window bot.yaml does not "
                                 "name; bot.yaml names business, evening, holidays (did you mean 'business'?)"]
    with pytest.raises(RulesError) as info:
        compile_ruleset([SourceFile("rules/a.yaml", "rules:\n  - name: r\n    when: {equals: [a]}\n"
                                                    "    reply: {template: t.j2}\n")],
                        [SourceFile("templates/t.j2", "营业时间：\n{{ hours.service | upper }}", "t.j2")])
    assert [str(p) for p in info.value.problems] == [
        "templates/t.j2:2: template uses hours.service, a time window bot.yaml does not name; name windows under "
        "'hours:' in bot.yaml"]


@pytest.mark.parametrize("yaml,expected", [
    ("hours:\n  business: {weekdays: mon-fry}\n", "bot.yaml:2: hours: 'business': weekdays: 'mon-fry' is not"),
    ("hours:\n  business: {hour: '09:00-18:00'}\n", "bot.yaml:2: hours: 'business': unknown key 'hour'"),
    ("hours:\n  9am: {hours: '09:00-10:00'}\n", "bot.yaml:2: hours: '9am' is not a window name"),
    ("hours: [a]\n", "bot.yaml:1: 'hours' names time windows"),
    ("hours:\n  x:\n    dates: ['2026-10-07..2026-10-01']\n", "bot.yaml:3: hours: 'x': dates: '2026-10-07..2026-10-01'"
                                                              " ends before it starts"),
])
def test_bot_yaml_window_mistakes_say_file_and_line(yaml, expected):
    with pytest.raises(ConfigError) as info:
        settings(yaml)
    assert any(str(p).startswith(expected) for p in info.value.problems), info.value.problems


def test_a_changed_window_is_a_new_rule_set_version():
    other = settings(BOT_YAML.replace("09:00-18:00", "09:00-17:00")).hours
    source = "rules:\n  - name: r\n    when: {time: business}\n    reply: x\n"
    assert rules(source, WINDOWS).version != rules(source, other).version
    assert rules(source, WINDOWS).version == rules(source, settings().hours).version


# ---- 3. weight 0 --------------------------------------------------------------------------------------

def test_weight_zero_is_never_picked():
    ruleset = rules("rules:\n  - name: r\n    when: {equals: [你好]}\n    reply:\n      choice:\n"
                    "        - 您好！\n        - {text: 双十一快乐！, weight: 0}\n"
                    "        - {text: 您好呀～, weight: 2}\n")
    seen = {decide(ruleset, text("你好"), MONDAY_10, random=lambda r=r: r / 100).replies[0].content
            for r in range(100)}
    assert seen == {"您好！", "您好呀～"}
    # an alternative that is off is still checked
    assert problems("rules:\n  - name: r\n    when: {equals: [a]}\n    reply:\n      choice:\n"
                    "        - a\n        - {text: '{{ mach }}', weight: 0}\n")[0].startswith("rules/a.yaml:7:")


# ---- 7. platform defaults -----------------------------------------------------------------------------

@pytest.mark.parametrize("yaml,per_event,end_on_enter", [
    ("", 2, True),
    ("wechat:\n  platform: official_account\n", 3, False),
    ("wechat:\n  platform: official_account\nquota:\n  per_event: 1\nhandoff:\n  end_on_enter: true\n", 1, True),
    ("handoff:\n  end_on_enter: false\n", 2, False),
])
def test_defaults_follow_the_platform_and_bot_yaml_wins(yaml, per_event, end_on_enter):
    found = settings(yaml)
    assert (found.quota.per_event, found.handoff.end_on_enter) == (per_event, end_on_enter)


# ---- 8. what kefu check warns about -------------------------------------------------------------------

def test_a_rule_behind_a_regex_that_matches_every_text_is_reported():
    ruleset = rules("""
rules:
  - name: catch-all
    when: {regex: '.'}
    reply: 什么都答
  - name: shipping
    when: {keywords: [快递]}
    reply: 快递
  - name: photo
    when: {msgtype: image}
    reply: 图片
  - name: either
    when: {any: [{equals: [a]}, {event: subscribe}]}
    reply: 或者
""")
    found = warnings(ruleset)
    assert found == ("rules/a.yaml:6: rule 'shipping' can never fire: rule 'catch-all' (rules/a.yaml:3) comes "
                     "first and its regex matches every text",)


@pytest.mark.parametrize("pattern,reported", [
    (".", True), ("^", True), (".*", True), ("[\\s\\S]", True), ("\\d", False), ("^你好$", False),
])
def test_which_regexes_match_every_text(pattern, reported):
    ruleset = rules(f"rules:\n  - name: a\n    when: {{regex: '{pattern}'}}\n    reply: x\n"
                    f"  - name: b\n    when: {{equals: [你好]}}\n    reply: y\n")
    assert bool(warnings(ruleset)) is reported


def test_windows_in_the_past_are_reported():
    ruleset = rules("""
rules:
  - name: old-sale
    when: {keywords: [活动], time: {dates: ['2025-11-11', '2025-12-12']}}
    reply: 活动
  - name: holiday
    when: {keywords: [发货], not: {time: holidays}}
    reply: 发货
fallback:
  - when: {time: {dates: ['2025-01-01..2025-01-03']}}
    reply: 元旦
  - transfer: true
""", WINDOWS)
    found = warnings(ruleset, today=date(2027, 1, 1))
    assert found == (
        "rules/a.yaml:3: rule 'old-sale': every date of its time window is past (the last was 2025-12-12)",
        "rules/a.yaml:6: rule 'holiday': every date of its time window ('holidays' in bot.yaml) is past (the last "
        "was 2026-10-07)",
        "rules/a.yaml:10: fallback: every date of its time window is past (the last was 2025-01-03)")
    assert warnings(ruleset, today=date(2025, 12, 12))[0].startswith("rules/a.yaml:10:")  # only the fallback's


ALLOWANCE_RULES = """
rules:
  - name: welcome
    when: {event: user_enter_tempsession}
    reply: [一, 二, 三, 四, 五]
  - name: welcome-goods
    when: {event: user_enter_tempsession, session_from: goods}
    reply: [一, 二]
  - name: subscribe
    when: {event: subscribe}
    reply: [一, 二, 三, 四]
  - name: long
    when: {keywords: [介绍]}
    reply: [一, 二, 三, 四, 五, 六]
  - name: five
    when: {keywords: [五条]}
    reply: [一, 二, 三, 四, 五]
"""


def test_replies_beyond_the_send_allowance_are_reported():
    quota = settings("").quota
    found = warnings(rules(ALLOWANCE_RULES), quota=quota)
    assert found == (
        "rules/a.yaml:3: rule 'welcome': 5 replies, but user_enter_tempsession allows 2 sends within 1m "
        "(quota.per_event); the last 3 would not be sent",
        "rules/a.yaml:12: rule 'long': 6 replies, but a user's message allows 5 sends within 2d "
        "(quota.per_message); the last 1 would not be sent")
    official = settings("wechat:\n  platform: official_account\n").quota
    found = warnings(rules(ALLOWANCE_RULES, platform="official_account"), quota=official)
    # an official account has no user_enter_tempsession allowance of its own; subscribe allows 3
    assert [w.split(":")[1] for w in found] == ["9", "12"]
    assert "rule 'subscribe': 4 replies, but subscribe allows 3 sends within 1m (quota.per_event)" in found[0]
    assert not warnings(rules(ALLOWANCE_RULES), quota=settings("quota:\n  enabled: false\n").quota)


def test_kefu_check_prints_the_new_warnings(tmp_path, capsys):
    write_bot(tmp_path, {"a.yaml": "rules:\n  - name: welcome\n    when: {event: user_enter_tempsession}\n"
                                   "    reply: [一, 二, 三]\n  - name: old\n    when: {time: {dates: ['2020-01-01']},"
                                   " keywords: [x]}\n    reply: x\n"})
    assert main(["check", "--config", str(tmp_path / "bot.yaml")]) == 0
    out = capsys.readouterr().out
    assert "warning: rules/a.yaml:2: rule 'welcome': 3 replies, but user_enter_tempsession allows 2 sends" in out
    assert "warning: rules/a.yaml:5: rule 'old': every date of its time window is past" in out


def test_kefu_check_says_where_a_bot_yaml_window_is_wrong(tmp_path, capsys):
    write_bot(tmp_path, {"a.yaml": "rules:\n  - name: r\n    when: {time: business}\n    reply: x\n"},
              config="hours:\n  business: {hours: '9-18'}\n")
    assert main(["check", "--config", str(tmp_path / "bot.yaml")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'bot.yaml'}:" in err and "hours: 'business': hours: '9-18' is not an hour range" in err


def test_kefu_test_shows_the_replies_the_allowance_drops(tmp_path, capsys):
    write_bot(tmp_path, {"a.yaml": "rules:\n  - name: welcome\n    when: {event: user_enter_tempsession}\n"
                                   "    reply: [一, 二, 三]\n"})
    (tmp_path / "rules" / "a.test.yaml").write_text(
        "tests:\n  - name: 进入客服\n    steps:\n      - event: user_enter_tempsession\n"
        "        expect: {rule: welcome, reply: [一, 二, 三], sent: [一, 二], dropped: [三]}\n", encoding="utf-8")
    assert main(["test", "--config", str(tmp_path / "bot.yaml")]) == 0, capsys.readouterr().out
