"""The server, `kefu test`, `kefu chat` and the console's try-it answer alike, step by step.

Every conversation — the bundled rules/*.test.yaml and a set of our own covering cooldowns, the quiet after a
transfer (ended by kf_close_session), the send allowance after user_enter_tempsession, state with a ttl and
`after:`, long texts that split, and the per-push cap — is played once through the real HTTP app with the fake
WeChat API. At every step we record what happened there (the rule, the replies the user got, the replies
dropped, the answer, the state after), and check that:
- try-it, asked just before the push with the user's openid, predicted exactly that;
- `kefu test`, given those observations as a step's `expect`, passes (so it computes the same);
- `kefu chat`, fed the same messages at the same times, prints the same.
"""

from __future__ import annotations

import asyncio
import io
import re
import shlex
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.chat import run_chat
from bot.config import load_settings
from bot.engine.outcome import Plan
from bot.messages import TextReply
from bot.protocol.wire import message_from_fields
from bot.ruletest import Case, load_cases, run_case
from bot.runtime import RUNTIME
from bot.server import create_app
from bot.sources import load_ruleset
from bot.store import MemoryStore
from bot.store.state import load_state
from bot.turn import dry_turn

from .conftest import FAST_RETRY
from .fakewechat import APPID, SECRET
from .helpers import TOKEN, signed_query, xml_push

ROOT = Path(__file__).resolve().parent.parent
ZONE = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 12, 1, 10, 0, tzinfo=ZONE)  # a weekday in business hours, for cases without `time:`

OWN_RULES = r"""
rules:
  - name: promo
    cooldown: 1h
    when: {keywords: [优惠]}
    reply: 本周满100减20。
  - name: promo-again
    when: {keywords: [优惠]}
    reply: 优惠信息刚发过啦，请查看上一条消息。
  - name: human
    when: {equals: [人工]}
    transfer: true
  - name: welcome
    when: {event: user_enter_tempsession}
    reply: [您好！, 这里是测试小店。, 有什么可以帮您？]
  - name: agent-left
    when: {event: kf_close_session}
    reply: 人工服务已结束，有问题随时找我。
  - name: return-start
    when: {keywords: [退货]}
    reply: 请发送订单号
    set_state: awaiting_order
    ttl: 10m
  - name: return-order
    priority: 10
    when: {state: awaiting_order, regex: '(?P<no>\d{6,})'}
    reply: 收到订单 {{ match.no }}
    clear_state: true
  - name: long
    when: {equals: [长文]}
    reply: "{{ '很长的一段说明文字。' * 300 }}"
  - name: emoji
    when: {equals: [表情]}
    reply: "{{ '😀' * 600 }}"
  - name: typing
    typing: true
    when: {equals: [稍等]}
    reply: 马上为您查询。
fallback:
  reply: 没听懂，换个说法试试？
"""

OWN_TESTS = """
tests:
  - name: cooldown
    steps:
      - {say: 有优惠吗}
      - {say: 还有优惠吗}
      - {say: 优惠, after: 61m}
  - name: quiet after a transfer, ended by the agent
    steps:
      - {say: 人工}
      - {say: 你好}
      - {say: 还在吗, after: 5m}
      - {event: kf_close_session}
      - {say: 你好}
  - name: quiet ends by itself
    steps:
      - {say: 人工}
      - {say: 你好, after: 31m}
  - name: allowance after entering the session
    steps:
      - {event: user_enter_tempsession, session_from: goods_1}
      - {event: user_enter_tempsession, after: 10s}
      - {say: 你好}
  - name: state with a ttl
    steps:
      - {say: 我要退货}
      - {say: 单号 12345678, after: 11m}
      - {say: 我要退货}
      - {say: 单号 12345678, after: 9m}
  - name: long texts split, and the per-push cap
    steps:
      - {say: 长文}
      - {say: 表情}
  - name: typing and images
    steps:
      - {say: 稍等}
      - {image: true}
"""


@dataclass(frozen=True)
class Seen:
    """What one step did, as each path reports it."""

    rule: str
    sent: tuple[str, ...]
    dropped: tuple[str, ...]
    answer: str  # success / transfer / passive
    state: str  # the state after the step ("none")


def texts(replies: Any) -> tuple[str, ...]:
    return tuple(r.content if isinstance(r, TextReply) else f"[{r.kind}]" for r in replies)


def predicted(plan: Plan, before: Any) -> Seen:
    """What try-it says the push will do."""
    change = plan.state
    state = (change.new.name if change.new is not None else "none") if change is not None else (
        before.name if before is not None else "none")
    return Seen(plan.decision.rule or "fallback", texts(plan.sent), texts(d.reply for d in plan.dropped),
                plan.answer.value, state)


_msg_ids = iter(range(10**15, 10**16))


