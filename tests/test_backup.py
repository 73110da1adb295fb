"""kefu backup and kefu restore on a live sqlite store: a consistent copy while the bot answers pushes, and
a restore that refuses to run under a live bot and keeps what it replaces."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bot.__main__ import main
from bot.store import open_store
from bot.store.sqlschema import SCHEMA_VERSION

from .helpers import text_fields, write_bot, xml_push

ROOT = Path(__file__).resolve().parent.parent
RULES = {"a.yaml": "rules:\n  - name: hi\n    when: {keywords: [你好]}\n    reply: 您好，{{ vars.shop_name }}\n"}


async def _kefu(config: Path, *args: str) -> tuple[int, str, str]:
    """Run the kefu command line in a process of its own, as an operator (or cron) beside the bot would."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, "--config", str(config), cwd=config.parent,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


def _rows(path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


async def test_a_backup_taken_while_the_bot_answers_is_a_consistent_store(make_bot, tmp_path):
    bot = await make_bot(RULES, store=f"sqlite:///{tmp_path}/kefu.db")
    config = tmp_path / "bot.yaml"
    for n in range(20):
        assert (await bot.push(xml_push(text_fields("你好", user=f"o_user_{n}")))).status == 200
    await bot.drain()

    async def keep_pushing() -> int:  # the bot keeps answering during the backup
        n = 0
        while not done.is_set():
            assert (await bot.push(xml_push(text_fields("你好", user=f"o_later_{n}")))).status == 200
            n += 1
        return n

    done = asyncio.Event()
    pusher = asyncio.create_task(keep_pushing())
    code, out, err = await _kefu(config, "backup", "backup.db")
    done.set()
    later = await pusher
    assert code == 0, err
    assert out.startswith(f"backed up {tmp_path}/kefu.db to backup.db (schema {SCHEMA_VERSION}, ")
    copy = tmp_path / "backup.db"
    assert not (tmp_path / "backup.db-wal").exists()  # one self-contained file
    assert _rows(copy, "PRAGMA journal_mode") == [("delete",)]
    assert _rows(copy, "PRAGMA integrity_check") == [("ok",)]
    # One snapshot: every push in it has its replies with it (they are written in the push's transaction).
    users = {u for (u,) in _rows(copy, "SELECT user FROM outbox")}
    assert {f"o_user_{n}" for n in range(20)} <= users
    assert len(users) <= 20 + later
    await bot.drain()
    store = open_store(f"sqlite:///{copy}")
    await store.open()
    try:
        sent = await store.outbox_items(user="o_user_7")
        assert [item.reply.content for item in sent] == ["您好，测试小店"]
    finally:
        await store.close()


async def test_restore_refuses_while_the_bot_has_the_store_open_and_changes_nothing(make_bot, tmp_path):
    bot = await make_bot(RULES, store=f"sqlite:///{tmp_path}/kefu.db")
    config = tmp_path / "bot.yaml"
    assert (await bot.push(xml_push(text_fields("你好", user="o_before")))).status == 200
    await bot.drain()
    assert (await _kefu(config, "backup", "backup.db"))[0] == 0
    assert (await bot.push(xml_push(text_fields("你好", user="o_after")))).status == 200
    await bot.drain()
    code, out, err = await _kefu(config, "restore", "backup.db")
    assert code == 1 and out == ""
    assert f"kefu restore: {tmp_path}/kefu.db is in use (is kefu running on it?): stop kefu first" in err
    assert not (tmp_path / "kefu.db.before-restore").exists()
    items = await bot.runtime.store.outbox_items()
    assert {item.user for item in items} == {"o_before", "o_after"}  # the live store is untouched


async def test_restore_puts_the_backup_back_and_keeps_the_store_it_replaced(make_bot, tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/kefu.db"
    config = write_bot(tmp_path, RULES, store=url)
    store = open_store(url)
    await store.open()
    await store.set("state:o1", "before")
    await store.close()
    assert await asyncio.to_thread(main, ["backup", "--config", str(config), f"{tmp_path}/backups/"]) == 0
    copies = list((tmp_path / "backups").glob("kefu-*.db"))  # a folder (made): a dated copy in it
    assert len(copies) == 1 and copies[0].name[5:-3].replace("-", "").isdigit()
    store = open_store(url)
    await store.open()
    await store.set("state:o1", "after")
    await store.close()
    capsys.readouterr()

    assert await asyncio.to_thread(main, ["restore", "--config", str(config), str(copies[0])]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"restored {tmp_path}/kefu.db from {copies[0]} (schema {SCHEMA_VERSION}, ")
    assert out.rstrip().endswith(f"the store it replaced is kept as {tmp_path}/kefu.db.before-restore")
    for path, state in ((tmp_path / "kefu.db", "before"), (tmp_path / "kefu.db.before-restore", "after")):
        store = open_store(f"sqlite:///{path}")
        await store.open()
        try:
            assert await store.get("state:o1") == state
        finally:
            await store.close()


async def test_restore_onto_a_new_host_needs_no_store_there(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/old/kefu.db"
    store = open_store(url)
    await store.open()
    await store.set("state:o1", "kept")
    await store.close()
    config = write_bot(tmp_path, RULES, store=f"sqlite:///{tmp_path}/new.db")
    assert main(["restore", "--config", str(config), str(tmp_path / "old" / "kefu.db")]) == 0
    assert "kept as" not in capsys.readouterr().out  # nothing was replaced
    assert _rows(tmp_path / "new.db", "SELECT value FROM kv WHERE key = 'state:o1'") == [("kept",)]


@pytest.mark.parametrize("content,says", [
    (b"not a database at all, but long enough to look like one " * 200, "not a kefu store"),
    ("CREATE TABLE orders (id INTEGER)", "not a kefu store (schema version 0, no table kv, answers, outbox, log)"),
    ("PRAGMA user_version = 99", "schema 99 was written by a newer kefu"),
])
def test_restore_refuses_what_is_not_a_kefu_store_it_can_read(tmp_path, capsys, content, says):
    bad = tmp_path / "bad.db"
    if isinstance(content, bytes):
        bad.write_bytes(content)
    else:
        with sqlite3.connect(bad) as db:
            if content.startswith("PRAGMA"):
                db.executescript((ROOT / "tests" / "fixtures" / "store-v2.sql").read_text(encoding="utf-8"))
            db.execute(content)
        db.close()
    config = write_bot(tmp_path, RULES, store=f"sqlite:///{tmp_path}/kefu.db")
    (tmp_path / "kefu.db").write_bytes(b"")
    assert main(["restore", "--config", str(config), str(bad)]) == 1
    assert says in capsys.readouterr().err
    assert (tmp_path / "kefu.db").read_bytes() == b""  # untouched


@pytest.mark.parametrize("command", ["backup", "restore"])
@pytest.mark.parametrize("store,says", [("memory://", "the memory store keeps nothing"),
                                        ("redis://127.0.0.1:6379/0", "Redis is backed up by its own persistence")])
def test_backup_and_restore_explain_other_stores(tmp_path, capsys, command, store, says):
    config = write_bot(tmp_path, RULES, store=store)
    assert main([command, "--config", str(config), str(tmp_path / "x.db")]) == 1
    assert says in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()


def test_backup_of_a_missing_store_says_so_and_creates_nothing(tmp_path, capsys):
    config = write_bot(tmp_path, RULES, store=f"sqlite:///{tmp_path}/kefu.db")
    assert main(["backup", "--config", str(config), str(tmp_path / "copy.db")]) == 1
    assert f"{tmp_path}/kefu.db: no such file" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["bot.yaml", "rules", "templates"]


def test_restore_after_a_crash_keeps_the_crashed_stores_last_writes_aside(tmp_path, capsys):
    """kill -9 leaves the last writes in kefu.db-wal: the store kept aside has them, the restored one not."""
    url = f"sqlite:///{tmp_path}/kefu.db"
    config = write_bot(tmp_path, RULES, store=url)

    async def write(value: str) -> None:
        store = open_store(url)
        await store.open()
        await store.set("state:o1", value)
        await store.close()

    asyncio.run(write("backed up"))
    assert main(["backup", "--config", str(config), str(tmp_path / "backup.db")]) == 0
    crash = ("import asyncio, os\nfrom bot.store import open_store\nasync def run():\n"
             f"    store = open_store({url!r})\n    await store.open()\n    await store.set('state:o1', 'last')\n"
             "    os._exit(0)  # no close: the write is only in the -wal file\nasyncio.run(run())\n")
    subprocess.run([sys.executable, "-c", crash], check=True, cwd=ROOT, timeout=60)
    assert (tmp_path / "kefu.db-wal").stat().st_size > 0
    assert main(["restore", "--config", str(config), str(tmp_path / "backup.db")]) == 0
    value = "SELECT value FROM kv WHERE key = 'state:o1'"
    assert _rows(tmp_path / "kefu.db", value) == [("backed up",)]
    assert _rows(tmp_path / "kefu.db.before-restore", value) == [("last",)]
