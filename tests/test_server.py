"""End to end through the real app: signed pushes in, answers and sends to the fake WeChat API out."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import xml.etree.ElementTree as ET

import pytest

from bot.protocol.signature import sign

from .fakewechat import Failure
from .helpers import ACCOUNT, TOKEN, USER, event_fields, json_push, signed_query, text_fields, xml_push

RULES = {
    "10-main.yaml": """
rules:
  - name: welcome
    when: {event: user_enter_tempsession}
    reply: 欢迎光临{{ vars.shop_name }}（来自 {{ message.session_from }}）
  - name: shipping
    when: {keywords: [发货, 快递]}
    reply: {template: shipping.j2}
  - name: order
    when:
      regex: '(?:订单|单号)\\D*(?P<order_no>\\d{8,20})'
    reply:
      - text: 正在查询订单 {{ match.order_no }}……
      - text: 需要人工确认，正在为您转接。
    transfer: true
  - name: human
    priority: 100
    when: {equals: [人工, 转人工]}
    transfer: true
  - name: invoice
    when: {prefix: [发票]}
    reply: 抬头：{{ match.rest }}
  - name: photo
    when: {msgtype: image}
    reply: {image: MEDIA_1}
  - name: page
    when: {msgtype: miniprogrampage}
    reply:
      - link: {title: 链接, description: 说明, url: 'https://example.com/x', thumb_url: 'https://example.com/t.png'}
      - miniprogrampage: {title: 页面, pagepath: pages/index, thumb_media_id: THUMB_1}
  - name: broken
    when: {keywords: [坏模板]}
    reply: "{{ match.nothing_here }}"
