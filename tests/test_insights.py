"""Insights (bot/insights): what no rule answers, grouped; the figures; the draft rules; `kefu report`; the
console's insights page — on generated logs with known groups (bench/chatlog.py's templates)."""

from __future__ import annotations

import asyncio
import html
import json
import pickle
import random
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bench.chatlog import NOISE, unanswered_variants
from bot.__main__ import main
from bot.config import load_settings
from bot.insights.charts import all_charts
from bot.insights.figures import Tally, suggest
from bot.insights.report import render
from bot.sources import load_ruleset
from bot.store import LogEntry, open_store

from .helpers import text_fields, write_bot, xml_push
from .test_console import ADMIN, login

ZONE = ZoneInfo("Asia/Shanghai")
T0 = 1_800_000_000.0  # 2027-01-15 16:00 local
RULES = {
    "10-shop.yaml": "rules:\n"
                    "  - name: shipping\n    when: {keywords: [快递, 物流, 发货]}\n    reply: 明天到\n"
                    "  - name: invoice-sent\n    when: {keywords: [发票收到]}\n    reply: 好的\n"
                    "  - name: human\n    when: {equals: [人工]}\n    transfer: true\n"
                    "  - name: other\n    when: {keywords: [其他问题]}\n    reply: 请稍等\n"
                    "fallback:\n  transfer: true\n",
}
INVOICE = ("发票怎么开", "能开发票吗", "怎么开发票", "可以开增值税发票吗", "我要开发票", "发票开一下")
CHEAPER = ("能便宜点吗", "可以便宜一点吗", "便宜点呗", "能不能便宜些", "再便宜点可以吗")
QUIET_NOISE = tuple(n for n in NOISE if not set(n) & set("发票便宜"))


def known_log(rng: random.Random) -> list[LogEntry]:
    """300 writings of 发票怎么开, 200 of 能便宜点吗 and 300 of chatter reached the fallback; 200 messages a rule
    answered — some of them about invoices (发票收到了) — and 50 while the user was with agents."""
    texts = [("invoice", t) for t in unanswered_variants(INVOICE, 300, rng)]
    texts += [("cheaper", t) for t in unanswered_variants(CHEAPER, 200, rng)]
    texts += [("noise", rng.choice(QUIET_NOISE) + rng.choice(("", "？", "吗", "了"))) for _ in range(300)]
    rng.shuffle(texts)
    entries = []
    for i, (_, text) in enumerate(texts):
        ts, user = T0 - 86400 * 3 + i * 300, f"o{i % 97:03d}"
        entries += [LogEntry(ts, user, "push", "text", text, ""), LogEntry(ts, user, "transfer", "text")]
    for i in range(200):
        ts, user = T0 - 86400 * 2 + i * 100, f"o{i % 50:03d}"
        rule, text = ("invoice-sent", f"发票收到了{i}") if i % 2 else ("shipping", f"快递到哪了{i}")
        entries += [LogEntry(ts, user, "push", "text", text, rule), LogEntry(ts + 1, user, "sent", "text", "好", "")]
    for i in range(50):
        entries.append(LogEntry(T0 - 3600 + i, "o_agent", "push", "text", f"发票的事等你回复{i}", "", detail="quiet"))
    entries.append(LogEntry(T0 - 60, "o_new", "push", "event/user_enter_tempsession", "", ""))
    return entries


def report_of(entries: list[LogEntry], ruleset, catch_all: frozenset[str] = frozenset(), examples: bool = True,
              pages: int = 7, since: float = T0 - 7 * 86400):
    tally = Tally(since, T0, ZONE, catch_all)
    for i in range(pages):
        tally.add(entries[i::pages])  # pages come in any order
    return suggest(pickle.loads(pickle.dumps(tally.report("7d"))), ruleset, ZONE, catch_all, examples)  # as from
    # the worker process


@pytest.fixture
def ruleset(tmp_path):
    return load_ruleset(load_settings(write_bot(tmp_path, RULES)))


