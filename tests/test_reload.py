"""Hot reload: edit, break and fix rules, templates and bot.yaml in a running bot."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys

import pytest

from bot.__main__ import main

from .helpers import TOKEN, text_fields, write_bot, xml_push

ADMIN = "adm1n-t0ken-for-tests"
ADMIN_CONFIG = f"admin:\n  token: {ADMIN}\n"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


def rule(name: str, word: str, reply: str) -> str:
    return f"  - name: {name}\n    when: {{equals: [{word}]}}\n    reply: '{reply}'\n"


def rules_file(*rules: str) -> str:
    return "rules:\n" + "".join(rules)


@pytest.fixture
async def live(make_bot, tmp_path):
    """A bot watching its files, with the admin endpoints on."""
    bot = await make_bot({"10-a.yaml": rules_file(rule("hello", "你好", "v1"))}, templates={"t.j2": "T1"},
                         config=ADMIN_CONFIG, watch=True)
    await asyncio.wait_for(bot.runtime.watching.wait(), 10)
    bot.dir = tmp_path  # type: ignore[attr-defined]
    return bot


async def reply_to(bot, text: str, fake) -> str | None:
    """The text the bot sends for `text`, or None when it transfers/sends nothing."""
    before = len(fake.sent)
    resp = await bot.push(xml_push(text_fields(text)))
    assert resp.status == 200
    await bot.drain()
    sent = fake.sent[before:]
    return sent[0]["text"]["content"] if sent else None


def version(bot) -> str:
    return bot.runtime.rules.current.version


async def changed_from(bot, old: str, timeout: float = 10) -> None:
    await bot.runtime.reloader.wait_for(lambda h: h.current.version != old, timeout)


async def refused(bot, timeout: float = 10) -> None:
    await bot.runtime.reloader.wait_for(lambda h: bool(h.errors), timeout)


def write(path, text: str) -> None:
    """An editor's atomic save: write a temporary file, rename it over the original."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---- edits are taken live ----------------------------------------------------------------------------


async def test_edit_in_place_is_taken(live, fake):
    v0 = version(live)
    (live.dir / "rules" / "10-a.yaml").write_text(rules_file(rule("hello", "你好", "v2")), encoding="utf-8")
    await changed_from(live, v0)
    assert await reply_to(live, "你好", fake) == "v2"


async def test_atomic_save_is_taken(live, fake):
    v0 = version(live)
    write(live.dir / "rules" / "10-a.yaml", rules_file(rule("hello", "你好", "saved")))
    await changed_from(live, v0)
    assert await reply_to(live, "你好", fake) == "saved"


async def test_add_delete_and_rename_files(live, fake):
    rules = live.dir / "rules"
    v0 = version(live)
    write(rules / "20-b.yaml", rules_file(rule("bye", "再见", "b1")))
    await changed_from(live, v0)
    assert await reply_to(live, "再见", fake) == "b1"
    v1 = version(live)
    os.rename(rules / "20-b.yaml", rules / "30-c.yaml")
    await changed_from(live, v1)
    assert live.runtime.rules.current.files == ("rules/10-a.yaml", "rules/30-c.yaml")
    assert await reply_to(live, "再见", fake) == "b1"
    v2 = version(live)
    (rules / "30-c.yaml").unlink()
    await changed_from(live, v2)
    assert await reply_to(live, "再见", fake) is None  # gone: the fallback transfers


async def test_included_template_edit_is_taken(make_bot, fake, tmp_path):
    rules = "rules:\n  - name: t\n    when: {equals: [模板]}\n    reply: {template: outer.j2}\n"
    bot = await make_bot({"a.yaml": rules},
                         templates={"outer.j2": "外-{% include 'parts/inner.j2' %}", "parts/inner.j2": "内1"},
                         watch=True)
    await asyncio.wait_for(bot.runtime.watching.wait(), 10)
    assert await reply_to(bot, "模板", fake) == "外-内1"
    v0 = version(bot)
    write(tmp_path / "templates" / "parts" / "inner.j2", "内2")
    await changed_from(bot, v0)
    assert await reply_to(bot, "模板", fake) == "外-内2"