""",
}
TEMPLATES = {"shipping.j2": "{{ vars.shop_name }}：{{ match.keyword }}问题请看这里。\n"}


@pytest.fixture
async def bot(make_bot):
    return await make_bot(RULES, templates=TEMPLATES)


def parse_answer_xml(text: str) -> dict[str, str]:
    return {child.tag: child.text or "" for child in ET.fromstring(text)}


# ---- URL verification ----------------------------------------


async def test_get_echoes_echostr_when_signature_holds(bot):
    resp = await bot.client.get("/wechat", params=signed_query(echostr="4375120948345356249"))
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    assert await resp.text() == "4375120948345356249"


@pytest.mark.parametrize("query", [
    signed_query(token="wrong", echostr="x"),
    {"timestamp": "1", "nonce": "2", "echostr": "x"},
    {**signed_query(echostr="x"), "nonce": "tampered"},
])
async def test_get_with_bad_signature_is_403(bot, query):
    resp = await bot.client.get("/wechat", params=query)
    assert resp.status == 403
    assert "x" not in await resp.text()


# ---- answers and sends, XML and JSON ----------------------------------------

FORMATS = [("xml", xml_push, "text/xml"), ("json", json_push, "application/json")]


@pytest.mark.parametrize("fmt,encode,content_type", FORMATS)
async def test_keyword_rule_answers_success_and_sends_template(bot, fake, fmt, encode, content_type):
    resp = await bot.push(encode(text_fields("我的快递到哪了")), content_type=content_type)
    assert resp.status == 200
    assert await resp.text() == "success"
    sent = await fake.wait_sent(1)
    assert sent == [{"touser": USER, "msgtype": "text", "text": {"content": "测试小店：快递问题请看这里。"}}]


@pytest.mark.parametrize("fmt,encode,content_type", FORMATS)
async def test_regex_rule_sends_replies_in_order_then_transfers(bot, fake, fmt, encode, content_type):
    resp = await bot.push(encode(text_fields("订单号：2024060112345678")), content_type=content_type)
    assert resp.status == 200
    body = await resp.text()
    answer = json.loads(body) if fmt == "json" else parse_answer_xml(body)
    assert answer["MsgType"] == "transfer_customer_service"
    assert answer["ToUserName"] == USER
    assert answer["FromUserName"] == ACCOUNT
    assert int(answer["CreateTime"]) == pytest.approx(time.time(), abs=5)
    assert resp.content_type == ("application/json" if fmt == "json" else "application/xml")
    sent = await fake.wait_sent(2)
    assert [s["text"]["content"] for s in sent] == [
        "正在查询订单 2024060112345678……", "需要人工确认，正在为您转接。"]


@pytest.mark.parametrize("fmt,encode,content_type", FORMATS)
async def test_format_is_detected_without_content_type(bot, fmt, encode, content_type):
    resp = await bot.push(b"\n  " + encode(text_fields("人工")), content_type="application/octet-stream")
    body = await resp.text()
    assert resp.status == 200
    if fmt == "json":
        assert json.loads(body)["MsgType"] == "transfer_customer_service"
    else:
        assert parse_answer_xml(body)["MsgType"] == "transfer_customer_service"


async def test_equals_rule_with_priority_transfers_without_sending(bot, fake):
    resp = await bot.push(xml_push(text_fields(" 人工 ")))
    assert parse_answer_xml(await resp.text())["MsgType"] == "transfer_customer_service"
    await bot.drain()
    assert fake.calls == []


async def test_prefix_rule_captures_the_rest(bot, fake):
    await bot.push(json_push(text_fields("发票 某某科技有限公司")), content_type="application/json")
    sent = await fake.wait_sent(1)
    assert sent[0]["text"]["content"] == "抬头：某某科技有限公司"


async def test_event_rule_sees_session_from(bot, fake):
    resp = await bot.push(json_push(event_fields("user_enter_tempsession", SessionFrom="order_page")))
    assert await resp.text() == "success"
    sent = await fake.wait_sent(1)
    assert sent[0]["text"]["content"] == "欢迎光临测试小店（来自 order_page）"


async def test_image_message_gets_image_reply(bot, fake):
    fields = {"ToUserName": ACCOUNT, "FromUserName": USER, "CreateTime": int(time.time()), "MsgType": "image",
              "PicUrl": "https://example.com/p.jpg", "MediaId": "m1", "MsgId": 77}
    await bot.push(xml_push(fields))
    assert await fake.wait_sent(1) == [{"touser": USER, "msgtype": "image", "image": {"media_id": "MEDIA_1"}}]


async def test_page_message_gets_link_and_page_replies(bot, fake):
    fields = {"ToUserName": ACCOUNT, "FromUserName": USER, "CreateTime": int(time.time()),
              "MsgType": "miniprogrampage", "Title": "t", "AppId": "wx1", "PagePath": "p", "ThumbUrl": "u",
              "ThumbMediaId": "m", "MsgId": 78}
    await bot.push(json_push(fields), content_type="application/json")
    sent = await fake.wait_sent(2)
    assert sent[0] == {"touser": USER, "msgtype": "link", "link": {
        "title": "链接", "description": "说明", "url": "https://example.com/x",
        "thumb_url": "https://example.com/t.png"}}
    assert sent[1] == {"touser": USER, "msgtype": "miniprogrampage", "miniprogrampage": {
        "title": "页面", "pagepath": "pages/index", "thumb_media_id": "THUMB_1"}}


async def test_send_body_is_utf8_not_escaped(bot, fake):
    await bot.push(xml_push(text_fields("发货")))
    await fake.wait_sent(1)
    raw = fake.calls_to("/cgi-bin/message/custom/send")[0].raw
    assert "测试小店".encode() in raw
    assert b"\\u" not in raw


async def test_no_match_transfers_a_message(bot, fake):
    resp = await bot.push(xml_push(text_fields("随便问问")))
    assert parse_answer_xml(await resp.text())["MsgType"] == "transfer_customer_service"
    await bot.drain()
    assert fake.sent == []


@pytest.mark.parametrize("event", ["subscribe", "CLICK", "kf_close_session", "some_future_event"])
async def test_events_are_never_transferred(bot, fake, event):
    resp = await bot.push(xml_push(event_fields(event, EventKey="k")))
    assert resp.status == 200
    assert await resp.text() == "success"


async def test_unknown_message_type_is_kept_and_falls_back(bot):
    fields = {"ToUserName": ACCOUNT, "FromUserName": USER, "CreateTime": int(time.time()),
              "MsgType": "hologram", "Depth": "3", "MsgId": 99}
    resp = await bot.push(xml_push(fields))
    assert parse_answer_xml(await resp.text())["MsgType"] == "transfer_customer_service"


async def test_render_error_hands_over_and_logs(bot, fake, caplog):
    caplog.set_level(logging.ERROR, logger="bot.server")
    resp = await bot.push(xml_push(text_fields("坏模板")))
    assert resp.status == 200
    assert parse_answer_xml(await resp.text())["MsgType"] == "transfer_customer_service"
    await bot.drain()
    assert fake.sent == []
    assert any("broken" in r.getMessage() and "nothing_here" in r.getMessage() for r in caplog.records)


async def test_answer_does_not_wait_for_the_wechat_api(bot, fake):
    hold = asyncio.Event()
    fake.fail("/cgi-bin/token", Failure(hold=hold))  # the API hangs until released
    resp = await bot.push(xml_push(text_fields("发货")))
    assert resp.status == 200 and await resp.text() == "success"
    assert fake.sent == []
    hold.set()
    assert len(await fake.wait_sent(1)) == 1


async def test_one_log_line_per_push_with_rule_and_version(bot, caplog):
    caplog.set_level(logging.INFO, logger="bot.server")
    await bot.push(xml_push(text_fields("发货")))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("push ")]
    assert len(lines) == 1
    version = bot.runtime.rules.current.version
    assert "rule=shipping" in lines[0] and f"version={version}" in lines[0] and "answer=success" in lines[0]


# ---- retries: one user message, one reply ----------------------------------------


@pytest.mark.parametrize("fmt,encode,content_type", FORMATS)
async def test_a_push_delivered_three_times_at_once_sends_once(bot, fake, fmt, encode, content_type):
    hold = asyncio.Event()
    fake.fail("/cgi-bin/token", Failure(hold=hold))
    body = encode(text_fields("订单 2024060112345678", msg_id=5555))
    query = signed_query()
    answers = await asyncio.gather(
        *[bot.push(body, query=query, content_type=content_type) for _ in range(3)])
    texts = [await a.text() for a in answers]
    assert len(set(texts)) == 1
    assert "transfer_customer_service" in texts[0]
    hold.set()
    await bot.drain()
    assert len(fake.sent) == 2  # the rule's two replies, once
    again = await bot.push(body, query=signed_query(), content_type=content_type)  # a late retry
    assert await again.text() == texts[0]
    await bot.drain()
    assert len(fake.sent) == 2


async def test_retried_event_is_recognised_without_msgid(bot, fake):
    fields = event_fields("user_enter_tempsession", SessionFrom="x")
    for _ in range(3):
        resp = await bot.push(json_push(fields), content_type="application/json")
        assert await resp.text() == "success"
    await bot.drain()
    assert len(fake.sent) == 1


async def test_retry_waits_for_the_first_answer(bot, fake, monkeypatch):
    """A retry that arrives while the first delivery is still deciding gets the first's answer."""
    import bot.server as server

    release = asyncio.Event()
    entered = asyncio.Event()
    runs = []
    original = server._handle_message

    async def slow(*args, **kwargs):
        runs.append(args[1])
        entered.set()
        await release.wait()
        return await original(*args, **kwargs)

    monkeypatch.setattr(server, "_handle_message", slow)
    claims = []
    retries_waiting = asyncio.Event()
    original_claim = bot.runtime.dedupe.claim

    def counting_claim(key):
        first, future = original_claim(key)
        claims.append(first)
        if claims.count(False) == 2:
            retries_waiting.set()
        return first, future

    monkeypatch.setattr(bot.runtime.dedupe, "claim", counting_claim)
    body = xml_push(text_fields("人工", msg_id=4242))
    first = asyncio.ensure_future(bot.push(body))
    await entered.wait()
    second = asyncio.ensure_future(bot.push(body))
    third = asyncio.ensure_future(bot.push(body))
    await retries_waiting.wait()  # both retries arrived while the first is still deciding
    assert not first.done()
    release.set()
    answers = [await (await r).text() for r in (first, second, third)]
    assert len(runs) == 1  # the rules ran once for three deliveries
    assert len(set(answers)) == 1 and "transfer_customer_service" in answers[0]


