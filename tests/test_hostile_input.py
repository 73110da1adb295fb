"""Whatever a client sends, the answer is a 4xx or a valid answer: property tests on the pure pipeline, and
mutated pushes through the real app."""

from __future__ import annotations

import logging
import random
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.config import TIMEZONE, Secret
from bot.engine import SourceFile, compile_ruleset, decide
from bot.errors import ProtocolError
from bot.protocol.crypto import WeChatCrypto
from bot.protocol.push import PushCodec
from bot.protocol.signature import sign
from bot.protocol.wire import dump_fields, transfer_fields

from .helpers import TOKEN, event_fields, json_push, signed_query, text_fields, xml_push

KEY, APPID = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "wx0123456789abcdef"
CRYPTO = WeChatCrypto(KEY, APPID)
CODEC = PushCodec(Secret(TOKEN), CRYPTO, max_timestamp_age=0)
RULESET = compile_ruleset([SourceFile("rules/a.yaml", """
rules:
  - name: kw
    when: {keywords: [发货]}
    reply: "{{ message.content }} {{ match.keyword }}"
  - name: re
    when: {regex: '(?P<n>\\d+)'}
    reply: "{{ match.n }}"
  - name: ev
    when: {event: user_enter_tempsession}
    reply: "{{ message.session_from }}"
""")])
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=TIMEZONE)
VALID = [xml_push(text_fields("发货 123")), json_push(text_fields("订单 42")),
         xml_push(event_fields("user_enter_tempsession", SessionFrom="s")),
         json_push(event_fields("subscribe", EventKey="qrscene_1"))]
QUERY_KEYS = ["signature", "timestamp", "nonce", "encrypt_type", "msg_signature", "openid", "echostr"]
CONTENT_TYPES = st.sampled_from([None, "text/xml", "application/json", "text/plain", "application/xml",
                                 "multipart/form-data", ""])


def run(query, body, content_type):
    """The whole pure pipeline; only ProtocolError may come out."""
    try:
        CODEC.verify_query(query)
        push = CODEC.read(query, body, content_type)
    except ProtocolError as exc:
        assert 400 <= exc.status < 500
        return None
    decision = decide(RULESET, push.message, NOW)
    CODEC.seal(push, transfer_fields(push.message, 1))
    return decision


def signed(**extra):
    query = {"timestamp": "1714112445", "nonce": "415670741", **extra}
    query["signature"] = sign(TOKEN, query["timestamp"], query["nonce"])
    return query


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(query=st.dictionaries(st.sampled_from(QUERY_KEYS), st.text(max_size=50)), body=st.binary(max_size=300),
       content_type=CONTENT_TYPES)
def test_random_queries_and_bodies(query, body, content_type):
    run(query, body, content_type)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=600), content_type=CONTENT_TYPES)
def test_random_bodies_past_the_signature(body, content_type):
    run(signed(), body, content_type)


def mutate(data: bytes, rnd: random.Random, edits: int) -> bytes:
    buf = bytearray(data)
    for _ in range(edits):
        op = rnd.randrange(4)
        pos = rnd.randrange(len(buf) + 1)
        if op == 0 and buf:
            del buf[min(pos, len(buf) - 1)]
        elif op == 1:
            buf.insert(pos, rnd.randrange(256))
        elif op == 2 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rnd.randrange(8)
        else:
            chunk = rnd.choice([b"<", b">", b"]]>", b"&", b"&amp;", b"{", b"}", b'"', b"\\u0000",
                                b"<!DOCTYPE x>", b"<xml>", b"</xml>", b"\xff", b"\xe4\xbd", b"9" * 30,
                                b"[" * 50])
            buf[pos:pos] = chunk
    return bytes(buf)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(), which=st.integers(0, len(VALID) - 1), edits=st.integers(1, 8),
       content_type=CONTENT_TYPES)
def test_mutated_valid_pushes(seed, which, edits, content_type):
    run(signed(), mutate(VALID[which], random.Random(seed), edits), content_type)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(inner=st.binary(max_size=400), fmt=st.sampled_from(["xml", "json"]), garbage=st.booleans())
def test_random_envelopes_and_inner_messages(inner, fmt, garbage):
    encrypt = inner.decode("latin-1") if garbage else CRYPTO.encrypt(inner.decode("utf-8", "replace"))
    query = signed(encrypt_type="aes")
    query["msg_signature"] = sign(TOKEN, query["timestamp"], query["nonce"], encrypt)
    run(query, dump_fields({"ToUserName": "gh", "Encrypt": encrypt}, fmt), None)


@settings(max_examples=200)
@given(seed=st.integers(), which=st.integers(0, len(VALID) - 1))
def test_mutated_encrypted_inner_messages(seed, which):
    inner = mutate(VALID[which], random.Random(seed), 4).decode("utf-8", "replace")
    encrypt = CRYPTO.encrypt(inner)
    query = signed(encrypt_type="aes")
    query["msg_signature"] = sign(TOKEN, query["timestamp"], query["nonce"], encrypt)
    run(query, xml_push({"ToUserName": "gh", "Encrypt": encrypt}), None)


def test_valid_pushes_really_get_through_the_pipeline():
    """The property tests above would pass trivially if everything were refused."""
    decisions = [run(signed(), body, None) for body in VALID]
    assert [d.rule for d in decisions] == ["kw", "re", "ev", None]


RULES = {"a.yaml": "rules:\n  - name: kw\n    when: {keywords: [发货]}\n    reply: '{{ message.content }}'\n"}


async def test_mutated_pushes_through_the_app_never_500(make_bot, caplog):
    caplog.set_level(logging.WARNING)
    bot = await make_bot(RULES)
    rnd = random.Random(20261128)
    statuses: dict[int, int] = {}
    for i in range(300):
        base = VALID[i % len(VALID)]
        body = mutate(base, rnd, rnd.randrange(1, 6))
        query = signed_query(nonce=str(i))
        if i % 7 == 0:  # hostile query strings too
            query = {k: mutate(v.encode(), rnd, 2).decode("utf-8", "replace") for k, v in query.items()}
        ctype = rnd.choice([None, "text/xml", "application/json", "text/plain"])
        resp = await bot.push(body, query=query, content_type=ctype)
        statuses[resp.status] = statuses.get(resp.status, 0) + 1
    await bot.drain()
    assert set(statuses) <= {200, 400, 403}, statuses
    assert statuses.get(400, 0) > 0 and statuses.get(200, 0) > 0  # both paths were exercised
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "an error was logged"


@pytest.mark.parametrize("body", [
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;"><!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;">]>'
    b'<xml><Content>&lol4;</Content></xml>',
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><a>&e;</a></xml>',
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
])
async def test_hostile_bodies_are_refused_with_400(make_bot, body):
    bot = await make_bot(RULES)
    resp = await bot.push(body)
    assert resp.status == 400
