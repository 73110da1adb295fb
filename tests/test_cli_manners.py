"""Command-line manners: output piped into head ends quietly, every command's --help shows an example, and
the exit codes are the documented ones."""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.__main__ import EXIT_CODES, build_parser
from bot.store import LogEntry, open_store

from .helpers import write_bot

ROOT = Path(__file__).resolve().parent.parent
RULES = {"a.yaml": "rules:\n  - name: hi\n    when: {equals: [你好]}\n    reply: 您好\n"}


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_commands_help_shows_an_example_and_the_exit_codes(name):
    text = _commands()[name].format_help()
    example = re.search(r"\nexample:\n  (.+)\n", text)
    assert example is not None, text
    assert f"kefu {name}" in example.group(1)
    assert "\nexit codes:\n  0    done\n" in text and "  141  the output was closed early" in text


def test_the_top_level_help_shows_every_example():
    text = build_parser().format_help()
    for name in _commands():
        assert f"\n  kefu {name} " in text or f"&& kefu {name} " in text, name


def test_kefu_config_in_the_environment_is_the_default_config(tmp_path, monkeypatch, capsys):
    """The container and the systemd unit point KEFU_CONFIG at /etc/kefu/bot.yaml: `docker exec kefu kefu
    log` needs no --config; --config still wins."""
    from bot.__main__ import main

    config = write_bot(tmp_path, RULES)
    monkeypatch.setenv("KEFU_CONFIG", str(config))
    monkeypatch.chdir(tmp_path.parent)  # no bot.yaml here
    assert main(["check"]) == 0
    assert capsys.readouterr().out.startswith("ok: 1 rule in 1 file")
    assert main(["check", "--config", str(tmp_path / "nope.yaml")]) == 1


def _piped_into_head(*args: str, lines: int = 1) -> tuple[int, list[str], str]:
    """`kefu ARGS | head -LINES`: read that much of the output, then close the pipe as head does."""
    with subprocess.Popen([sys.executable, "-m", "bot", *args], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        got = [proc.stdout.readline() for _ in range(lines)]
        proc.stdout.close()
        err = proc.stderr.read()
        return proc.wait(timeout=60), got, err


def test_kefu_log_piped_into_head_ends_quietly(tmp_path):
    url = f"sqlite:///{tmp_path}/kefu.db"
    config = write_bot(tmp_path, RULES, store=url)
    now = time.time()

    async def fill() -> None:
        store = open_store(url)
        await store.open()
        await store.log_add([LogEntry(now - 5000 + n, f"o_user_{n}", "push", "text", "你好" * 20, "hi")
                             for n in range(5000)])  # far more than a pipe's buffer
        await store.close()

    asyncio.run(fill())
    code, got, err = _piped_into_head("log", "--config", str(config), "--limit", "5000", lines=3)
    assert "o_user_0 " in got[0] and len(got) == 3
    assert err == ""  # no BrokenPipeError traceback, no "Exception ignored"
    assert code == 141


def test_help_piped_into_head_ends_quietly():
    code, got, err = _piped_into_head("--help")
    assert got[0].startswith("usage: kefu")
    assert err == "" and code in (0, 141)  # all of it may fit in the pipe before head closes it


def test_the_readme_documents_every_exit_code():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = re.findall(r"^\| `(\d+)` \| (.+) \|$", readme, re.M)
    assert {int(code) for code, _ in table} == set(EXIT_CODES)