async def test_distinct_messages_are_not_deduplicated(bot, fake):
    for i in range(3):
        await bot.push(xml_push(text_fields("发货", msg_id=1000 + i)))
    assert len(await fake.wait_sent(3)) == 3


# ---- refused pushes: 4xx, a log line, never a 500 ----------------------------------------


@pytest.mark.parametrize("query,status", [
    (signed_query(token="wrong"), 403),
    ({"timestamp": str(int(time.time())), "nonce": "1"}, 403),
    (signed_query(timestamp=int(time.time()) - 3600), 403),
    (signed_query(timestamp=int(time.time()) + 3600), 403),
])
async def test_bad_signature_or_timestamp_is_403(bot, fake, caplog, query, status):
    caplog.set_level(logging.WARNING, logger="bot.server")
    resp = await bot.push(xml_push(text_fields("发货")), query=query)
    assert resp.status == status
    assert any("refused" in r.getMessage() for r in caplog.records)
    await bot.drain()
    assert fake.calls == []


async def test_signature_is_checked_before_the_body_is_parsed(bot, caplog):
    caplog.set_level(logging.WARNING, logger="bot.server")
    resp = await bot.push(b"<xml><broken", query=signed_query(token="wrong"))
    assert resp.status == 403


@pytest.mark.parametrize("body", [
    b"", b"hello", b"<xml><a>", b"{not json", b"[1, 2]", b"<xml></xml>",
    b'{"MsgType": "text"}', b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><xml><a>&a;</a></xml>',
    b"\xff\xfe\x00garbage", b'{"FromUserName": {"nested": 1}, "MsgType": "text"}',
])
async def test_malformed_body_is_400(bot, caplog, body):
    caplog.set_level(logging.WARNING, logger="bot.server")
    resp = await bot.push(body)
    assert resp.status == 400
    assert any("refused with 400" in r.getMessage() for r in caplog.records)


