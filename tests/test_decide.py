"""bot.engine.decide: (RuleSet, Message, now) → Decision. Also the bundled rules and `kefu chat` lines."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.chat import CHAT_ACCOUNT, CHAT_USER, message_from_line
from bot.config import load_settings
from bot.engine import RuleSet, SourceFile, compile_ruleset, decide
from bot.errors import RulesError
from bot.messages import (
    Decision,
    EnterSessionEvent,
    ImageMessage,
    ImageReply,
    LinkReply,
    MenuEvent,
    Message,
    MiniProgramPageMessage,
    MiniProgramPageReply,
    TextMessage,
    TextReply,
    VoiceMessage,
)
from bot.protocol.wire import message_from_fields
from bot.sources import load_ruleset

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2024, 6, 1, 14, 30, 5, tzinfo=ZoneInfo("Asia/Shanghai"))
VARS = {"shop_name": "示例小店", "hotline": "400-000-0000"}


def ruleset(rules: str, templates: dict[str, str] | None = None, vars: dict[str, Any] | None = None,
            platform: str = "miniprogram") -> RuleSet:
    return compile_ruleset(
        [SourceFile("rules/test.yaml", rules)],
        [SourceFile(f"templates/{k}", v, k) for k, v in (templates or {}).items()],
        vars=VARS if vars is None else vars,
        platform=platform,
    )


def text(content: str, **extra: Any) -> Message:
    return message_from_fields({"ToUserName": "gh_1", "FromUserName": "o_user", "CreateTime": 1717223405,
                                "MsgType": "text", "Content": content, "MsgId": 1, **extra})


def image() -> Message:
    return message_from_fields({"ToUserName": "gh_1", "FromUserName": "o_user", "CreateTime": 1717223405,
                                "MsgType": "image", "PicUrl": "http://x/p.jpg", "MediaId": "m1", "MsgId": 2})


def voice(recognition: str | None) -> Message:
    fields = {"ToUserName": "gh_1", "FromUserName": "o_user", "CreateTime": 1717223405, "MsgType": "voice",
              "MediaId": "v1", "Format": "amr", "MsgId": 3}
    if recognition is not None:
        fields["Recognition"] = recognition
    return message_from_fields(fields)


def event(name: str, **extra: Any) -> Message:
    return message_from_fields({"ToUserName": "gh_1", "FromUserName": "o_user", "CreateTime": 1717223405,
                                "MsgType": "event", "Event": name, **extra})


def one_rule(when: str, reply: str = "    reply: ok\n", name: str = "r") -> str:
    return f"rules:\n  - name: {name}\n    when:\n{when}{reply}"


# ---- matching ----------------------------------------------------------------------------------------

# (id, when block (indented 6), message, matches?, expected match captures when it does)
MATCHING: list[tuple[str, str, Message, bool, dict[str, Any]]] = [
    ("keywords-hit", "      keywords: [发货, 快递]\n", text("我的快递到哪了"), True, {"keyword": "快递"}),
    ("keywords-first-found", "      keywords: [发货, 快递]\n", text("发货了吗？快递呢"), True,
     {"keyword": "发货"}),
    ("keywords-single", "      keywords: 退款\n", text("怎么退款"), True, {"keyword": "退款"}),
    ("keywords-miss", "      keywords: [发货, 快递]\n", text("你好"), False, {}),
    ("keywords-not-on-image", "      keywords: [发货]\n", image(), False, {}),
    ("keywords-not-on-event", "      keywords: [subscribe]\n", event("subscribe"), False, {}),
    ("equals-exact", "      equals: [人工, 转人工]\n", text("转人工"), True, {"text": "转人工"}),
    ("equals-trimmed", "      equals: [人工]\n", text("  人工 \n"), True, {"text": "人工"}),
    ("equals-value-trimmed", "      equals: [' 人工 ']\n", text("人工"), True, {"text": "人工"}),
    ("equals-not-contains", "      equals: [人工]\n", text("我要人工"), False, {}),
    ("equals-not-prefix", "      equals: [人工]\n", text("人工客服"), False, {}),
    ("prefix-rest", "      prefix: [发票, 开票]\n", text("  发票 上海某某有限公司  "), True,
     {"prefix": "发票", "rest": "上海某某有限公司", "rest_raw": " 上海某某有限公司  "}),
    ("prefix-empty-rest", "      prefix: [发票]\n", text("发票"), True,
     {"prefix": "发票", "rest": "", "rest_raw": ""}),
    ("prefix-second", "      prefix: [发票, 开票]\n", text("开票：abc"), True,
     {"prefix": "开票", "rest": "abc", "rest_raw": "：abc"}),
    ("prefix-rest-keeps-opening-quote", "      prefix: [发票]\n", text("发票：“上海某某”公司。"), True,
     {"prefix": "发票", "rest": "“上海某某”公司。", "rest_raw": "：“上海某某”公司。"}),
    ("prefix-rest-dash-and-spaces", "      prefix: [发票]\n", text("发票 - 上海 某某"), True,
     {"prefix": "发票", "rest": "上海 某某", "rest_raw": " - 上海 某某"}),
    ("prefix-not-inside", "      prefix: [发票]\n", text("我要发票"), False, {}),
    ("regex-named-groups", "      regex: '(?:订单|单号)\\D*(?P<order_no>\\d{8,20})'\n",
     text("您好，订单号：2024060112345678 怎么还没到"), True,
     {"order_no": "2024060112345678", "text": "订单号：2024060112345678"}),
    ("regex-second-pattern", "      regex: ['^x(?P<a>\\d)$', '(?P<b>[a-z]+)@']\n", text("mail: bob@x"), True,
     {"b": "bob", "text": "bob@"}),
    ("regex-unmatched-optional-group", "      regex: '(?P<n>\\d+)(?P<unit>kg)?'\n", text("重 12"), True,
     {"n": "12", "text": "12"}),
    ("regex-miss", "      regex: '\\d{8,}'\n", text("订单 1234"), False, {}),
    ("event-lower-rule-upper-push", "      event: user_enter_tempsession\n",
     event("USER_ENTER_TEMPSESSION", SessionFrom="x"), True, {}),
    ("event-upper-rule-lower-push", "      event: SCAN\n", event("scan", EventKey="1"), True, {}),
    ("event-mixed", "      event: [Click, VIEW]\n", event("view", EventKey="http://x"), True, {}),
    ("event-other", "      event: subscribe\n", event("unsubscribe"), False, {}),
    ("event-not-on-text", "      event: subscribe\n", text("subscribe"), False, {}),
    ("msgtype-image", "      msgtype: image\n", image(), True, {}),
    ("msgtype-case", "      msgtype: IMAGE\n", image(), True, {}),
    ("msgtype-list", "      msgtype: [video, image]\n", image(), True, {}),
    ("msgtype-other", "      msgtype: image\n", text("图片"), False, {}),
    ("msgtype-event", "      msgtype: event\n", event("whatever_new"), True, {}),
    ("all-keys-hold", "      msgtype: voice\n      keywords: [发货]\n", voice("发货了吗"), True,
     {"keyword": "发货"}),
    ("all-keys-one-fails", "      msgtype: voice\n      keywords: [发货]\n", text("发货了吗"), False, {}),
    ("all-keys-merge-captures", "      keywords: [订单]\n      regex: '(?P<n>\\d+)'\n", text("订单 42"), True,
     {"keyword": "订单", "n": "42", "text": "42"}),
    ("all-keys-event-and-msgtype", "      msgtype: event\n      event: click\n", event("CLICK", EventKey="k"),
     True, {}),
    ("voice-recognition-is-text", "      equals: [人工]\n", voice("人工"), True, {"text": "人工"}),
    ("voice-without-recognition", "      keywords: [发货]\n", voice(None), False, {}),
    ("voice-empty-recognition", "      equals: ['x']\n", voice(""), False, {}),
]


@pytest.mark.parametrize(("when", "message", "matches", "captures"), [m[1:] for m in MATCHING],
                         ids=[m[0] for m in MATCHING])
def test_matching(when, message, matches, captures):
    rs = ruleset(one_rule(when))
    decision = decide(rs, message, NOW)
    if matches:
        assert decision.rule == "r"
        assert dict(decision.match) == captures
        assert decision.replies == (TextReply("ok"),)
    else:
        assert decision.rule is None
        assert decision.label == "(fallback)"


FIRST_WINS = """\
rules:
  - name: first
    when:
      keywords: [快递]
    reply: first
  - name: second
    when:
      keywords: [快递, 物流]
    reply: second
  - name: urgent
    priority: 10
    when:
      keywords: [加急]
    reply: urgent