def message_fields(case: Case, fields: dict[str, Any], now: float) -> dict[str, Any]:
    msg_id = {"MsgId": next(_msg_ids)} if fields["MsgType"] != "event" else {}  # WeChat's are unique
    return {**fields, "FromUserName": case.user, "CreateTime": int(now), **msg_id}


def cases_of(path: Path, base: Path) -> list[Case]:
    return load_cases(path, base, ZONE)


def write_own(tmp_path: Path, api_base: str) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "templates").mkdir()
    (tmp_path / "rules" / "own.yaml").write_text(OWN_RULES, encoding="utf-8")
    (tmp_path / "rules" / "own.test.yaml").write_text(OWN_TESTS, encoding="utf-8")
    (tmp_path / "media").mkdir()
    return _config(tmp_path, tmp_path, api_base, "outbox:\n  per_push: 3\n")


def write_bundled(tmp_path: Path, api_base: str) -> Path:
    return _config(tmp_path, ROOT, api_base, "")


def _config(tmp_path: Path, home: Path, api_base: str, extra: str) -> Path:
    config = tmp_path / "bot.yaml"
    config.write_text(
        f"wechat:\n  appid: {APPID}\n  secret: {SECRET}\n  token: {TOKEN}\n  api_base: {api_base}\n"
        f"rules: {home / 'rules'}\ntemplates: {home / 'templates'}\nmedia: {home / 'media'}\n"
        "store: 'memory://'\nvars:\n  shop_name: 测试小店\n  hotline: 400-000-0000\n"
        "hours:\n  service: {hours: '09:00-21:00'}\n"  # as the bundled bot.yaml names it
        "security:\n  max_timestamp_age: 0\n" + extra, encoding="utf-8")
    return config


class Clock:
    def __init__(self) -> None:
        self.now = NOW.timestamp()

    def __call__(self) -> float:
        return self.now


async def play_server(config: Path, cases: list[Case], fake) -> list[list[Seen]]:
    """Each case through the real app, with try-it's prediction checked before every push."""
    clock = Clock()
    app = create_app(load_settings(config), retry=FAST_RETRY, clock=clock)
    client = TestClient(TestServer(app))
    await client.start_server()
    rt = app[RUNTIME]
    try:
        out = []
        for case in cases:
            clock.now = (case.time or NOW).timestamp()
            seen = []
            for number, step in enumerate(case.steps, 1):
                clock.now += step.after
                fields = message_fields(case, step.message, clock.now)
                message = message_from_fields(MappingProxyType({k: str(v) for k, v in fields.items()}))
                tried = await dry_turn(rt.rules.current, rt.settings, rt.store, message, clock.now)
                log_before, sent_before = len(await rt.store.log_query(user=case.user, limit=10_000)), len(fake.sent)
                resp = await client.post("/wechat", data=xml_push(fields), params=signed_query())
                body = await resp.text()
                assert resp.status == 200
                await rt.outbox.drain()
                await rt.conversation.flush()
                entries = (await rt.store.log_query(user=case.user, limit=10_000))[log_before:]
                push = next((e for e in entries if e.kind == "push"), None)
                assert push is not None, (case.name, number, body, entries)
                sent = tuple(s["text"]["content"] if s["msgtype"] == "text" else f"[{s['msgtype']}]"
                             for s in fake.sent[sent_before:])
                answer = "transfer" if "transfer_customer_service" in body else (
                    "success" if body == "success" else "passive")
                state = await load_state(rt.store, case.user)
                dropped = tuple(e.text for e in entries if e.kind == "failed" and e.detail.startswith("dropped"))
                step_seen = Seen(push.rule or "fallback", sent, dropped, answer,
                                 state.name if state is not None else "none")
                where = f"{case.name}, step {number}"
                assert predicted(tried.plan, tried.records.state) == step_seen, f"try-it disagrees: {where}"
                seen.append(step_seen)
            out.append(seen)
        return out
    finally:
        await client.close()


def check_kefu_test(config: Path, cases: list[Case], seen: list[list[Seen]]) -> None:
    """`kefu test`'s own turn, told to expect what the server did, finds nothing to complain about."""
    settings = load_settings(config)
    ruleset = load_ruleset(settings)
    for case, steps in zip(cases, seen, strict=True):
        for step, observed in zip(case.steps, steps, strict=True):
            step.expect = {"rule": observed.rule, "sent": list(observed.sent), "dropped": list(observed.dropped),
                           "transfer": observed.answer == "transfer", "state": observed.state}
        failures = asyncio.run(run_case(ruleset, case, NOW, settings))
        assert failures == [], "\n".join(map(str, failures))