async def test_body_over_the_limit_is_413(make_bot):
    bot = await make_bot(RULES, templates=TEMPLATES, config="security:\n  max_body_bytes: 1024\n")
    resp = await bot.push(xml_push(text_fields("发货" * 400)))
    assert resp.status == 413
    small = await bot.push(xml_push(text_fields("发货")))
    assert small.status == 200


async def test_a_chunked_body_is_read_whole_and_held_to_the_limit(make_bot):
    """Without a Content-Length the limit is counted while reading, whether the body comes in one piece or
    in several."""
    bot = await make_bot(RULES, templates=TEMPLATES, config="security:\n  max_body_bytes: 1024\n")

    def chunked(body: bytes, size: int):
        async def pieces():
            for i in range(0, len(body), size):
                yield body[i:i + size]
        return pieces()

    for size in (10_000, 100):  # one chunk, then many
        big = await bot.client.post(bot.path, data=chunked(xml_push(text_fields("发货" * 400)), size),
                                    params=signed_query())
        assert big.status == 413
        small = await bot.client.post(bot.path, data=chunked(xml_push(text_fields("人工", user=f"o{size}")), size),
                                      params=signed_query())  # a user of its own: not quiet after a handoff
        assert small.status == 200 and b"transfer_customer_service" in await small.read()


async def test_timestamp_check_can_be_turned_off(make_bot):
    bot = await make_bot(RULES, templates=TEMPLATES, config="security:\n  max_timestamp_age: 0\n")
    resp = await bot.push(xml_push(text_fields("人工")), query=signed_query(timestamp=1000))
    assert resp.status == 200


async def test_unknown_path_is_404_and_wrong_method_405(bot):
    assert (await bot.client.get("/nope")).status == 404
    assert (await bot.client.put("/wechat")).status == 405


# ---- health ----------------------------------------