"""


@pytest.mark.parametrize(
    ("content", "rule"),
    [
        ("快递", "first"),  # both match: the first in the file wins
        ("物流", "second"),
        ("快递 加急", "urgent"),  # priority beats position
        ("加急", "urgent"),
        ("无关", None),
    ],
)
def test_first_match_wins_and_priority_beats_order(content, rule):
    decision = decide(ruleset(FIRST_WINS), text(content), NOW)
    assert decision.rule == rule
    if rule is not None:
        assert decision.replies == (TextReply(rule),)


def test_fallback_by_default_transfers_without_replies():
    rs = ruleset(one_rule("      equals: [x]\n"))
    decision = decide(rs, text("something else"), NOW)
    assert decision == Decision(rule=None, replies=(), transfer=True, match={}, version=rs.version)
    assert decision.label == "(fallback)"


def test_fallback_with_only_a_reply_does_not_transfer():
    rs = ruleset("rules: []\nfallback:\n  reply: 没听懂，{{ vars.shop_name }}稍后回复您\n")
    decision = decide(rs, text("?"), NOW)
    assert decision.rule is None
    assert decision.replies == (TextReply("没听懂，示例小店稍后回复您"),)
    assert decision.transfer is False


# ---- replies -----------------------------------------------------------------------------------------

TEMPLATES = {
    "shipping.j2": "{{ vars.shop_name }}：订单付款后 48 小时内发货（{{ match.keyword }}）。\n"
                   "{% include '_foot.j2' %}",
    "_foot.j2": "祝您购物愉快！\n",
}


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("    reply: 您好，我是{{ vars.shop_name }}的客服\n", (TextReply("您好，我是示例小店的客服"),)),
        ("    reply: 纯文本，不用模板\n", (TextReply("纯文本，不用模板"),)),
        ("    reply:\n      text: '关键词：{{ match.keyword }}'\n", (TextReply("关键词：发货"),)),
        ("    reply:\n      template: shipping.j2\n",
         (TextReply("示例小店：订单付款后 48 小时内发货（发货）。\n祝您购物愉快！"),)),
        ("    reply:\n      image: MEDIA_{{ match.keyword | length }}\n", (ImageReply("MEDIA_2"),)),
        ("    reply:\n      link:\n        title: 联系{{ vars.shop_name }}\n        url: https://example.com/c\n",
         (LinkReply(title="联系示例小店", description="", url="https://example.com/c", thumb_url=""),)),
        ("    reply:\n      link:\n        title: t\n        description: d {{ match.keyword }}\n"
         "        url: https://e.com\n        thumb_url: https://e.com/t.png\n",
         (LinkReply(title="t", description="d 发货", url="https://e.com", thumb_url="https://e.com/t.png"),)),
        ("    reply:\n      miniprogrampage:\n        title: 领券\n"
         "        pagepath: pages/coupon?k={{ match.keyword }}\n"
         "        thumb_media_id: THUMB\n",
         (MiniProgramPageReply(title="领券", pagepath="pages/coupon?k=发货", thumb_media_id="THUMB",
                               appid=None),)),
        ("    reply:\n      - text: 第一条\n      - image: M1\n      - 第三条 {{ match.keyword }}\n"
         "      - text: 第四条\n",
         (TextReply("第一条"), ImageReply("M1"), TextReply("第三条 发货"), TextReply("第四条"))),
    ],
    ids=["inline", "inline-constant", "text", "template-with-include", "image", "link-minimal", "link-full",
         "miniprogrampage", "list-in-order"],
)
def test_replies(reply, expected):
    rs = ruleset(one_rule("      keywords: [发货]\n", reply), TEMPLATES)
    decision = decide(rs, text("什么时候发货"), NOW)
    assert decision.rule == "r"
    assert decision.replies == expected
    assert decision.transfer is False
    assert decision.error is None


def test_miniprogrampage_appid_on_official_account():
    rs = ruleset(one_rule("      equals: [券]\n",
                          "    reply:\n      miniprogrampage:\n        title: 领券\n"
                          "        pagepath: pages/c\n        thumb_media_id: T\n"
                          "        appid: wx_{{ vars.n }}\n"),
                 vars={"n": 7}, platform="official_account")
    assert decide(rs, text("券"), NOW).replies == (
        MiniProgramPageReply(title="领券", pagepath="pages/c", thumb_media_id="T", appid="wx_7"),)


def test_templates_see_message_match_vars_now_and_rule():
    reply = ("    reply: >-\n"
             "      {{ message.from_user }}|{{ message.to_user }}|{{ message.content }}"
             "|{{ message.msg_type }}"
             "|{{ match.order_no }}|{{ vars.shop_name }}|{{ now.strftime('%Y-%m-%d %H:%M') }}"
             "|{{ rule.name }}|{{ rule.file }}:{{ rule.line }}|{{ rule.priority }}\n")
    rs = ruleset(one_rule("      regex: '(?P<order_no>\\d{8})'\n", reply, name="lookup"))
    decision = decide(rs, text("单号 12345678"), NOW)
    assert decision.replies == (TextReply(
        "o_user|gh_1|单号 12345678|text|12345678|示例小店|2024-06-01 14:30|lookup|rules/test.yaml:2|0"),)


def test_templates_see_event_fields():
    rs = ruleset(one_rule("      event: user_enter_tempsession\n",
                          "    reply: '{{ message.event }} from {{ message.session_from }} "
                          "/ {{ message.fields.SessionFrom }}'\n"))
    decision = decide(rs, event("user_enter_tempsession", SessionFrom="btn-1"), NOW)
    assert decision.replies == (TextReply("user_enter_tempsession from btn-1 / btn-1"),)


def test_fallback_templates_see_rule_info():
    rs = ruleset("rules: []\nfallback:\n  reply: '{{ rule.name is none }} {{ rule.file }}:{{ rule.line }}'\n")
    assert decide(rs, text("x"), NOW).replies == (TextReply("True rules/test.yaml:2"),)


def test_now_is_the_clock_passed_in():
    rs = ruleset(one_rule("      equals: [几点]\n", "    reply: \"{{ now.strftime('%H:%M') }}\"\n"))
    later = datetime(2030, 1, 2, 3, 4, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert decide(rs, text("几点"), NOW).replies == (TextReply("14:30"),)
    assert decide(rs, text("几点"), later).replies == (TextReply("03:04"),)


def test_a_reply_that_renders_empty_is_skipped():
    reply = ("    reply:\n"
             "      - '{% if match.keyword == \"退款\" %}退款说明{% endif %}'\n"
             "      - text: 总会发送\n"
             "      - '   '\n"
             "      - text: \"{{ '' }}\"\n"
             "      - '{% if false %}never{% endif %}'\n")
    rs = ruleset(one_rule("      keywords: [退款, 发货]\n", reply))
    assert decide(rs, text("发货"), NOW).replies == (TextReply("总会发送"),)
    assert decide(rs, text("退款"), NOW).replies == (TextReply("退款说明"), TextReply("总会发送"))


def test_reply_text_is_stripped():
    rs = ruleset(one_rule("      equals: [a]\n", "    reply: |\n\n      多行\n      文本\n\n"))
    assert decide(rs, text("a"), NOW).replies == (TextReply("多行\n文本"),)


def test_a_template_file_saved_with_a_bom_does_not_send_it():
    """Windows Notepad's "UTF-8" starts the file with U+FEFF: not part of the reply, nor of an include."""
    rs = ruleset(one_rule("      equals: [a]\n", "    reply:\n      template: t.j2\n"),
                 {"t.j2": "\ufeff您好{% include '_foot.j2' %}", "_foot.j2": "\ufeff，请问"})
    assert decide(rs, text("a"), NOW).replies == (TextReply("您好，请问"),)


