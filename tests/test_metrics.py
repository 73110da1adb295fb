"""/metrics and the structured log lines, through the real app and the fake WeChat API."""

from __future__ import annotations

import logging

from prometheus_client.parser import text_string_to_metric_families

from bot.logs import request_id
from bot.protocol.wire import parse_message

from .fakewechat import Failure
from .helpers import event_fields, signed_query, text_fields, xml_push

SEND = "/cgi-bin/message/custom/send"
RULES = {"a.yaml": """
rules:
  - name: 物流
    when: {keywords: [快递]}
    reply: 已发货。
  - name: welcome
    when: {event: user_enter_tempsession}
    reply: 您好！
  - name: never
    when: {equals: 永远不会有人这样说}
    reply: 嗯。
"""}


async def scrape(bot) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await bot.client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


async def test_pushes_rules_transfers_and_refusals_are_counted(make_bot, fake):
    bot = await make_bot(RULES)
    for i, content in enumerate(["我的快递呢", "快递到了吗", "你好"]):
        assert (await bot.push(xml_push(text_fields(content, msg_id=100 + i)))).status == 200
    await bot.push(xml_push(text_fields("快递", msg_id=100)))  # a retry of the first push
    await bot.push(xml_push(event_fields("user_enter_tempsession")))
    await bot.push(xml_push(event_fields("LOCATION")))  # an event no rule names: success, no fallback
    bad = await bot.client.post("/wechat", data=xml_push(text_fields("x")), params={**signed_query(),
                                                                                  "signature": "0" * 40})
    assert bad.status == 403
    await bot.drain()
    m = await scrape(bot)
    assert m["kefu_pushes_total", (("answer", "success"), ("type", "text"))] == 2
    assert m["kefu_pushes_total", (("answer", "transfer"), ("type", "text"))] == 1
    assert m["kefu_pushes_total", (("answer", "success"), ("type", "event/user_enter_tempsession"))] == 1
    assert m["kefu_pushes_total", (("answer", "success"), ("type", "event/location"))] == 1
    assert m["kefu_push_retries_total", ()] == 1
    assert m["kefu_pushes_refused_total", (("status", "403"),)] == 1
    assert m["kefu_rule_hits_total", (("rule", "物流"),)] == 2
    assert m["kefu_rule_hits_total", (("rule", "welcome"),)] == 1
    assert ("kefu_rule_hits_total", (("rule", "never"),)) not in m
    assert m["kefu_fallbacks_total", ()] == 1
    assert m["kefu_transfers_total", ()] == 1
    assert m["kefu_push_latency_seconds_count", ()] == 5
    assert m["kefu_sends_total", (("errcode", "0"), ("result", "sent"))] == 3
    assert m["kefu_send_latency_seconds_count", ()] == 3
    assert m["kefu_rules", (("version", bot.runtime.rules.current.version),)] == 3
    assert m["kefu_outbox_replies", (("status", "sent"),)] == 3
    assert m["kefu_outbox_oldest_pending_age_seconds", ()] == 0


async def test_failed_sends_are_counted_by_errcode_and_pending_replies_show_their_age(make_bot, fake):
    bot = await make_bot(RULES)
    fake.fail(SEND, Failure(errcode=45047))
    await bot.push(xml_push(text_fields("快递", msg_id=1)))
    await bot.drain()
    m = await scrape(bot)
    assert m["kefu_sends_total", (("errcode", "45047"), ("result", "failed"))] == 1
    assert m["kefu_outbox_replies", (("status", "failed"),)] == 1


async def test_reloads_are_counted_and_a_refused_one_is_visible(make_bot, tmp_path):
    bot = await make_bot(RULES)
    (tmp_path / "rules" / "a.yaml").write_text(RULES["a.yaml"].replace("快递]", "包裹]"), encoding="utf-8")
    assert (await bot.runtime.reloader.reload("test")).swapped
    (tmp_path / "rules" / "b.yaml").write_text("rules:\n  - name: broken\n    when: {keyword: [x]}\n",
                                               encoding="utf-8")
    assert not (await bot.runtime.reloader.reload("test")).swapped
    m = await scrape(bot)
    assert m["kefu_reloads_total", (("result", "loaded"),)] == 1
    assert m["kefu_reloads_total", (("result", "refused"),)] == 1


async def test_one_log_line_per_push_and_per_send_share_a_request_id(make_bot, fake, caplog):
    bot = await make_bot(RULES)
    caplog.set_level(logging.INFO)
    fake.fail(SEND, Failure(errcode=45015))
    await bot.push(xml_push(text_fields("快递", msg_id=42)))
    await bot.drain()
    pushes = [r for r in caplog.records if r.name == "bot.server" and r.getMessage().startswith("push rid=")]
    sends = [r for r in caplog.records if r.name == "bot.outbox" and "rid=" in r.getMessage()]
    assert len(pushes) == 1 and len(sends) == 1
    push, send = pushes[0].fields, sends[0].fields
    rid = request_id(parse_message(xml_push(text_fields("快递", msg_id=42)))[0].dedupe_key)
    assert push["rid"] == send["rid"] == rid and len(rid) == 8
    assert push["rule"] == "物流" and push["type"] == "text" and push["answer"] == "success"
    assert push["version"] == bot.runtime.rules.current.version and push["latency_ms"] >= 0
    assert push["user"] != text_fields("x")["FromUserName"] and "…" in push["user"]  # shortened
    assert send["errcode"] == 45015 and send["result"] == "failed"
    for record in (*pushes, *sends):
        assert text_fields("x")["FromUserName"] not in record.getMessage()