async def test_health_and_readiness(bot):
    assert (await bot.client.get("/healthz")).status == 200
    resp = await bot.client.get("/readyz")
    assert resp.status == 200
    data = await resp.json()
    assert data["ready"] is True
    assert data["rules"] == {"version": bot.runtime.rules.current.version, "count": 8}


# ---- trying it without WeChat ----------------------------------------


async def test_without_credentials_replies_are_logged_and_kept_unsent(make_bot, fake, caplog):
    caplog.set_level(logging.DEBUG)  # at INFO the push's own line says replies=1; DEBUG shows each reply
    bot = await make_bot(RULES, templates=TEMPLATES, credentials=False)
    resp = await bot.push(xml_push(text_fields("发货")))
    assert await resp.text() == "success"
    await bot.drain()
    assert fake.calls == []
    items = await bot.runtime.store.outbox_items()
    assert [(i.status, i.error) for i in items] == [("unsent", "not sent: no credentials")]
    assert any("not sent: no credentials" in r.getMessage() and "测试小店" in r.getMessage()
               for r in caplog.records if r.levelno == logging.DEBUG)
    unsent = await bot.runtime.store.log_query()
    assert sorted(e.kind for e in unsent) == ["push", "unsent"]  # what `kefu log` shows
    assert any(e.kind == "unsent" and "测试小店" in e.text for e in unsent)


async def test_sent_and_failed_replies_are_recorded_in_the_outbox(bot, fake):
    fake.fail("/cgi-bin/message/custom/send", Failure(errcode=45047))
    await bot.push(xml_push(text_fields("订单 2024060112345678")))
    await bot.drain()
    items = sorted(await bot.runtime.store.outbox_items(), key=lambda i: i.id)
    assert [i.status for i in items] == ["failed", "sent"]
    assert items[0].errcode == 45047 and "quota" in items[0].error


def test_signature_helper_matches_protocol():
    assert sign(TOKEN, "1", "2") == sign("2", TOKEN, "1")


# ---- edges found in review -------------------------------------------------------------------------


@pytest.mark.parametrize("body,status", [
    (b'{"FromUserName":"\\ud800","MsgType":"a"}', 400),  # a lone surrogate: no answer could carry it
    (b'{"ToUserName":"gh\\udfff","FromUserName":"o1","MsgType":"text","Content":"x","MsgId":1}', 400),
    (b'{"ToUserName":"gh","FromUserName":"o1","MsgType":"text","Content":"\\ud83d\\ude00","MsgId":2,"CreateTime":1}',
     200),  # a real pair
    (b"<xml>" + b"<a>" * 5000 + b"x" + b"</a>" * 5000 + b"</xml>", 400),  # deep XML nesting
])
async def test_unanswerable_bodies_are_400(bot, body, status, caplog):
    caplog.set_level(logging.ERROR)
    resp = await bot.push(body)
    assert resp.status == status
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_body_that_does_not_match_its_content_encoding_is_400(bot):
    resp = await bot.client.post("/wechat", params=signed_query(), data=b"not gzip at all",
                                 headers={"Content-Encoding": "gzip", "Content-Type": "text/xml"})
    assert resp.status == 400


@pytest.mark.parametrize("timestamp", ["9" * 400, "9" * 5000, "-1"])
async def test_absurd_timestamps_are_403(bot, timestamp):
    query = {"timestamp": timestamp, "nonce": "n", "signature": sign(TOKEN, timestamp, "n")}
    assert (await bot.push(xml_push(text_fields("人工")), query=query)).status == 403


async def test_get_verification_checks_the_timestamp_too(bot):
    resp = await bot.client.get("/wechat", params=signed_query(timestamp=1000, echostr="x"))
    assert resp.status == 403


async def test_fallback_replies_are_not_sent_for_events(make_bot, fake):
    bot = await make_bot({"a.yaml": "rules: []\nfallback:\n  reply: 抱歉，我没听懂。\n"})
    for event in ("LOCATION", "VIEW", "unsubscribe", "TEMPLATESENDJOBFINISH", "kf_close_session"):
        assert await (await bot.push(xml_push(event_fields(event)))).text() == "success"
    await bot.push(xml_push(text_fields("什么")))
    await bot.drain()
    assert [s["text"]["content"] for s in fake.sent] == ["抱歉，我没听懂。"]  # only for the user's message