# ---- transfer --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "message", "replies", "transfer"),
    [
        (one_rule("      equals: [人工]\n", "    transfer: true\n"), text("人工"), (), True),
        (one_rule("      equals: [人工]\n", "    reply: 正在转接\n    transfer: true\n"), text("人工"),
         (TextReply("正在转接"),), True),
        (one_rule("      msgtype: image\n", "    reply: 图片已收到\n    transfer: true\n"), image(),
         (TextReply("图片已收到"),), True),
        (one_rule("      equals: [人工]\n", "    reply: 不转\n    transfer: false\n"), text("人工"),
         (TextReply("不转"),), False),
        # events are never transferred
        (one_rule("      event: user_enter_tempsession\n", "    reply: 欢迎\n    transfer: true\n"),
         event("user_enter_tempsession"), (TextReply("欢迎"),), False),
        (one_rule("      event: subscribe\n", "    transfer: true\n"), event("subscribe"), (), False),
        (one_rule("      msgtype: event\n", "    transfer: true\n"), event("kf_close_session"), (), False),
        ("rules: []\n", event("user_enter_tempsession"), (), False),  # default fallback
        # the fallback answers what users write; an event no rule names gets nothing (LOCATION, VIEW, …)
        ("rules: []\nfallback:\n  reply: 你好\n  transfer: true\n", event("CLICK", EventKey="k"), (), False),
        ("rules: []\nfallback:\n  reply: 你好\n  transfer: true\n", text("?"), (TextReply("你好"),), True),
        ("rules: []\n", event("some_new_event"), (), False),
        ("rules: []\n", text("x"), (), True),
    ],
    ids=["transfer-only", "reply-then-transfer", "image-transfer", "no-transfer", "event-rule-transfer",
         "event-transfer-only", "kf-event", "event-default-fallback", "event-fallback-reply-transfer",
         "message-fallback-reply-transfer", "unknown-event-fallback", "message-default-fallback"],
)
def test_transfer(rules, message, replies, transfer):
    decision = decide(ruleset(rules), message, NOW)
    assert decision.replies == replies
    assert decision.transfer is transfer
    assert decision.error is None


