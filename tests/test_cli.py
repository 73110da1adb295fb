"""The command line: check, chat and send, as an operator runs them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.__main__ import main

from .fakewechat import Failure
from .helpers import write_bot

ROOT = Path(__file__).resolve().parent.parent
GOOD = {"a.yaml": "rules:\n  - name: hi\n    when: {equals: [你好]}\n    reply: 您好\n"}


def test_check_passes_on_the_bundled_example(capsys):
    assert main(["check", "--config", str(ROOT / "bot.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: ") and "rules in 3 files" in out


def test_check_reports_every_problem_with_file_and_line(tmp_path, capsys):
    write_bot(tmp_path, {
        "a.yaml": "rules:\n  - name: x\n    when: {keyword: [a]}\n    reply: hi\n",
        "b.yaml": "rules:\n  - name: y\n    when: {regex: '(a'}\n    reply: {template: missing.j2}\n",
        "c.yaml": "rules:\n  - name: z\n    when: [\n",
    })
    assert main(["check", "--config", str(tmp_path / "bot.yaml")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert "rules/a.yaml:3: rule 'x': unknown key 'keyword' (did you mean 'keywords'?)" in err
    assert any(line.startswith("rules/b.yaml:3: rule 'y': bad regex") for line in err)
    assert any(line.startswith("rules/b.yaml:4: rule 'y': template 'missing.j2' not found") for line in err)
    assert any(line.startswith("rules/c.yaml:") and "YAML syntax" in line for line in err)


def test_check_reports_config_problems(tmp_path, capsys):
    write_bot(tmp_path, GOOD, config="server:\n  prot: 80\n")
    assert main(["check", "--config", str(tmp_path / "bot.yaml")]) == 1
    err = capsys.readouterr().err
    assert "bot.yaml:" in err and "unknown key 'prot' (did you mean 'port'?)" in err


def test_check_on_a_missing_config(tmp_path, capsys):
    assert main(["check", "--config", str(tmp_path / "nope.yaml")]) == 1
    assert "config file not found" in capsys.readouterr().err


def test_chat_shows_rule_replies_and_transfer(monkeypatch, capsys):
    import io
    monkeypatch.setattr(sys, "stdin", io.StringIO("订单号 2024060112345678\n/event user_enter_tempsession\n"
                                                  "随便聊聊\n/bogus\n/quit\n"))
    assert main(["chat", "--config", str(ROOT / "bot.yaml")]) == 0
    out = capsys.readouterr().out
    assert "rule:  order-number (rules/20-orders.yaml:" in out
    assert "reply: 正在查询订单 2024060112345678……" in out
    assert "→ transfer to human agents" in out
    assert "rule:  welcome" in out and "示例小店" in out
    assert "rule:  (fallback)" in out
    assert "unknown command" in out


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env={**os.environ, **(env or {})})


def test_python_dash_m_bot_runs_check():
    result = _run("check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")


async def _send(config: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "send", "--config", str(config), *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_send_sends_one_text(tmp_path, fake):
    config = write_bot(tmp_path, GOOD, api_base=fake.base)
    code, out, err = await _send(config, "o_user_1", "您好，您的订单已发货")
    assert code == 0, err
    assert "sent to o_user_1" in out
    assert fake.sent == [{"touser": "o_user_1", "msgtype": "text",
                          "text": {"content": "您好，您的订单已发货"}}]


@pytest.mark.parametrize("errcode,words", [(40164, "IP"), (45015, "48 hours")])
async def test_send_explains_wechats_errors(tmp_path, fake, errcode, words):
    config = write_bot(tmp_path, GOOD, api_base=fake.base)
    fake.fail("/cgi-bin/message/custom/send", Failure(errcode=errcode))
    code, out, err = await _send(config, "o_user_1", "x")
    assert code == 1
    assert f"not sent: {errcode}: " in err and words in err


async def test_send_needs_credentials(tmp_path, fake):
    config = write_bot(tmp_path, GOOD, api_base=fake.base, credentials=False)
    code, _, err = await _send(config, "o_user_1", "x")
    assert code == 1 and "wechat.appid and wechat.secret are needed" in err


async def test_serve_starts_on_the_bundled_config_and_answers(unused_tcp_port):
    """The README's quick start: `python -m bot serve` with the bundled bot.yaml, then a signed push."""
    import aiohttp

    from .helpers import signed_query, text_fields, xml_push

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "serve", "--port", str(unused_tcp_port), cwd=ROOT,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "WECHAT_TOKEN": "readme-token"})
    try:
        log_lines: list[str] = []
        while True:
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            assert line, "serve exited: " + "".join(log_lines)
            log_lines.append(line)
            if "listening on http://127.0.0.1" in line:
                break
        base = f"http://127.0.0.1:{unused_tcp_port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/healthz") as resp:
                assert resp.status == 200
            async with session.post(base + "/wechat", params=signed_query(token="readme-token"),
                                    data=xml_push(text_fields("人工"))) as resp:
                assert resp.status == 200
                assert "transfer_customer_service" in await resp.text()
            async with session.post(base + "/wechat", params=signed_query(token="readme-token"),
                                    data=xml_push(text_fields("快递"))) as resp:
                assert await resp.text() == "success"
        while "not sent: no credentials" not in "".join(log_lines):
            log_lines.append((await asyncio.wait_for(proc.stderr.readline(), 30)).decode())
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)
    assert proc.returncode == 0