async def test_long_texts_are_split_and_sent_in_order(make_bot, fake):
    long = "\n".join(f"第{i}段：" + "很长的说明文字。" * 20 for i in range(12))
    bot = await make_bot({"a.yaml": "rules:\n  - name: long\n    when: {equals: [说明]}\n"
                                    "    reply: {template: long.j2}\n"}, templates={"long.j2": long})
    await bot.push(xml_push(text_fields("说明")))
    await bot.drain()
    parts = [s["text"]["content"] for s in fake.sent]
    assert len(parts) > 1
    assert all(len(p.encode()) <= 2000 for p in parts)
    assert "\n".join(parts) == long


async def test_log_lines_cannot_be_forged_from_a_push(bot, caplog):
    caplog.set_level(logging.INFO, logger="bot.server")
    await bot.push(json_push(event_fields("evil\nINFO forged line")), content_type="application/json")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("push ")]
    assert len(lines) == 1 and "\n" not in lines[0] and "evil\\x0ainfo" in lines[0]


async def test_the_conversation_log_records_pushes_replies_failures_and_transfers(make_bot, fake):
    bot = await make_bot(RULES, templates=TEMPLATES, config="handoff:\n  quiet: 0\n")
    fake.fail("/cgi-bin/message/custom/send", Failure(errcode=45015))
    await bot.push(xml_push(text_fields("订单号：2024060112345678")))
    await bot.push(xml_push(text_fields("随便问问")))
    await bot.drain()
    entries = await bot.runtime.store.log_query(user=USER)
    kinds = [(e.kind, e.rule) for e in entries]
    assert kinds[:2] == [("push", "order"), ("transfer", "order")]
    # the second push and the first push's two sends happen concurrently
    assert sorted(kinds[2:]) == [("failed", ""), ("push", ""), ("sent", ""), ("transfer", "")]
    assert kinds.index(("push", "")) < kinds.index(("transfer", ""))
    assert entries[0].text == "订单号：2024060112345678" and entries[0].msg_type == "text"
    failed = next(e for e in entries if e.kind == "failed")
    assert failed.errcode == 45015 and "48 hours" in failed.detail


async def test_a_store_failure_after_the_replies_are_stored_keeps_the_answer(bot, fake, monkeypatch):
    from bot.errors import StoreError

    async def broken(*args, **kwargs):
        raise StoreError("redis blip")

    monkeypatch.setattr(bot.runtime.store, "put_answer", broken)
    resp = await bot.push(xml_push(text_fields("发货")))
    assert await resp.text() == "success"  # not handed to agents: the reply is already on its way
    assert len(await fake.wait_sent(1)) == 1


# ---- bodies no WeChat push has: a 4xx and a log line, never a 500 ------------------------------------


def _xml(*parts: str) -> bytes:
    return (f"<xml><ToUserName>{ACCOUNT}</ToUserName><FromUserName>{USER}</FromUserName>" + "".join(parts)
            + "</xml>").encode()