async def test_folders_that_appear_later(make_bot, fake, tmp_path):
    """No rules folder at all at start (allowed by allow_empty_rules), then a rules folder and a
    templates subfolder appear."""
    write_bot(tmp_path, {}, config="allow_empty_rules: true\n", api_base=fake.base)
    (tmp_path / "rules").rmdir()
    (tmp_path / "templates").rmdir()
    bot = await make_bot({}, config="allow_empty_rules: true\nhandoff:\n  quiet: 0\n", watch=True)
    (tmp_path / "rules").rmdir()
    (tmp_path / "templates").rmdir()
    await asyncio.wait_for(bot.runtime.watching.wait(), 10)
    assert len(bot.runtime.rules.current.rules) == 0
    assert await reply_to(bot, "你好", fake) is None
    v0 = version(bot)
    (tmp_path / "templates" / "sub").mkdir(parents=True)
    (tmp_path / "templates" / "sub" / "hi.j2").write_text("来自模板", encoding="utf-8")
    (tmp_path / "rules").mkdir()
    write(tmp_path / "rules" / "a.yaml",
          "rules:\n  - name: hi\n    when: {equals: [你好]}\n    reply: {template: sub/hi.j2}\n")
    await bot.runtime.reloader.wait_for(lambda h: len(h.current.rules) == 1 and h.current.version != v0)
    assert await reply_to(bot, "你好", fake) == "来自模板"


async def test_a_rules_folder_replaced_by_another_is_still_watched(live, fake):
    """`rm -rf rules && mv rules.new rules`: the new folder is read, and edits inside it later are taken too
    (a watch on the deleted folder would see nothing more)."""
    rules, staged = live.dir / "rules", live.dir / "rules.new"
    staged.mkdir()
    (staged / "10-a.yaml").write_text(rules_file(rule("hello", "你好", "v2")), encoding="utf-8")
    v0 = version(live)
    shutil.rmtree(rules)
    os.rename(staged, rules)
    await live.runtime.reloader.wait_for(lambda h: h.current.version != v0 and not h.errors)
    assert await reply_to(live, "你好", fake) == "v2"
    await asyncio.wait_for(live.runtime.watching.wait(), 10)  # cleared before that reload, set once re-armed
    v1 = version(live)
    (rules / "10-a.yaml").write_text(rules_file(rule("hello", "你好", "v3")), encoding="utf-8")
    await changed_from(live, v1)
    assert await reply_to(live, "你好", fake) == "v3"


async def test_a_templates_folder_replaced_by_another_is_still_watched(make_bot, fake, tmp_path):
    rules = "rules:\n  - name: t\n    when: {equals: [模板]}\n    reply: {template: t.j2}\n"
    bot = await make_bot({"a.yaml": rules}, templates={"t.j2": "T1"}, watch=True)
    await asyncio.wait_for(bot.runtime.watching.wait(), 10)
    templates, staged = tmp_path / "templates", tmp_path / "templates.new"
    staged.mkdir()
    (staged / "t.j2").write_text("T2", encoding="utf-8")
    v0 = version(bot)
    shutil.rmtree(templates)
    os.rename(staged, templates)
    await bot.runtime.reloader.wait_for(lambda h: h.current.version != v0 and not h.errors)
    assert await reply_to(bot, "模板", fake) == "T2"
    await asyncio.wait_for(bot.runtime.watching.wait(), 10)
    v1 = version(bot)
    (templates / "t.j2").write_text("T3", encoding="utf-8")
    await changed_from(bot, v1)
    assert await reply_to(bot, "模板", fake) == "T3"