# ---- render errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "message", "transfer"),
    [
        ("      msgtype: image\n", image(), True),
        ("      event: subscribe\n", event("subscribe"), False),
        ("      msgtype: [image, event]\n", event("CLICK", EventKey="k"), False),
    ],
    ids=["message", "event", "menu-event"],
)
def test_render_error_gives_error_and_no_replies(when, message, transfer):
    reply = "    reply:\n      - text: 第一条没问题\n      - '内容：{{ message.content }}'\n"
    rs = ruleset(one_rule(when, reply))
    decision = decide(rs, message, NOW)
    assert decision.rule == "r"
    assert decision.replies == ()  # never sent half-made
    assert decision.error is not None
    assert "content" in decision.error
    assert decision.transfer is transfer
    assert decision.version == rs.version


@pytest.mark.parametrize(
    "reply",
    [
        "    reply: '{{ match.missing }}'\n",
        "    reply: '{{ vars.nope }}'\n",
        "    reply: '{{ 1 / 0 }}'\n",
        "    reply: '{{ message.fields.NoSuchField }}'\n",
        "    reply: \"{{ now.strftime(42) }}\"\n",
        "    reply:\n      image: '{{ match.keyword.nope }}'\n",
        "    reply:\n      link:\n        title: t\n        url: '{{ vars.url }}'\n",
        "    reply: '{{ message.content|truncate(2) }}'\n",  # jinja asserts length >= leeway: AssertionError
    ],
)
def test_render_errors_on_a_text_message_transfer(reply):
    rs = ruleset(one_rule("      keywords: [发货]\n", reply))
    decision = decide(rs, text("发货"), NOW)
    assert decision.error
    assert decision.replies == ()
    assert decision.transfer is True