def test_the_official_account_example_checks_and_chats(monkeypatch, capsys):
    import io

    config = str(ROOT / "examples" / "official-account" / "bot.yaml")
    assert main(["check", "--config", config]) == 0
    assert capsys.readouterr().out.startswith("ok: 8 rules in 1 file, 0 templates")
    monkeypatch.setattr(sys, "stdin", io.StringIO(
        "新书\n人工\n/event SCAN 123\n满意\n/event kf_close_session\n满意\n"))
    assert main(["chat", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "rule:  new-books" in out and "answered passively" in out
    assert "agent xiaowang@example" in out
    assert "rule:  qr-store-123" in out
    # as on the server: while the user is with agents the bot keeps quiet, until the agent closes the session
    quiet, after = out.split("本次人工服务已结束")
    assert "the bot stays quiet" in quiet and "收到您的评价" not in quiet
    assert "the bot answers again" in after and "收到您的评价：满意" in after


def test_log_prints_the_conversation_log(tmp_path, capsys):
    import time

    from bot.store import LogEntry, open_store

    config = write_bot(tmp_path, GOOD, store=f"sqlite:///{tmp_path}/kefu.db")
    now = time.time()

    async def fill():
        store = open_store(f"sqlite:///{tmp_path}/kefu.db")
        await store.open()
        await store.log_add([LogEntry(now - 7200, "o_old", "push", "text", "很久以前", "hi"),
                             LogEntry(now - 60, "o_user", "push", "text", "你好", "hi"),
                             LogEntry(now - 59, "o_user", "sent", "text", "您好", "hi"),
                             LogEntry(now - 30, "o_other", "failed", "text", "x", "other", 45047, "quota")])
        await store.close()

    asyncio.run(fill())
    assert main(["log", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and "o_old" in lines[0] and "errcode=45047" in lines[3]
    assert main(["log", "--config", str(config), "--user", "o_user", "--since", "1h"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "'你好'" in lines[0] and "rule=hi" in lines[0] and "sent" in lines[1]
    assert main(["log", "--config", str(config), "--rule", "other"]) == 0
    assert "o_other" in capsys.readouterr().out


def test_log_explains_the_memory_store(tmp_path, capsys):
    config = write_bot(tmp_path, GOOD)
    assert main(["log", "--config", str(config)]) == 1
    assert "memory store keeps no log" in capsys.readouterr().err


def test_kefu_test_passes_on_the_bundled_rules(capsys):
    assert main(["test", "--config", str(ROOT / "bot.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.strip().endswith("passed, 0 failed") and "FAIL" not in out


TESTED_RULES = {"a.yaml": "rules:\n  - name: hi\n    when: {equals: [你好]}\n    reply: 您好\n"
                          "fallback:\n  - when: {time: {hours: '09:00-18:00'}}\n    transfer: true\n"
                          "  - reply: 下班了\n"}


def test_kefu_test_reports_failures_with_a_diff(tmp_path, capsys):
    write_bot(tmp_path, TESTED_RULES)
    (tmp_path / "rules" / "a.test.yaml").write_text(
        "tests:\n  - name: 问候\n    steps:\n      - say: 你好\n        expect: {rule: hi, reply: 你好呀}\n"
        "      - say: 你好\n        expect: {rule: nope, transfer: true}\n", encoding="utf-8")
    assert main(["test", "--config", str(tmp_path / "bot.yaml")]) == 1
    out = capsys.readouterr().out
    assert "FAIL  rules/a.test.yaml:2  问候" in out
    assert "rules/a.test.yaml:4: 问候, step 1: replies differ" in out and "-你好呀" in out and "+您好" in out
    assert "step 2: expected rule 'nope', got 'hi'" in out and "expected transfer True, got False" in out
    assert out.strip().endswith("0 passed, 1 failed")


def test_kefu_test_time_fixes_the_clock(tmp_path, capsys):
    write_bot(tmp_path, TESTED_RULES)
    (tmp_path / "rules" / "a.test.yaml").write_text(
        "tests:\n  - name: 晚上\n    steps:\n      - say: 在吗\n        expect: {rule: fallback, reply: 下班了}\n",
        encoding="utf-8")
    assert main(["test", "--config", str(tmp_path / "bot.yaml"), "--time", "2026-12-01T20:00"]) == 0
    assert main(["test", "--config", str(tmp_path / "bot.yaml"), "--time", "2026-12-01T10:00"]) == 1
    capsys.readouterr()


def test_kefu_test_names_the_line_of_a_broken_test_file(tmp_path, capsys):
    write_bot(tmp_path, TESTED_RULES)
    (tmp_path / "rules" / "a.test.yaml").write_text(
        "tests:\n  - name: x\n    steps:\n      - say: a\n        image: true\n      - say: b\n"
        "        expect: {rulez: hi}\n", encoding="utf-8")
    assert main(["test", "--config", str(tmp_path / "bot.yaml")]) == 1
    err = capsys.readouterr().err
    assert "rules/a.test.yaml:4: a step has exactly one of say, event, image, page" in err
    assert "rules/a.test.yaml:7: expect: unknown key 'rulez' (did you mean 'rule'?)" in err


def test_chat_keeps_state_per_user_and_takes_time_and_user(monkeypatch, capsys):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(
        "/time 2026-12-01T23:00\n随便问问\n退货\n/user o_other\n订单 12345678\n/user o_chat_user\n订单 12345678\n"))
    assert main(["chat", "--config", str(ROOT / "bot.yaml")]) == 0
    out = capsys.readouterr().out
    assert "客服下班了" in out  # 23:00: the after-hours fallback
    assert "→ state: awaiting_return_order for 10 min" in out
    assert "rule:  order-number" in out  # o_other has no state
    assert "rule:  return-order" in out and "remembered order_no='12345678'" in out  # back to the first user


def test_check_warns_about_mistakes_but_passes(tmp_path, capsys):
    write_bot(tmp_path, {"a.yaml": """
rules:
  - name: human
    when: {equals: [人工, 转人工]}
    transfer: true
  - name: human-too
    when: {equals: [人工]}
    reply: x
  - name: ship
    when: {keywords: [快递]}
    reply: y
  - name: ship-detail
    when: {keywords: [快递单号]}
    reply: z
  - name: promo
    cooldown: 1h
    when: {keywords: [优惠]}
    reply: a
  - name: promo-again
    when: {keywords: [优惠]}
    reply: b
  - name: impossible
    when: {keywords: [节日], time: {weekdays: mon-fri, dates: ['2026-12-05..2026-12-06']}}
    reply: c
"""}, templates={"used.j2": "{% include '_part.j2' %}", "_part.j2": "p", "orphan.j2": "o"})
    (tmp_path / "rules" / "b.yaml").write_text(
        "rules:\n  - name: t\n    when: {equals: [模板]}\n    reply: {template: used.j2}\n", encoding="utf-8")
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "unused.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    assert main(["check", "--config", str(tmp_path / "bot.yaml")]) == 0
    out = capsys.readouterr().out
    assert "warning: rules/a.yaml:6: rule 'human-too' can never fire: rule 'human' (rules/a.yaml:3)" in out
    assert "warning: rules/a.yaml:12: rule 'ship-detail' can never fire: rule 'ship'" in out
    assert "promo-again" not in out  # promo cools down: promo-again answers meanwhile
    assert "rules/a.yaml:22: rule 'impossible': its time window can never hold" in out
    assert "warning: templates/orphan.j2:1: template never used by a rule" in out
    assert "_part.j2" not in out and "used.j2:1: template" not in out
    assert "warning: media/unused.png:1: image never used by a rule" in out  # from the config's folder
    assert str(tmp_path) not in out
    assert out.strip().splitlines()[-1].startswith("ok: 8 rules") and out.strip().endswith("5 warnings")