class ChatInput(io.StringIO):
    """stdin for `kefu chat`: each line moves the chat's clock by its step's `after` first, and notes the
    user's state (in the chat's own store) after the line before."""

    def __init__(self, lines: list[tuple[float, float, str]], clock: Clock, store: MemoryStore, user: str):
        super().__init__()
        self.lines, self.clock, self.store, self.user = lines, clock, store, user
        self.states: list[str] = []
        self.started = False

    def _note_state(self) -> None:
        state = asyncio.run(load_state(self.store, self.user))
        self.states.append(state.name if state is not None else "none")

    def readline(self, size: int | None = -1) -> str:  # noqa: ARG002 - the chat reads whole lines
        if self.started:
            self._note_state()
        if not self.lines:
            return ""
        start, after, line = self.lines.pop(0)
        if not self.started:
            self.clock.now = start
            self.started = True
        self.clock.now += after
        return line + "\n"

    def isatty(self) -> bool:
        return False


def chat_line(step) -> str:
    fields = step.message
    kind = fields["MsgType"]
    if kind == "text":
        content = fields["Content"]
        return "/" + content if content.startswith("/") else content
    if kind == "event":
        return "/event " + shlex.join([fields["Event"], fields.get("EventKey", ""), fields.get("SessionFrom", "")])
    if kind == "image":
        return "/image"
    return "/page " + shlex.quote(fields["PagePath"])


def parse_chat(out: str) -> list[tuple[str, tuple[str, ...], tuple[str, ...], str]]:
    steps = []
    for block in re.split(r"^  rule:  ", out, flags=re.M)[1:]:
        lines = block.split("\n")
        rule = lines[0].split(" (")[0]
        sent: list[str] = []
        dropped: list[str] = []
        current: list[str] | None = None
        for line in lines[1:]:
            if line.startswith("  reply: "):
                current = sent
                current.append(line[len("  reply: "):])
            elif line.startswith("  dropped ("):
                current = dropped
                current.append(line.split("): ", 1)[1])
            elif line.startswith(" " * 9) and current is not None:
                current[-1] += "\n" + line[9:]
            else:
                current = None
        short = [s.split("]")[0] + "]" if s.startswith("[") else s for s in sent]
        dropped_short = [s.split("]")[0] + "]" if s.startswith("[") else s for s in dropped]
        answer = "transfer" if "→ transfer to human agents" in block else (
            "passive" if "answered passively" in block else "success")
        steps.append(("fallback" if rule == "(fallback)" else rule, tuple(short), tuple(dropped_short), answer))
    return steps


def check_chat(config: Path, cases: list[Case], seen: list[list[Seen]]) -> None:
    settings = load_settings(config)
    for case, steps in zip(cases, seen, strict=True):
        clock = Clock()
        store = MemoryStore(clock)
        start = (case.time or NOW).timestamp()
        lines = [(start, 0.0, f"/user {case.user}"), *((start, step.after, chat_line(step)) for step in case.steps)]
        stdin = ChatInput(lines, clock, store, case.user)
        stdout = io.StringIO()
        assert run_chat(lambda: load_ruleset(settings), settings, stdin, stdout, clock, store) == 0
        got = parse_chat(stdout.getvalue())
        assert got == [(s.rule, s.sent, s.dropped, s.answer) for s in steps], f"kefu chat disagrees: {case.name}"
        assert stdin.states[1:] == [s.state for s in steps], f"kefu chat's state disagrees: {case.name}"


@pytest.mark.parametrize("which", ["bundled", "own"])
async def test_server_kefu_test_chat_and_try_it_agree(which, tmp_path, fake, monkeypatch):
    from bot.engine.decide import decide

    # `choice:` replies pick at random: the same dice for every path, so that they can be compared
    monkeypatch.setitem(decide.__kwdefaults__, "random", lambda: 0.0)
    if which == "own":
        config = write_own(tmp_path, fake.base)
        files = [tmp_path / "rules" / "own.test.yaml"]
    else:
        config = write_bundled(tmp_path, fake.base)
        files = sorted((ROOT / "rules").glob("*.test.yaml"))
    cases = [case for path in files for case in cases_of(path, config.parent)]
    for i, case in enumerate(cases):
        case.user = f"o_agree_{which}_{i}"
    seen = await play_server(config, cases, fake)
    assert sum(len(s) for s in seen) >= 10
    # the server did what the scenarios are about (so the agreement below is not about nothing)
    flat = [s for steps in seen for s in steps]
    if which == "own":
        assert any(s.dropped and s.rule == "welcome" for s in flat)  # the allowance after entering
        assert any(s.dropped and s.rule == "long" for s in flat)  # the per-push cap
        assert any(s.rule == "promo-again" for s in flat) and sum(s.rule == "promo" for s in flat) == 2
        assert any(s.rule == "fallback" and not s.sent and s.answer == "success" for s in flat)  # the quiet
        assert any(len(s.sent) == 2 and s.rule == "emoji" for s in flat)  # 2,400 bytes: two messages
    await asyncio.to_thread(check_kefu_test, config, cases, seen)
    await asyncio.to_thread(check_chat, config, cases, seen)