def test_self_including_template_is_caught():
    """Refused at load time, or at least an error in the Decision: never a RecursionError out of decide."""
    rules = one_rule("      equals: [a]\n", "    reply:\n      template: loop.j2\n")
    templates = {"loop.j2": "again {% include 'loop.j2' %}"}
    try:
        rs = ruleset(rules, templates)
    except RulesError as exc:  # refusing it at load time is a fine fix
        assert "loop.j2" in str(exc)
        return
    decision = decide(rs, text("a"), NOW)
    assert decision.error
    assert decision.replies == ()
    assert decision.transfer is True


def test_decide_is_deterministic():
    rs = ruleset(FIRST_WINS)
    assert decide(rs, text("快递"), NOW) == decide(rs, text("快递"), NOW)


def test_decision_carries_the_version():
    rs = ruleset(FIRST_WINS)
    assert decide(rs, text("快递"), NOW).version == rs.version
    assert decide(rs, text("zzz"), NOW).version == rs.version


# ---- the bundled rules -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundled() -> RuleSet:
    settings = load_settings(ROOT / "bot.yaml", env={})
    return load_ruleset(settings)


def test_bundled_rules_load(bundled):
    names = [r.name for r in bundled.rules]
    assert {"welcome", "human", "shipping", "order-number"} <= set(names)
    assert len(names) == len(set(names))
    assert names[0] == "human"  # priority 100
    assert bundled.fallback.transfer is True
    assert "shipping.j2" in bundled.templates
    assert bundled.rule("shipping").file == "rules/20-orders.yaml"


