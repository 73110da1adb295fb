"""Safe mode (安全模式) and compat mode (兼容模式) through the real app. Pushes are encrypted by an
independent implementation of WeChat's scheme (wechatpy), and answers are decrypted by it."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET

import pytest
from wechatpy.crypto import PrpCrypto

from bot.protocol.signature import sign

from .fakewechat import APPID
from .helpers import TOKEN, USER, json_push, signed_query, text_fields, write_bot, xml_push
from .test_crypto import KAT_APPID, KAT_ENCRYPT, KAT_KEY, KAT_TOKEN

AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
SAFE = f"  encoding_aes_key: {AES_KEY}\n"
RULES = {"a.yaml": """
rules:
  - name: human
    when: {equals: [人工]}
    transfer: true
  - name: shipping
    when: {keywords: [快递]}
    reply: 快递两天内到。
"""}


def theirs() -> PrpCrypto:
    return PrpCrypto(base64.b64decode(AES_KEY + "="))


def their_encrypt(text: str, appid: str = APPID) -> str:
    encrypted = theirs().encrypt(text, appid)
    return encrypted.decode() if isinstance(encrypted, bytes) else encrypted


def their_decrypt(encrypted: str) -> str:
    text = theirs().decrypt(encrypted, APPID)
    return text.decode() if isinstance(text, bytes) else text


def encrypted_push(inner: bytes, fmt: str, *, extra: dict | None = None, token: str = TOKEN,
                   appid: str = APPID, bad_msg_signature: bool = False):
    encrypt = their_encrypt(inner.decode(), appid)
    query = signed_query(token=token, encrypt_type="aes")
    query["msg_signature"] = "0" * 40 if bad_msg_signature else sign(
        token, query["timestamp"], query["nonce"], encrypt)
    envelope = {"ToUserName": "gh_97417a04a28d", **(extra or {}), "Encrypt": encrypt}
    body = json_push(envelope) if fmt == "json" else xml_push(envelope)
    return body, query


@pytest.fixture
async def bot(make_bot):
    return await make_bot(RULES, wechat=SAFE)


@pytest.mark.parametrize("fmt", ["xml", "json"])
async def test_encrypted_push_gets_an_encrypted_transfer(bot, fmt):
    inner = (json_push if fmt == "json" else xml_push)(text_fields("人工"))
    body, query = encrypted_push(inner, fmt)
    resp = await bot.push(body, query=query)
    assert resp.status == 200
    text = await resp.text()
    if fmt == "json":
        envelope = json.loads(text)
        assert isinstance(envelope["TimeStamp"], int) and isinstance(envelope["Nonce"], str)
    else:
        envelope = {c.tag: c.text for c in ET.fromstring(text)}
    assert set(envelope) == {"Encrypt", "MsgSignature", "TimeStamp", "Nonce"}
    assert envelope["Nonce"] == query["nonce"]
    assert envelope["MsgSignature"] == sign(TOKEN, str(envelope["TimeStamp"]), envelope["Nonce"],
                                            envelope["Encrypt"])
    answer = their_decrypt(envelope["Encrypt"])
    fields = json.loads(answer) if fmt == "json" else {c.tag: c.text for c in ET.fromstring(answer)}
    assert fields["MsgType"] == "transfer_customer_service"
    assert fields["ToUserName"] == USER


@pytest.mark.parametrize("fmt", ["xml", "json"])
async def test_success_is_never_encrypted_and_replies_are_sent(bot, fake, fmt):
    inner = (json_push if fmt == "json" else xml_push)(text_fields("快递呢"))
    body, query = encrypted_push(inner, fmt)
    resp = await bot.push(body, query=query)
    assert await resp.text() == "success"
    assert (await fake.wait_sent(1))[0]["text"]["content"] == "快递两天内到。"


async def test_compat_mode_trusts_encrypt_over_plaintext_fields(bot, fake):
    body, query = encrypted_push(xml_push(text_fields("快递")), "xml",
                                 extra={"FromUserName": "o_fake", "MsgType": "text", "Content": "人工"})
    resp = await bot.push(body, query=query)
    assert await resp.text() == "success"  # the shipping rule, from Encrypt — not a transfer from Content
    assert (await fake.wait_sent(1))[0]["touser"] == USER


async def test_known_answer_push_through_the_app(tmp_path):
    """WeChat's own vector (an old timestamp, so no age check) through the whole app."""
    write_bot(tmp_path, RULES)
    (tmp_path / "bot.yaml").write_text(
        f"wechat:\n  appid: {KAT_APPID}\n  token: {KAT_TOKEN}\n  encoding_aes_key: {KAT_KEY}\n"
        "security:\n  max_timestamp_age: 0\nstore: memory://\n", encoding="utf-8")
    from aiohttp.test_utils import TestClient, TestServer

    from bot.config import load_settings
    from bot.server import create_app

    async with TestClient(TestServer(create_app(load_settings(tmp_path / "bot.yaml")))) as client:
        query = {"signature": "6c5c811b55cc85e0e1b54100749188c20beb3f5d", "timestamp": "1714112445",
                 "nonce": "415670741", "encrypt_type": "aes",
                 "msg_signature": "046e02f8204d34f8ba5fa3b1db94908f3df2e9b3"}
        body = json.dumps({"ToUserName": "gh_97417a04a28d", "Encrypt": KAT_ENCRYPT}).encode()
        resp = await client.post("/wechat", params=query, data=body)
        assert resp.status == 200
        assert await resp.text() == "success"  # an event (debug_demo): never transferred
        bad = await client.post("/wechat", params={**query, "msg_signature": "1" * 40}, data=body)
        assert bad.status == 403
        get = await client.get("/wechat", params={"signature": "f464b24fc39322e44b38aa78f5edd27bd1441696",
                                                 "timestamp": "1714036504", "nonce": "1514711492",
                                                 "echostr": "4375120948345356249"})
        assert await get.text() == "4375120948345356249"