def _errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("encoding", ["gbk", "GB2312", "x-unknown", "base64", "utf-32"])
async def test_an_xml_declaration_of_an_encoding_expat_cannot_read_is_400(bot, caplog, encoding):
    body = (f'<?xml version="1.0" encoding="{encoding}"?>'.encode()
            + _xml("<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>hi</Content><MsgId>1</MsgId>"))
    resp = await bot.push(body, content_type="text/xml")
    assert resp.status == 400 and not _errors(caplog)
    assert any("push refused with 400" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("body", [
    _xml("<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>人工</Content><Content>发货</Content>"
         "<MsgId>11</MsgId>"),
    _xml("<CreateTime>1</CreateTime><MsgType>text</MsgType><Content><b>发货</b></Content><MsgId>12</MsgId>"),
    _xml("<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>x</Content><MsgId>13</MsgId><MsgId>14</MsgId>"),
    _xml("<CreateTime>1</CreateTime><CreateTime>2</CreateTime><MsgType>event</MsgType>"
         "<Event>user_enter_tempsession</Event>"),
    _xml("<MsgType>event</MsgType><Event>user_enter_tempsession</Event>"),  # an event's dedupe key needs it
    _xml("<CreateTime>abc</CreateTime><MsgType>event</MsgType><Event>user_enter_tempsession</Event>"),
    _xml("<CreateTime>" + "9" * 5000 + "</CreateTime><MsgType>text</MsgType><Content>hi</Content><MsgId>7</MsgId>"),
    _xml("<CreateTime>1_000</CreateTime><MsgType>event</MsgType><Event>user_enter_tempsession</Event>"),
    _xml("<CreateTime>١٢</CreateTime><MsgType>event</MsgType><Event>user_enter_tempsession</Event>"),
    f"<xml><FromUserName>{USER}</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType>"
    f"<Content>发货</Content><MsgId>15</MsgId></xml>".encode(),
], ids=["repeated-Content", "nested-Content", "repeated-MsgId", "repeated-CreateTime", "no-CreateTime",
        "text-CreateTime", "5000-digit-CreateTime", "underscored-CreateTime", "arabic-CreateTime",
        "no-ToUserName"])
async def test_fields_that_repeat_hold_elements_or_are_no_number_are_refused(make_bot, fake, caplog, body):
    bot = await make_bot(RULES, templates=TEMPLATES, config="security:\n  max_timestamp_age: 0\n")
    resp = await bot.push(body, content_type="text/xml")
    assert resp.status == 400 and not _errors(caplog)
    await bot.drain()
    assert fake.sent == []  # neither answered as an empty text nor deduplicated on a made-up key


async def test_a_json_number_too_large_for_a_float_reads_as_no_value(bot, caplog):
    push = {"ToUserName": ACCOUNT, "FromUserName": USER, "CreateTime": int(time.time()), "MsgType": "event",
            "Event": "LOCATION", "Latitude": 10 ** 400, "Longitude": 1, "Precision": 1}
    resp = await bot.push(json.dumps(push).encode(), content_type="application/json")
    assert resp.status == 200 and not _errors(caplog)


async def test_a_parser_failure_kefu_did_not_foresee_is_still_a_400_with_its_traceback(bot, caplog, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(bot.runtime.codec, "read", broken)
    resp = await bot.push(xml_push(text_fields("发货")))
    assert resp.status == 400
    assert [r.exc_info[0] for r in caplog.records if r.levelno >= logging.ERROR] == [RuntimeError]


@pytest.mark.parametrize("user", ["o\nFORGED", "oAbc\nFORGED line from a push\nxyz", "o\u2028x"])
async def test_an_openid_cannot_start_a_log_line_of_its_own(bot, caplog, user):
    caplog.set_level(logging.INFO, logger="bot.server")
    resp = await bot.push(json_push(text_fields("hello", user=user)), content_type="application/json")
    assert resp.status == 200
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("push ")]
    assert len(lines) == 1 and "\n" not in lines[0] and "\u2028" not in lines[0]


async def test_a_url_check_without_echostr_is_refused_with_a_log_line(bot, caplog):
    resp = await bot.client.get("/wechat", params=signed_query())
    assert resp.status == 400
    assert any("no echostr" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


async def test_a_body_that_stalls_is_answered_408_instead_of_holding_the_connection(bot, caplog, monkeypatch):
    import urllib.parse

    from bot import server

    monkeypatch.setattr(server, "BODY_SECONDS", 0.2)
    reader, writer = await asyncio.open_connection(bot.client.server.host, bot.client.server.port)
    try:
        writer.write(f"POST /wechat?{urllib.parse.urlencode(signed_query())} HTTP/1.1\r\nHost: x\r\n"
                     f"Content-Type: text/xml\r\nContent-Length: 1000\r\n\r\n<xml>".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readline(), 10)  # a bound for a broken build, not a wait
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 408")
    assert any("not complete after 0.2 s" in r.getMessage() for r in caplog.records)