@pytest.mark.parametrize(
    ("message", "rule", "transfer", "reply_contains"),
    [
        (event("user_enter_tempsession", SessionFrom="x"), "welcome", False, "示例小店"),
        (text("人工"), "human", True, "转接"),
        (text("我的快递到哪了"), "shipping", False, "48 小时内发货"),
        (text("订单 2024060112345678"), "order-number", True, "2024060112345678"),
        (text("完全无关的话"), None, True, None),
    ],
)
def test_bundled_rules_decide(bundled, message, rule, transfer, reply_contains):
    decision = decide(bundled, message, NOW)
    assert decision.error is None
    assert decision.rule == rule
    assert decision.transfer is transfer
    if reply_contains is not None:
        assert any(reply_contains in r.content for r in decision.replies if isinstance(r, TextReply))


# ---- kefu chat lines -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "cls", "expected"),
    [
        ("你好", TextMessage, {"content": "你好", "msg_type": "text", "msg_id": "7"}),
        ("  发货了吗  ", TextMessage, {"content": "发货了吗"}),
        ("//help", TextMessage, {"content": "/help"}),
        ("/event user_enter_tempsession", EnterSessionEvent,
         {"event": "user_enter_tempsession", "session_from": "", "msg_id": None}),
        ("/event user_enter_tempsession k1 from-button", EnterSessionEvent,
         {"event": "user_enter_tempsession", "event_key": "k1", "session_from": "from-button"}),
        ("/event CLICK menu_1", MenuEvent, {"event": "click", "event_key": "menu_1"}),
        ("/image", ImageMessage, {"msg_type": "image", "msg_id": "7", "media_id": "chat_media"}),
        ("/page pages/item/index 商品 详情", MiniProgramPageMessage,
         {"page_path": "pages/item/index", "title": "商品 详情"}),
        ("/page pages/index", MiniProgramPageMessage, {"page_path": "pages/index", "title": "pages/index"}),
        ("/voice 我要 退款", VoiceMessage, {"recognition": "我要 退款", "text": "我要 退款"}),
        ("/IMAGE", ImageMessage, {"msg_type": "image"}),
    ],
)
def test_message_from_line(line, cls, expected):
    message = message_from_line(line, now=1717223405.7, counter=7)
    assert type(message) is cls
    assert message.from_user == CHAT_USER
    assert message.to_user == CHAT_ACCOUNT
    assert message.create_time == 1717223405
    for attr, value in expected.items():
        assert getattr(message, attr) == value, attr


@pytest.mark.parametrize("line", ["", "   ", "\n"])
def test_message_from_empty_line(line):
    assert message_from_line(line, now=1.0, counter=1) is None


@pytest.mark.parametrize("line", ["/dance", "/event", "/page", "/voice", "/", "/help me"])
def test_message_from_unknown_command(line):
    with pytest.raises(ValueError, match="unknown command"):
        message_from_line(line, now=1.0, counter=1)


def test_chat_lines_go_through_the_rules(bundled):
    decision = decide(bundled, message_from_line("/voice 快递到哪了", now=1.0, counter=1), NOW)
    assert decision.rule == "shipping"