async def test_adding_a_missing_image_to_the_media_folder_fixes_a_refused_reload(make_bot, fake, tmp_path):
    """The media folder is watched: a rule that names an image not there yet is refused, and copying the
    image in is enough."""
    (tmp_path / "media" / "promo").mkdir(parents=True)
    bot = await make_bot({"a.yaml": rules_file(rule("hello", "你好", "v1"))}, watch=True)
    await asyncio.wait_for(bot.runtime.watching.wait(), 10)
    write(tmp_path / "rules" / "a.yaml", rules_file(rule("hello", "你好", "v1"))
          + "  - name: promo\n    when: {equals: [活动]}\n    reply: {image: promo/new.png}\n")
    await refused(bot)
    assert "promo/new.png" in bot.runtime.rules.errors[0]
    (tmp_path / "media" / "promo" / "new.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"A" * 64)
    await bot.runtime.reloader.wait_for(lambda h: not h.errors)
    assert bot.runtime.rules.current.rule("promo") is not None


# ---- broken edits are refused, the old rules keep serving --------------------------------------------

BROKEN = [
    ("yaml", "rules:\n  - name: hello\n    when: {equals: [你好]\n",
     "rules/10-a.yaml:3: YAML syntax: did not find expected ',' or '}' (while parsing a flow mapping)"),
    ("schema", rules_file("  - name: hello\n    when: {keyword: [你好]}\n    reply: x\n"),
     "rules/10-a.yaml:3: rule 'hello': unknown key 'keyword' (did you mean 'keywords'?)"),
    ("regex", rules_file("  - name: hello\n    when: {regex: '(你好'}\n    reply: x\n"),
     "rules/10-a.yaml:3: rule 'hello': bad regex"),
    ("template-syntax", rules_file(rule("hello", "你好", "{{ oops }")),
     "rules/10-a.yaml:4: rule 'hello': reply: template syntax"),
    ("missing-template",
     rules_file("  - name: hello\n    when: {equals: [你好]}\n    reply: {template: no.j2}\n"),
     "rules/10-a.yaml:4: rule 'hello': template 'no.j2' not found"),
    ("duplicate", rules_file(rule("hello", "你好", "a"), rule("hello", "您好", "b")),
     "rules/10-a.yaml:5: rule 'hello': the name is already used at rules/10-a.yaml:2"),
]


@pytest.mark.parametrize("case,text,expected", BROKEN, ids=[b[0] for b in BROKEN])
async def test_broken_edit_is_refused_reported_and_cleared(live, fake, caplog, case, text, expected):
    caplog.set_level(logging.INFO, logger="bot.reload")
    v0 = version(live)
    write(live.dir / "rules" / "10-a.yaml", text)
    await refused(live)
    assert version(live) == v0
    assert await reply_to(live, "你好", fake) == "v1"  # the old rules keep serving
    errors = live.runtime.rules.errors
    assert any(e.startswith(expected) for e in errors), errors
    assert any(r.getMessage().startswith(f"rules rejected, still serving {v0}: {expected}")
               for r in caplog.records)
    status = await (await live.client.get("/admin/status", headers=AUTH)).json()
    assert status["rules"]["version"] == v0
    assert status["rules"]["error"].startswith(expected)
    write(live.dir / "rules" / "10-a.yaml", rules_file(rule("hello", "你好", "fixed")))
    await changed_from(live, v0)
    assert live.runtime.rules.errors == ()
    status = await (await live.client.get("/admin/status", headers=AUTH)).json()
    assert status["rules"]["error"] is None
    assert await reply_to(live, "你好", fake) == "fixed"


async def test_a_build_that_crashes_is_refused_and_the_watch_goes_on(live, fake, monkeypatch, caplog):
    """Not a broken edit but a bug (or the disk) raising something else: logged with its traceback, reported
    like a refused edit, the old rules keep serving, and the next save is still taken."""
    import bot.reload

    real = bot.reload.load_steps
    crashes = []

    def crash_once(*args, **kwargs):
        if not crashes:
            crashes.append(1)
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(bot.reload, "load_steps", crash_once)
    v0 = version(live)
    write(live.dir / "rules" / "10-a.yaml", rules_file(rule("hello", "你好", "v2")))
    await refused(live)
    assert "RuntimeError: boom" in live.runtime.rules.errors[0] and version(live) == v0
    assert any(r.exc_info and "failed, still serving" in r.getMessage() for r in caplog.records)
    assert await reply_to(live, "你好", fake) == "v1"
    write(live.dir / "rules" / "10-a.yaml", rules_file(rule("hello", "你好", "v3")))
    await changed_from(live, v0)
    assert await reply_to(live, "你好", fake) == "v3"


def test_a_file_not_in_utf8_names_the_line_of_its_first_bad_byte(tmp_path):
    from bot.config import load_settings
    from bot.errors import RulesError
    from bot.sources import load_ruleset

    config = write_bot(tmp_path, {"a.yaml": rules_file(rule("hello", "你好", "v1"))})
    (tmp_path / "rules" / "b.yaml").write_bytes(rules_file(rule("bye", "再见", "再见")).encode("gbk"))
    with pytest.raises(RulesError) as info:
        load_ruleset(load_settings(config))
    assert [str(p) for p in info.value.problems] == [
        "rules/b.yaml:3: file is not UTF-8 text (byte 0xd4 at byte 21 of the line; save it as UTF-8)"]


async def test_broken_template_file_is_refused(live, fake):
    v0 = version(live)
    write(live.dir / "templates" / "t.j2", "{% if %}")
    await refused(live)
    assert version(live) == v0
    assert live.runtime.rules.errors[0].startswith("templates/t.j2:1: template syntax")


async def test_an_emptied_rules_folder_is_refused(live, fake):
    v0 = version(live)
    (live.dir / "rules" / "10-a.yaml").unlink()
    await refused(live)
    assert version(live) == v0
    assert "no *.yaml rule files" in live.runtime.rules.errors[0]
    assert await reply_to(live, "你好", fake) == "v1"


async def test_check_accepts_exactly_what_reload_accepts(tmp_path, capsys):
    for case, text, expected in BROKEN:
        write_bot(tmp_path, {"10-a.yaml": text})
        assert main(["check", "--config", str(tmp_path / "bot.yaml")]) == 1, case
        assert expected in capsys.readouterr().err, case


# ---- bot.yaml ----------------------------------------------------------------------------------------


async def test_bot_yaml_vars_reload_and_restart_settings_are_reported(make_bot, fake, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="bot.reload")
    bot = await make_bot({"a.yaml": rules_file(rule("shop", "店名", "{{ vars.shop_name }}"))},
                         config=ADMIN_CONFIG, watch=True)
    await asyncio.wait_for(bot.runtime.watching.wait(), 10)
    assert await reply_to(bot, "店名", fake) == "测试小店"
    config = tmp_path / "bot.yaml"
    text = config.read_text(encoding="utf-8").replace("测试小店", "新店名")
    text = text.replace(f"  token: {TOKEN}\n", "  token: a-new-token\n") + "server:\n  port: 9999\n"
    v0 = version(bot)
    write(config, text)
    await changed_from(bot, v0)
    assert await reply_to(bot, "店名", fake) == "新店名"
    assert bot.runtime.rules.restart_needed == ("wechat.token", "server.port")
    assert any("needs restart: wechat.token, server.port" in r.getMessage() for r in caplog.records)
    status = await (await bot.client.get("/admin/status", headers=AUTH)).json()
    assert status["restart_needed"] == ["wechat.token", "server.port"]
    # the running token is still the one pushes are checked against
    assert (await bot.push(xml_push(text_fields("店名")))).status == 200


async def test_broken_bot_yaml_is_refused_with_its_line(live, fake):
    v0 = version(live)
    config = live.dir / "bot.yaml"
    write(config, config.read_text(encoding="utf-8") + "vars:\n  x: 1\n")  # a second 'vars' key
    await refused(live)
    assert version(live) == v0
    assert live.runtime.rules.errors[0].startswith(f"{config}:")
    assert "duplicate key 'vars'" in live.runtime.rules.errors[0]


# ---- bursts and load ---------------------------------------------------------------------------------


async def test_a_burst_of_saves_gives_one_or_two_reloads(live, fake):
    builds = live.runtime.reloader.builds
    path = live.dir / "rules" / "10-a.yaml"
    for i in range(20):  # an editor saving 20 times within a few milliseconds
        write(path, rules_file(rule("hello", "你好", f"burst{i}")))
    await live.runtime.reloader.wait_for(
        lambda h: h.current.rule("hello").replies[0].text.constant == "burst19")
    assert 1 <= live.runtime.reloader.builds - builds <= 2
    assert await reply_to(live, "你好", fake) == "burst19"


async def test_every_push_is_decided_by_one_complete_rule_set(make_bot, fake, tmp_path):
    """Two rule files and two templates all carry the generation number; a push decided by parts of two
    rule sets (say, one rule set's rules with another's templates) would answer with two numbers. The
    rules are rewritten and reloaded over and over while batches of concurrent pushes are in flight."""

    def generation(n: int) -> dict[str, str]:
        return {
            "rules/10-a.yaml": f"rules:\n  - name: a{n}\n    when: {{keywords: [查]}}\n"
                               f"    reply: {{template: gen.j2}}\n    priority: 1\n",
            "rules/20-b.yaml": f"rules:\n  - name: b{n}\n    when: {{keywords: [查]}}\n    reply: b{n}\n",
            "templates/gen.j2": f"{n}-{{{{ rule.name }}}}-{{% include 'part.j2' %}}",
            "templates/part.j2": f"{n}",
        }

    first = generation(0)
    bot = await make_bot({"10-a.yaml": first["rules/10-a.yaml"], "20-b.yaml": first["rules/20-b.yaml"]},
                         templates={"gen.j2": first["templates/gen.j2"],
                                    "part.j2": first["templates/part.j2"]})
    stop = asyncio.Event()

    async def rewrite() -> int:
        n = 0
        while not stop.is_set():
            n += 1
            for name, text in generation(n).items():
                write(tmp_path / name, text)
            await bot.runtime.reloader.reload(f"generation {n}")  # the build runs in a thread meanwhile
        return n

    writer = asyncio.create_task(rewrite())
    statuses = []
    for batch in range(30):
        answers = await asyncio.gather(
            *[bot.push(xml_push(text_fields("查一下", msg_id=10_000 + batch * 10 + i))) for i in range(10)])
        statuses.extend(a.status for a in answers)
    stop.set()
    generations = await writer
    await bot.drain()
    assert statuses == [200] * 300
    replies = [s["text"]["content"] for s in fake.sent]
    assert len(replies) == 300
    for reply in replies:
        n, name, part = reply.split("-")
        assert name == f"a{n}" and part == n, reply
    assert generations > 3 and len({r.split("-")[0] for r in replies}) > 1  # rules changed under the pushes


async def test_sources_changing_while_read_are_read_again(tmp_path, monkeypatch):
    """A reload never compiles a file caught in the middle of being written."""
    import bot.sources as reload_module
    from bot.config import load_settings

    write_bot(tmp_path, {"a.yaml": rules_file(rule("hello", "你好", "v1"))})
    settings = load_settings(tmp_path / "bot.yaml")
    original = reload_module.read_rule_files
    calls = []

    def racing(folder, *args, **kwargs):  # the first read sees a half-written file, then it is finished
        calls.append(1)
        if len(calls) == 1:
            (tmp_path / "rules" / "a.yaml").write_text("rules:\n  - name: hel", encoding="utf-8")
            result = original(folder, *args, **kwargs)
            (tmp_path / "rules" / "a.yaml").write_text(rules_file(rule("hello", "你好", "v2")) + "\n",
                                                       encoding="utf-8")
            return result
        return original(folder, *args, **kwargs)

    monkeypatch.setattr(reload_module, "read_rule_files", racing)
    ruleset = reload_module.load_ruleset(settings)
    assert len(calls) == 2
    assert ruleset.rule("hello").replies[0].text.constant == "v2"


# ---- other triggers: SIGHUP and the admin endpoint ---------------------------------------------------


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
async def test_sighup_reloads(make_bot, fake, tmp_path):
    bot = await make_bot({"a.yaml": rules_file(rule("hello", "你好", "v1"))}, signals=True)
    (tmp_path / "rules" / "a.yaml").write_text(rules_file(rule("hello", "你好", "hup")), encoding="utf-8")
    v0 = version(bot)
    os.kill(os.getpid(), signal.SIGHUP)
    await changed_from(bot, v0)
    assert await reply_to(bot, "你好", fake) == "hup"


async def test_admin_reload_reloads_and_reports(make_bot, fake, tmp_path):
    bot = await make_bot({"a.yaml": rules_file(rule("hello", "你好", "v1"))}, config=ADMIN_CONFIG)
    (tmp_path / "rules" / "a.yaml").write_text(rules_file(rule("hello", "你好", "v2")), encoding="utf-8")
    resp = await bot.client.post("/admin/reload", headers=AUTH)
    assert resp.status == 200
    body = await resp.json()
    assert body["reloaded"] is True and body["rules"]["version"] == version(bot)
    assert body["rules"]["count"] == 1 and body["rules"]["error"] is None
    assert body["rules"]["loaded_at"].endswith("+00:00")
    assert await reply_to(bot, "你好", fake) == "v2"
    (tmp_path / "rules" / "a.yaml").write_text("rules: [", encoding="utf-8")
    body = await (await bot.client.post("/admin/reload", headers=AUTH)).json()
    assert body["reloaded"] is False and body["rules"]["error"].startswith("rules/a.yaml:1: YAML syntax")
    again = await (await bot.client.post("/admin/reload", headers=AUTH)).json()
    assert again["rules"]["version"] == body["rules"]["version"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN},
                                     {"Authorization": f"Basic {ADMIN}"}, {"Authorization": "Bearer "}])