@pytest.mark.parametrize("case,status", [
    ("bad msg_signature", 403), ("no msg_signature", 403), ("no Encrypt", 400), ("garbage Encrypt", 400),
    ("other appid", 403), ("bad url signature", 403),
])
async def test_refused_encrypted_pushes(bot, fake, case, status):
    body, query = encrypted_push(xml_push(text_fields("快递")), "xml",
                                 bad_msg_signature=case == "bad msg_signature",
                                 appid="wx_someone_else" if case == "other appid" else APPID)
    if case == "no msg_signature":
        del query["msg_signature"]
    elif case == "no Encrypt":
        body = xml_push({"ToUserName": "gh_1", "Other": "x"})
    elif case == "garbage Encrypt":
        body = xml_push({"ToUserName": "gh_1", "Encrypt": "bm90IGEgY2lwaGVydGV4dA=="})
        query["msg_signature"] = sign(TOKEN, query["timestamp"], query["nonce"], "bm90IGEgY2lwaGVydGV4dA==")
    elif case == "bad url signature":
        query["signature"] = "0" * 40
    resp = await bot.push(body, query=query)
    assert resp.status == status
    await bot.drain()
    assert fake.calls == []


async def test_get_verification_is_unchanged_in_safe_mode(bot):
    resp = await bot.client.get("/wechat", params=signed_query(echostr="12345"))
    assert await resp.text() == "12345"


async def test_require_encryption_refuses_plaintext(make_bot):
    bot = await make_bot(RULES, wechat=SAFE, config="security:\n  require_encryption: true\n")
    plain = await bot.push(xml_push(text_fields("人工")))
    assert plain.status == 403
    body, query = encrypted_push(xml_push(text_fields("人工")), "xml")
    assert (await bot.push(body, query=query)).status == 200


async def test_encrypted_push_without_a_key_configured_is_refused(make_bot):
    bot = await make_bot(RULES)
    body, query = encrypted_push(xml_push(text_fields("人工")), "xml")
    resp = await bot.push(body, query=query)
    assert resp.status == 400


ALL_TYPES = [
    {"MsgType": "text", "Content": "你好 & < 😀", "MsgId": 1},
    {"MsgType": "image", "PicUrl": "http://p/1.jpg", "MediaId": "m", "MsgId": 2},
    {"MsgType": "miniprogrampage", "Title": "t", "AppId": "wx1", "PagePath": "pages/a", "ThumbUrl": "u",
     "ThumbMediaId": "tm", "MsgId": 3},
    {"MsgType": "voice", "MediaId": "v", "Format": "amr", "Recognition": "语音文字", "MsgId": 4},
    {"MsgType": "video", "MediaId": "v", "ThumbMediaId": "t", "MsgId": 5},
    {"MsgType": "shortvideo", "MediaId": "v", "ThumbMediaId": "t", "MsgId": 6},
    {"MsgType": "location", "Location_X": "23.1", "Location_Y": "113.3", "Scale": "15", "Label": "广州",
     "MsgId": 7},
    {"MsgType": "link", "Title": "t", "Description": "d", "Url": "https://x", "MsgId": 8},
    {"MsgType": "event", "Event": "user_enter_tempsession", "SessionFrom": "sf"},
    {"MsgType": "event", "Event": "subscribe", "EventKey": "qrscene_9", "Ticket": "T"},
    {"MsgType": "event", "Event": "SCAN", "EventKey": "9", "Ticket": "T"},
    {"MsgType": "event", "Event": "LOCATION", "Latitude": "23.1", "Longitude": "113.3", "Precision": "50"},
    {"MsgType": "event", "Event": "CLICK", "EventKey": "k"},
    {"MsgType": "event", "Event": "kf_switch_session", "FromKfAccount": "a@x", "ToKfAccount": "b@x"},
    {"MsgType": "hologram", "Depth": "3", "MsgId": 10},
]


@pytest.mark.parametrize("fmt", ["xml", "json"])
@pytest.mark.parametrize("fields", ALL_TYPES, ids=lambda f: f.get("Event", f["MsgType"]))
async def test_every_message_type_round_trips_through_safe_mode(bot, fmt, fields):
    """Encrypted by wechatpy, decrypted and parsed by kefu: the same message as its plaintext push."""
    from bot.protocol.wire import parse_message

    full = {"ToUserName": "gh_97417a04a28d", "FromUserName": USER, "CreateTime": 1714112445, **fields}
    inner = (json_push if fmt == "json" else xml_push)(full)
    body, query = encrypted_push(inner, fmt)
    push = bot.runtime.codec.read(query, body, None)
    assert push.encrypted and push.fmt == fmt
    plain, _ = parse_message(inner)
    assert push.message == plain
    resp = await bot.push(body, query=query)
    assert resp.status == 200