def test_known_groups_come_back_with_their_counts(ruleset):
    report = report_of(known_log(random.Random(1)), ruleset)
    groups = {s.group.key: s.group for s in report.suggestions}
    assert abs(groups["发票"].messages - 300) <= 15 and abs(groups["便宜"].messages - 200) <= 10
    assert report.suggestions[0].group.key == "发票" and report.suggestions[1].group.key == "便宜"
    assert groups["发票"].users <= 97 and "开发票" in groups["发票"].words
    assert len(groups["发票"].examples) == 3 and all("发票" in e for e in groups["发票"].examples)
    everything = json.dumps(report.as_dict(), ensure_ascii=False)
    assert "发票收到了" not in everything and "快递到哪了" not in everything  # a rule answered those
    assert "等你回复" not in everything  # written to agents, not to the bot
    assert report.unanswered == 800 and report.messages == 800 + 200 + 50  # the event is no user message
    assert len(report.days) == 8 and sum(d.messages for d in report.days) == 1000
    assert sum(d.transfers for d in report.days) == 800


def test_a_catch_all_rule_counts_as_unanswered(ruleset):
    entries = [LogEntry(T0 - 100 + i, f"u{i}", "push", "text", f"其他问题：发票抬头{i}", "other") for i in range(5)]
    assert report_of(entries, ruleset).suggestions == []
    report = report_of(entries, ruleset, frozenset({"other"}))
    assert [(s.group.messages, s.group.users) for s in report.suggestions] == [(5, 5)]
    assert report.problems == []
    assert report_of(entries, ruleset, frozenset({"other", "othre"})).problems == [
        "insights.catch_all: there is no rule named 'othre'"]
    assert report.rules == []  # a catch-all's hits are not a rule doing its work


def test_close_rules_and_rules_that_answer_now(ruleset):
    entries = [LogEntry(T0 - 100 + i, f"u{i}", "push", "text", text, "")
               for i, text in enumerate(["物流信息不更新"] * 4 + ["发票怎么开"] * 3 + ["能退吗"] * 2)]
    found = {s.group.key: s for s in report_of(entries, ruleset).suggestions}
    assert found["物流"].answered_by == "shipping"  # added since those messages came: nothing to do
    assert found["发票"].answered_by is None and found["发票"].close == ("invoice-sent",)  # 发票 in 发票收到
    assert all(s.close == () and s.answered_by is None for k, s in found.items() if k not in ("物流", "发票"))


def test_the_draft_pasted_as_a_rule_passes_kefu_test(tmp_path, ruleset, capsys):
    report = report_of(known_log(random.Random(2)), ruleset)
    for suggestion in report.suggestions[:2]:
        d = suggestion.draft
        assert d.test and "发票怎么开" not in d.rule  # the rule has the words; the examples are the test's
        (tmp_path / "rules" / f"50-{d.name}.yaml").write_text(d.rule, encoding="utf-8")
        (tmp_path / "rules" / f"50-{d.name}.test.yaml").write_text(d.test, encoding="utf-8")
    assert main(["test", "--config", str(tmp_path / "bot.yaml")]) == 0
    out = capsys.readouterr().out
    assert "2 passed, 0 failed" in out
    # and the rule answers every message of its group, not only the three examples
    rules = load_ruleset(load_settings(tmp_path / "bot.yaml"))
    again = report_of(known_log(random.Random(2)), rules)
    assert {s.answered_by for s in again.suggestions[:2]} == {"faq-发票", "faq-便宜"}


def test_examples_off_shows_no_user_text(ruleset):
    report = report_of(known_log(random.Random(3)), ruleset, examples=False)
    everything = render(report, "json") + render(report, "text") + render(report, "csv")
    assert "发票怎么开" not in everything and "便宜点" not in everything
    assert report.suggestions[0].group.messages > 250 and report.suggestions[0].draft.test == ""


def test_charts_are_svg_with_every_figure(ruleset):
    report = report_of(known_log(random.Random(4)), ruleset)
    charts = all_charts(report)
    assert list(charts) == ["hourly", "rates", "rules", "heat"]
    for svg in charts.values():
        ET.fromstring(svg)  # well-formed
        assert "style=" not in svg and "<script" not in svg  # the console's CSP allows neither
    bars = ET.fromstring(charts["hourly"]).findall("{http://www.w3.org/2000/svg}rect")
    assert sum(int(b.find("{http://www.w3.org/2000/svg}title").text.split()[-1]) for b in bars) == report.messages
    cells = ET.fromstring(charts["heat"]).findall("{http://www.w3.org/2000/svg}rect")
    assert len(cells) == 7 * 24
    assert "shipping" in charts["rules"] and "invoice-sent" in charts["rules"]
    empty = report_of([], ruleset, since=T0 - 86400)
    assert all("No data" in svg for name, svg in all_charts(empty).items() if name != "heat")


# ---- the console and `kefu report`, over one store ------------------------------------------------------


