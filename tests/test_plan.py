"""plan(): what a Decision means for one push — pure, so tested with plain values."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

import pytest

from bot.allowance import Allowance
from bot.config import OutboxSettings, QuotaSettings, Settings, WeChatSettings
from bot.engine.outcome import AnswerKind, DropReason, Handoff, UserRecords, plan
from bot.messages import Decision, ImageReply, State, StateChange, TextReply, TypingReply
from bot.protocol.wire import message_from_fields
from bot.textsplit import split_replies

NOW = 1_800_000_000.0
S = Settings()


def msg(**fields):
    return message_from_fields(MappingProxyType({"FromUserName": "o", "ToUserName": "gh", "CreateTime": "1",
                                                 **fields}))


TEXT = msg(MsgType="text", Content="你好", MsgId="1")
ENTER = msg(MsgType="event", Event="user_enter_tempsession")
CLOSE = msg(MsgType="event", Event="kf_close_session")


def texts(*contents: str) -> tuple[TextReply, ...]:
    return tuple(TextReply(c) for c in contents)


def test_a_rule_that_replies_sends_through_the_api_and_answers_success():
    p = plan(Decision("r", texts("一", "二")), TEXT, UserRecords(), S, NOW)
    assert p.answer is AnswerKind.SUCCESS and p.sends == texts("一", "二") and p.sent == texts("一", "二")
    assert p.dropped == () and p.handoff is None and p.cooling is None
    assert p.allowance == Allowance(3, NOW + 48 * 3600) and p.save_allowance  # a user message opened 5


def test_a_transfer_starts_the_quiet_and_names_the_agent():
    p = plan(Decision("r", texts("稍等"), transfer=True, kf_account="a@x"), TEXT, UserRecords(), S, NOW)
    assert p.answer is AnswerKind.TRANSFER and p.kf_account == "a@x" and p.handoff is Handoff.START
    assert plan(Decision(None, transfer=True), TEXT, UserRecords(), replace(S, handoff=replace(
        S.handoff, quiet=0)), NOW).handoff is None  # handoff.quiet: 0 keeps the bot talking


def test_kf_close_session_ends_the_quiet():
    assert plan(Decision(None), CLOSE, UserRecords(), S, NOW).handoff is Handoff.END


def test_the_quiet_answers_success_and_sends_nothing():
    p = plan(Decision(None, quiet=True), TEXT, UserRecords(handoff=True), S, NOW)
    assert p.answer is AnswerKind.SUCCESS and p.sends == () and p.sent == () and p.handoff is None


def test_a_cooldown_is_added_to_the_users_others():
    p = plan(Decision("promo", texts("x"), cooldown=3600), TEXT, UserRecords(cooling={"other": NOW + 5}), S, NOW)
    assert p.cooling == {"other": NOW + 5, "promo": NOW + 3600}
    assert plan(Decision(None, texts("x"), cooldown=3600), TEXT, UserRecords(), S, NOW).cooling is None


def test_the_state_change_is_carried():
    change = StateChange(State("awaiting", {}), 600)
    assert plan(Decision("r", state=change), TEXT, UserRecords(), S, NOW).state is change


def test_entering_the_session_allows_two_the_third_is_dropped_and_says_why():
    p = plan(Decision("welcome", texts("一", "二", "三")), ENTER, UserRecords(), S, NOW)
    assert p.sends == texts("一", "二")
    assert [(d.reply, d.reason, d.errcode) for d in p.dropped] == [(TextReply("三"), DropReason.ALLOWANCE, 45047)]
    assert p.allowance == Allowance(0, NOW + 60)


def test_typing_costs_nothing_and_goes_only_with_a_message():
    replies = (TypingReply(), *texts("一"))
    assert plan(Decision("r", replies), ENTER, UserRecords(), S, NOW).sends == replies
    used_up = UserRecords(allowance=Allowance(0, NOW + 60))
    p = plan(Decision("r", replies), CLOSE, used_up, S, NOW)  # kf_close_session opens nothing
    assert p.sends == () and [d.reply for d in p.dropped] == [TextReply("一")]


def test_long_texts_split_then_the_per_push_cap_then_the_allowance():
    long = "很长的一段说明文字。" * 300  # 9,000 bytes: five messages
    settings = replace(S, outbox=OutboxSettings(per_push=3))
    p = plan(Decision("long", texts(long)), TEXT, UserRecords(), settings, NOW)
    parts = split_replies(texts(long))
    assert len(parts) == 5 and p.sends == parts[:3]
    assert [(d.reply, d.reason) for d in p.dropped] == [(r, DropReason.PER_PUSH) for r in parts[3:]]
    p = plan(Decision("long", texts(long)), TEXT, UserRecords(), S, NOW)  # cap 10: the allowance (5) bites
    assert p.sends == parts[:5] and p.dropped == ()
    p = plan(Decision("long", texts(long, "再见")), TEXT, UserRecords(), S, NOW)
    assert p.sends == parts[:5] and [(d.reply, d.reason) for d in p.dropped] == [(TextReply("再见"),
                                                                                DropReason.ALLOWANCE)]


def test_without_the_quota_every_reply_goes():
    settings = replace(S, quota=QuotaSettings(enabled=False))
    p = plan(Decision("r", texts("一", "二", "三")), ENTER, UserRecords(), settings, NOW)
    assert p.sends == texts("一", "二", "三") and p.allowance is None and not p.save_allowance


OA = replace(S, wechat=WeChatSettings(platform="official_account"))


def test_one_passive_reply_is_the_answer_and_uses_no_allowance():
    p = plan(Decision("r", texts("您好"), passive=True), TEXT, UserRecords(), OA, NOW)
    assert p.answer is AnswerKind.PASSIVE and p.passive == TextReply("您好") and p.sends == ()
    assert p.sent == (TextReply("您好"),) and p.allowance == Allowance(5, NOW + 48 * 3600)
    p = plan(Decision("r", texts("您好"), passive=True), TEXT, UserRecords(), OA, NOW, passive=False)
    assert p.answer is AnswerKind.SUCCESS and p.sends == (TextReply("您好"),)  # the API instead


def test_a_passive_reply_that_splits_goes_through_the_api():
    p = plan(Decision("r", texts("字" * 1000), passive=True), TEXT, UserRecords(), OA, NOW)
    assert p.answer is AnswerKind.SUCCESS and len(p.sends) == 2


@pytest.mark.parametrize("content,parts", [("😀" * 600, 2), ("好" * 667, 2), ("好" * 666, 1), ("a" * 2000, 1)])
def test_texts_split_on_bytes_not_characters(content, parts):
    split = split_replies((TextReply(content),))
    assert len(split) == parts and all(len(r.content.encode()) <= 2000 for r in split)  # type: ignore[attr-defined]
    assert "".join(r.content for r in split) == content  # type: ignore[attr-defined]


def test_plan_is_pure():
    decision = Decision("r", (ImageReply("", None), *texts("x")))
    records = UserRecords()
    assert plan(decision, TEXT, records, S, NOW) == plan(decision, TEXT, records, S, NOW)