async def test_admin_endpoints_refuse_a_missing_or_wrong_token(make_bot, headers):
    bot = await make_bot({"a.yaml": rules_file(rule("hello", "你好", "v1"))}, config=ADMIN_CONFIG)
    for method, path in (("GET", "/admin/status"), ("POST", "/admin/reload")):
        resp = await bot.client.request(method, path, headers=headers)
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert ADMIN not in await resp.text()


async def test_admin_endpoints_are_off_without_a_token(make_bot):
    bot = await make_bot({"a.yaml": rules_file(rule("hello", "你好", "v1"))})
    assert (await bot.client.get("/admin/status", headers={"Authorization": "Bearer "})).status == 404
    assert (await bot.client.post("/admin/reload")).status == 404


def test_serve_has_a_no_watch_switch():
    from bot.__main__ import build_parser

    args = build_parser().parse_args(["serve", "--no-watch"])
    assert args.no_watch is True
    assert sys.executable


# ---- memory: retired rule sets are freed, full collections stay out of builds -----------------------


def test_a_retired_rule_set_is_freed_without_the_cycle_collector(tmp_path):
    import gc

    from bot.config import load_settings
    from bot.sources import load_ruleset

    write_bot(tmp_path, {"a.yaml": rules_file(rule("a", "你好", "{{ vars.shop_name }}"),
                                              "  - name: b\n    when: {equals: [b]}\n"
                                              "    reply: {template: t.j2}\n")},
              templates={"t.j2": "{% include 'inc.j2' %}{% for x in [1] %}{{ loop.index }}{% endfor %}",
                         "inc.j2": "{% macro m() %}x{% endmacro %}{{ m() }}"})
    settings = load_settings(tmp_path / "bot.yaml")
    gc.collect()
    ruleset = load_ruleset(settings)
    assert len(ruleset.jinja) == 3
    ruleset.retire()
    del ruleset
    assert gc.collect() == 0  # nothing was left for the cycle collector


async def test_reloads_pause_full_collections_freeze_and_retire(make_bot, tmp_path, monkeypatch):
    import gc

    bot = await make_bot({"a.yaml": rules_file(rule("hello", "你好", "{{ vars.shop_name }}"))})
    reloader = bot.runtime.reloader
    reloader.manage_gc = True
    seen_thresholds = []
    original_build = reloader._build

    def build(*args):
        seen_thresholds.append(gc.get_threshold())
        return original_build(*args)

    monkeypatch.setattr(reloader, "_build", build)
    froze = []
    monkeypatch.setattr(gc, "freeze", lambda: froze.append(True))
    before = gc.get_threshold()
    (tmp_path / "rules" / "a.yaml").write_text(rules_file(rule("hello", "你好", "新{{ vars.shop_name }}")),
                                               encoding="utf-8")
    await reloader.reload("test")
    assert seen_thresholds[0][2] >= 1_000_000  # no full collection while building
    assert gc.get_threshold() == before  # restored
    assert froze == [True]
    [handle] = reloader._retiring  # the old rule set is freed a minute later, when no request holds it
    assert handle.when() - asyncio.get_running_loop().time() == pytest.approx(reloader.retire_after, abs=1)
    await reloader.close()
    assert handle.cancelled()