def report_json(config: Path, capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(["report", "--config", str(config), "--format", "json", *args]) == 0
    return json.loads(capsys.readouterr().out)


async def report_json_async(config: Path, capsys, *args: str) -> dict:
    """`kefu report` runs its own event loop: from a test's loop, in a thread."""
    return await asyncio.to_thread(report_json, config, capsys, *args)


async def test_console_and_kefu_report_show_the_same_numbers(make_bot, tmp_path, capsys):
    store = f"sqlite:///{tmp_path}/kefu.db"
    bot = await make_bot(RULES, config=f"admin:\n  token: {ADMIN}\n", store=store)
    rng = random.Random(5)
    said = [*unanswered_variants(INVOICE, 12, rng), *unanswered_variants(CHEAPER, 7, rng), "快递到哪了", "人工"]
    for i, text in enumerate(said):
        assert (await bot.push(xml_push(text_fields(text, user=f"o_user_{i}")))).status == 200
    # o_user_0 was handed to agents: what they write now is for the agents (the bot keeps quiet), not unanswered
    assert (await bot.push(xml_push(text_fields("发票开好了吗", user="o_user_0")))).status == 200
    await bot.drain()
    assert (await login(bot)).status == 303
    page = await (await bot.client.get("/admin/insights?since=7d")).text()
    groups = re.findall(r'data-key="([^"]+)" data-messages="(\d+)" data-users="(\d+)"', page)
    assert groups[:2] == [("发票", "12", "12"), ("便宜", "7", "7")]
    assert 'id="chart-hourly"' in page and 'id="chart-heat"' in page and "faq-发票" in html.unescape(page)
    cli = await report_json_async(tmp_path / "bot.yaml", capsys, "--since", "7d")
    assert [(g["key"], str(g["messages"]), str(g["users"])) for g in cli["groups"]] == groups
    for name in ("messages", "unanswered", "transfers"):
        assert re.search(rf'id="{name}">(\d+)<', page).group(1) == str(cli[name])
    assert (cli["messages"], cli["unanswered"], cli["transfers"]) == (22, 19, 20)  # fallback and 人工 transfer


async def test_console_insights_need_a_session_and_a_sane_period(make_bot):
    bot = await make_bot(RULES, config=f"admin:\n  token: {ADMIN}\n")
    response = await bot.client.get("/admin/insights", allow_redirects=False)
    assert response.status == 303 and "/admin/login" in response.headers["Location"]
    assert (await login(bot)).status == 303
    assert (await bot.client.get("/admin/insights?since=soon")).status == 400
    page = await (await bot.client.get("/admin/insights?since=1d")).text()
    assert "Every message in this period found a rule" in page and 'aria-current="page">最近 1d' in page


def test_kefu_report_formats_and_its_errors(tmp_path, capsys):
    config = write_bot(tmp_path, RULES, store=f"sqlite:///{tmp_path}/kefu.db", config="log:\n  keep: 2d\n")

    async def fill() -> None:
        store = open_store(f"sqlite:///{tmp_path}/kefu.db")
        await store.open()
        import time

        now = time.time()
        await store.log_add([LogEntry(now - 3600 - i, f"u{i}", "push", "text", "包邮吗", "") for i in range(4)]
                            + [LogEntry(now - 3 * 86400, "old", "push", "text", "太久以前的包邮问题", "")])
        await store.close()

    asyncio.run(fill())
    data = report_json(config, capsys, "--since", "30d")
    assert data["period"] == "2d" and data["unanswered"] == 4  # log.keep bounds the period
    assert main(["report", "--config", str(config)]) == 0
    text = capsys.readouterr().out
    assert "包邮" in text and "4 messages from 4 users" in text
    assert main(["report", "--config", str(config), "--format", "csv"]) == 0
    csv_text = capsys.readouterr().out
    assert csv_text.startswith("table,key,measure,value\n") and "group,1,messages,4\n" in csv_text
    assert main(["report", "--config", str(config), "--since", "lately"]) == 2
    assert "--since" in capsys.readouterr().err
    memory = write_bot(tmp_path / "m" if (tmp_path / "m").mkdir() is None else tmp_path, RULES)
    assert main(["report", "--config", str(memory)]) == 1


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_worker_processes_read_sqlite_and_redis_alike(tmp_path, kind):
    """The period is counted in slices by worker processes with their own store connection: the same report
    whichever store, and whichever way the entries fall into slices and pages."""
    from bot.insights.report import read_report
    from bot.insights.service import Period

    from .stores import flush_prefix, redis_url, require_redis

    if kind == "redis":
        require_redis()
    url = redis_url() if kind == "redis" else f"sqlite:///{tmp_path}/kefu.db"
    entries = known_log(random.Random(6))[:1500]  # the redis store keeps the newest 20,000 entries

    async def fill() -> None:
        store = open_store(url)
        await store.open()
        await store.log_add(entries)
        await store.close()

    asyncio.run(fill())
    try:
        settings = load_settings(write_bot(tmp_path, RULES, store=url))
        ruleset = load_ruleset(settings)
        made = read_report(settings, ruleset, Period("7d", 7 * 86400), now=T0)
        expected = report_of(entries, ruleset)
        assert made.as_dict() == expected.as_dict()
        assert made.groups[0].key == "发票" and made.unanswered == expected.unanswered > 700
    finally:
        if kind == "redis":
            asyncio.run(flush_prefix(url))


async def test_reports_are_cached_per_period_until_the_rules_change(tmp_path):
    from bot.insights.service import Insights, Period
    from bot.store import MemoryStore

    clock = [T0]
    store = MemoryStore(lambda: clock[0])
    await store.log_add([LogEntry(T0 - 100 - i, f"u{i}", "push", "text", "包邮吗", "") for i in range(3)])
    settings = load_settings(write_bot(tmp_path, RULES))
    rules = [load_ruleset(settings)]
    insights = Insights(store, settings, lambda: rules[0], clock=lambda: clock[0])
    day = Period("1d", 86400)
    first = await insights.report(day)
    assert [(g.key, g.messages) for g in first.groups] == [("包邮", 3)]
    await store.log_add([LogEntry(T0 - 50, "u9", "push", "text", "包邮吗", "")])
    assert await insights.report(day) is first  # cached
    both = await asyncio.gather(insights.report(Period("7d", 7 * 86400)), insights.report(Period("7d", 7 * 86400)))
    assert both[0] is both[1] and both[0].groups[0].messages == 4  # one computation for both readers
    (tmp_path / "rules" / "20-more.yaml").write_text("rules:\n  - name: free\n    when: {keywords: [包邮]}\n"
                                                     "    reply: 包邮\n", encoding="utf-8")
    rules[0] = load_ruleset(settings)
    again = await insights.report(day)
    assert again is not first and again.suggestions[0].answered_by == "free"
    clock[0] += 3600  # later, past the cache: the new message counts
    assert (await insights.report(day)).groups[0].messages == 4
    await insights.close()


async def test_a_dead_worker_is_a_503_and_a_new_pool_next_time(make_bot, tmp_path, monkeypatch):
    from concurrent.futures.process import BrokenProcessPool

    from bot.console.insights import INSIGHTS
    from bot.insights import service

    bot = await make_bot(RULES, config=f"admin:\n  token: {ADMIN}\n", store=f"sqlite:///{tmp_path}/kefu.db")
    assert (await login(bot)).status == 303
    real = service.count_in

    async def dies(*args, **kw):
        raise BrokenProcessPool("a worker was killed")

    monkeypatch.setattr(service, "count_in", dies)
    response = await bot.client.get("/admin/insights")
    assert response.status == 503 and "worker process died" in await response.text()
    assert bot.client.app[INSIGHTS]._pool is None  # the broken pool is not reused
    monkeypatch.setattr(service, "count_in", real)
    assert (await bot.client.get("/admin/insights")).status == 200


def test_the_insights_section_of_bot_yaml(tmp_path):
    from bot.config import parse_settings
    from bot.errors import ConfigError
    from bot.insights.settings import InsightsSettings

    def parse(text: str):
        return parse_settings(text, "bot.yaml", tmp_path).insights

    assert parse("") == parse("insights:\n") == InsightsSettings(examples=True, catch_all=())
    assert parse("insights:\n  examples: false\n  catch_all: other\n").catch_all == ("other",)
    assert parse("insights:\n  catch_all: [a, b]\n").catch_all == ("a", "b")
    for text, problem in (("insights:\n  example: false\n", "bot.yaml:2: insights: unknown key 'example'"),
                          ("insights:\n  catch_all: 3\n", "bot.yaml:2: 'catch_all' must be a rule name or a list"),
                          ("insights:\n  examples: maybe\n", "bot.yaml:2: 'examples' must be true or false"),
                          ("insights: [x]\n", "bot.yaml:1: 'insights' must be a mapping")):
        with pytest.raises(ConfigError) as raised:
            parse(text)
        assert str(raised.value).startswith(problem), str(raised.value)
