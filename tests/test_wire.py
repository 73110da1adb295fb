"""bot.protocol.wire: bytes ⇄ fields ⇄ Message in XML and JSON, format detection, passive answers."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.errors import MalformedPush, ProtocolError
from bot.messages import (
    EnterSessionEvent,
    EventMessage,
    ImageMessage,
    KfSessionEvent,
    LinkMessage,
    LocationEvent,
    LocationMessage,
    MenuEvent,
    Message,
    MiniProgramPageMessage,
    SubscribeEvent,
    TextMessage,
    UnknownMessage,
    VideoMessage,
    VoiceMessage,
)
from bot.protocol.wire import (
    detect_format,
    dump_fields,
    message_from_fields,
    parse_fields,
    parse_message,
    transfer_answer,
)

ACCOUNT = "gh_97417a04a28d"
USER = "o9AgO5Kd5ggOC-bXrbNODIiE3bGY"
TS = 1714112445


def to_xml(fields: dict[str, Any]) -> bytes:
    """A push as WeChat writes it: text in CDATA, numbers bare, nested elements for nested fields."""

    def element(key: str, value: Any) -> str:
        if isinstance(value, dict):
            return f"<{key}>" + "".join(element(k, v) for k, v in value.items()) + f"</{key}>"
        if isinstance(value, int | float):
            return f"<{key}>{value}</{key}>"
        return f"<{key}><![CDATA[{value}]]></{key}>"

    return ("<xml>\n" + "\n".join(element(k, v) for k, v in fields.items()) + "\n</xml>").encode("utf-8")


def to_json(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, ensure_ascii=False).encode("utf-8")


def as_text(value: Any) -> Any:
    """What XML makes of a value: every leaf becomes text."""
    if isinstance(value, dict):
        return {k: as_text(v) for k, v in value.items()}
    return str(value)


def push(msg_type: str, **extra: Any) -> dict[str, Any]:
    return {"ToUserName": ACCOUNT, "FromUserName": USER, "CreateTime": TS, "MsgType": msg_type, **extra}


def event(name: str, **extra: Any) -> dict[str, Any]:
    return push("event", Event=name, **extra)


# (id, fields, class, expected attributes)
CASES: list[tuple[str, dict[str, Any], type[Message], dict[str, Any]]] = [
    # ---- mini program ----
    ("mp-text", push("text", Content="你好，发货了吗", MsgId=24599432184384561),
     TextMessage, {"content": "你好，发货了吗", "msg_id": "24599432184384561", "menu_id": None,
                   "text": "你好，发货了吗", "is_event": False}),
    ("mp-image", push("image", PicUrl="http://mmbiz.qpic.cn/x.jpg", MediaId="media_1",
                      MsgId=24599432184384562),
     ImageMessage, {"pic_url": "http://mmbiz.qpic.cn/x.jpg", "media_id": "media_1",
                    "msg_id": "24599432184384562", "text": None}),
    ("mp-miniprogrampage", push("miniprogrampage", Title="商品详情", AppId="wxabc",
                                PagePath="pages/item?id=1", ThumbUrl="http://x/t.jpg",
                                ThumbMediaId="thumb_1", MsgId=24599432184384563),
     MiniProgramPageMessage, {"title": "商品详情", "app_id": "wxabc", "page_path": "pages/item?id=1",
                              "thumb_url": "http://x/t.jpg", "thumb_media_id": "thumb_1",
                              "msg_id": "24599432184384563", "text": None}),
    ("mp-enter-session", event("user_enter_tempsession", SessionFrom="button-home"),
     EnterSessionEvent, {"event": "user_enter_tempsession", "session_from": "button-home", "msg_id": None,
                         "is_event": True, "text": None, "event_key": None}),
    # ---- official account: messages ----
    ("oa-voice-recognition", push("voice", MediaId="voice_1", Format="amr", Recognition="发货了吗",
                                  MsgId=1234567890123456),
     VoiceMessage, {"media_id": "voice_1", "format": "amr", "recognition": "发货了吗", "text": "发货了吗",
                    "msg_id": "1234567890123456"}),
    ("oa-voice", push("voice", MediaId="voice_2", Format="speex", MsgId=1234567890123457),
     VoiceMessage, {"media_id": "voice_2", "format": "speex", "recognition": None, "text": None}),
    ("oa-video", push("video", MediaId="video_1", ThumbMediaId="thumb_v", MsgId=1234567890123458),
     VideoMessage, {"msg_type": "video", "media_id": "video_1", "thumb_media_id": "thumb_v"}),
    ("oa-shortvideo", push("shortvideo", MediaId="sv_1", ThumbMediaId="thumb_sv", MsgId=1234567890123459),
     VideoMessage, {"msg_type": "shortvideo", "media_id": "sv_1", "thumb_media_id": "thumb_sv"}),
    ("oa-location", push("location", Location_X="23.134521", Location_Y="113.358803", Scale=20,
                         Label="位置信息", MsgId=1234567890123460),
     LocationMessage, {"latitude": 23.134521, "longitude": 113.358803, "scale": 20, "label": "位置信息"}),
    ("oa-link", push("link", Title="公众平台官网链接", Description="描述", Url="https://mp.weixin.qq.com/x",
                     MsgId=1234567890123461),
     LinkMessage, {"title": "公众平台官网链接", "description": "描述", "url": "https://mp.weixin.qq.com/x"}),
    ("oa-text-menu", push("text", Content="满意", bizmsgmenuid="101", MsgId=1234567890123462),
     TextMessage, {"content": "满意", "menu_id": "101", "text": "满意"}),
    # ---- official account: events ----
    ("oa-subscribe-qrscene", event("subscribe", EventKey="qrscene_123123", Ticket="TICKET_1"),
     SubscribeEvent, {"event": "subscribe", "event_key": "qrscene_123123", "scene": "123123",
                      "ticket": "TICKET_1", "msg_id": None}),
    ("oa-subscribe-plain", event("subscribe"),
     SubscribeEvent, {"event": "subscribe", "event_key": None, "scene": None, "ticket": None}),
    ("oa-subscribe-other-key", event("subscribe", EventKey="last_trade_no_4200"),
     SubscribeEvent, {"event": "subscribe", "event_key": "last_trade_no_4200", "scene": None}),
    ("oa-unsubscribe", event("unsubscribe", EventKey=""),
     EventMessage, {"event": "unsubscribe", "is_event": True, "msg_id": None}),
    ("oa-scan", event("SCAN", EventKey="123123", Ticket="TICKET_2"),
     SubscribeEvent, {"event": "scan", "event_key": "123123", "scene": "123123", "ticket": "TICKET_2"}),
    ("oa-location-event", event("LOCATION", Latitude="23.137466", Longitude="113.352425",
                                Precision="119.385040"),
     LocationEvent, {"event": "location", "latitude": 23.137466, "longitude": 113.352425,
                     "precision": 119.38504}),
    ("oa-click", event("CLICK", EventKey="V1001_TODAY_MUSIC"),
     MenuEvent, {"event": "click", "event_key": "V1001_TODAY_MUSIC", "menu_id": None}),
    ("oa-view", event("VIEW", EventKey="http://www.qq.com/", MenuId="208379533"),
     MenuEvent, {"event": "view", "event_key": "http://www.qq.com/", "menu_id": "208379533"}),
    ("oa-scancode-push", event("scancode_push", EventKey="6",
                               ScanCodeInfo={"ScanType": "qrcode", "ScanResult": "1"}),
     MenuEvent, {"event": "scancode_push", "event_key": "6"}),
    ("oa-templatesendjobfinish", event("TEMPLATESENDJOBFINISH", MsgID=200163836, Status="success"),
     EventMessage, {"event": "templatesendjobfinish", "msg_id": None}),
    ("oa-kf-create", event("kf_create_session", KfAccount="test1@test"),
     KfSessionEvent, {"event": "kf_create_session", "kf_account": "test1@test"}),
    ("oa-kf-close", event("kf_close_session", KfAccount="test1@test"),
     KfSessionEvent, {"event": "kf_close_session", "kf_account": "test1@test"}),
    ("oa-kf-switch", event("kf_switch_session", FromKfAccount="test1@test", ToKfAccount="test2@test"),
     KfSessionEvent, {"event": "kf_switch_session", "from_kf_account": "test1@test",
                      "to_kf_account": "test2@test", "kf_account": None}),
]


@pytest.mark.parametrize("fmt", ["xml", "json"])
@pytest.mark.parametrize(("fields", "cls", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_message_type(fields, cls, expected, fmt):
    body = to_xml(fields) if fmt == "xml" else to_json(fields)
    message, got_fmt = parse_message(body)
    assert got_fmt == fmt
    assert type(message) is cls
    assert message.to_user == ACCOUNT
    assert message.from_user == USER
    assert message.create_time == TS
    assert message.msg_type == fields["MsgType"]
    for attr, value in expected.items():
        assert getattr(message, attr) == value, attr
    # every field is kept as received
    assert dict(message.fields) == (as_text(fields) if fmt == "xml" else fields)


def test_nested_fields_are_kept():
    fields = event("scancode_push", EventKey="6", ScanCodeInfo={"ScanType": "qrcode", "ScanResult": "1"})
    for body in (to_xml(fields), to_json(fields)):
        message, _ = parse_message(body)
        assert message.fields["ScanCodeInfo"] == {"ScanType": "qrcode", "ScanResult": "1"}


def test_templatesendjobfinish_keeps_its_msgid_in_fields():
    message, _ = parse_message(to_json(event("TEMPLATESENDJOBFINISH", MsgID=200163836, Status="success")))
    assert message.msg_id is None  # not a push id
    assert message.fields["MsgID"] == 200163836
    assert message.fields["Status"] == "success"


@pytest.mark.parametrize(
    ("name", "cls", "lower"),
    [
        ("SCAN", SubscribeEvent, "scan"),
        ("Scan", SubscribeEvent, "scan"),
        ("LOCATION", LocationEvent, "location"),
        ("Location", LocationEvent, "location"),
        ("Click", MenuEvent, "click"),
        ("View", MenuEvent, "view"),
        ("SUBSCRIBE", SubscribeEvent, "subscribe"),
        ("User_Enter_TempSession", EnterSessionEvent, "user_enter_tempsession"),
        ("KF_CREATE_SESSION", KfSessionEvent, "kf_create_session"),
        ("TemplateSendJobFinish", EventMessage, "templatesendjobfinish"),
        ("  click  ", MenuEvent, "click"),
    ],
)
def test_event_names_become_lowercase(name, cls, lower):
    message = message_from_fields(event(name, EventKey="k"))
    assert type(message) is cls
    assert message.event == lower
    assert message.fields["Event"] == name  # the raw field is untouched


@pytest.mark.parametrize(("raw", "cls"),
                         [("TEXT", TextMessage), ("Image", ImageMessage), ("EVENT", EventMessage)])
def test_msg_type_becomes_lowercase(raw, cls):
    message = message_from_fields(push(raw, Content="x", Event="whatever"))
    assert type(message) is cls
    assert message.msg_type == raw.lower()


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_unknown_msg_type_is_kept(fmt):
    fields = push("hologram", Depth="3", Colour="蓝", MsgId=987654321)
    message, _ = parse_message(to_xml(fields) if fmt == "xml" else to_json(fields))
    assert type(message) is UnknownMessage
    assert message.msg_type == "hologram"
    assert message.msg_id == "987654321"
    assert message.fields["Depth"] == "3"
    assert message.fields["Colour"] == "蓝"
    assert set(message.fields) == set(fields)
    assert message.text is None
    assert message.is_event is False


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_unknown_event_is_kept(fmt):
    fields = event("Debug_Demo", debug_str="hello world", EventKey="k1")
    message, _ = parse_message(to_xml(fields) if fmt == "xml" else to_json(fields))
    assert type(message) is EventMessage
    assert message.event == "debug_demo"
    assert message.event_key == "k1"
    assert message.fields["debug_str"] == "hello world"
    assert set(message.fields) == set(fields)
    assert message.is_event


def test_decrypted_vector_payload_parses():
    """The plaintext of the known-answer vector in wechat-protocol.md §3."""
    body = (b'{"ToUserName":"gh_97417a04a28d","FromUserName":"o9AgO5Kd5ggOC-bXrbNODIiE3bGY",'
            b'"CreateTime":1714112445,"MsgType":"event","Event":"debug_demo","debug_str":"hello world"}')
    message, fmt = parse_message(body, "application/json")
    assert fmt == "json"
    assert type(message) is EventMessage
    assert (message.event, message.create_time, message.from_user) == ("debug_demo", TS, USER)


# ---- JSON number quirks ----------------------------------------------------------------------------


@pytest.mark.parametrize("msg_id", [2**53 + 1, 2**63 - 1, 24599432184384561123, 12345678901234567890123])
def test_big_json_msgid_stays_exact(msg_id):
    body = b'{"ToUserName":"gh_x","FromUserName":"u","CreateTime":1,"MsgType":"text","Content":"x","MsgId":' \
        + str(msg_id).encode() + b"}"
    message, _ = parse_message(body)
    assert message.msg_id == str(msg_id)
    assert message.dedupe_key == f"msg:{msg_id}"


def test_msgid_as_json_string():
    message, _ = parse_message(to_json(push("text", Content="x", MsgId="9007199254740993")))
    assert message.msg_id == "9007199254740993"


@pytest.mark.parametrize("create_time", [TS, str(TS), f" {TS} "])
@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_create_time_as_string_or_number(create_time, fmt):
    fields = push("text", Content="x", CreateTime=create_time)
    message, _ = parse_message(to_xml(fields) if fmt == "xml" else to_json(fields))
    assert message.create_time == TS
    assert isinstance(message.create_time, int)


def test_dedupe_keys():
    text = message_from_fields(push("text", Content="x", MsgId=42))
    enter = message_from_fields(event("user_enter_tempsession", SessionFrom="s"))
    click = message_from_fields(event("CLICK", EventKey="k"))
    assert text.dedupe_key == "msg:42"
    assert enter.dedupe_key == f"event:{USER}:{TS}:user_enter_tempsession:"
    assert click.dedupe_key == f"event:{USER}:{TS}:click:k"


# ---- format detection ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b'{"a":1}', "application/json", "json"),
        (b'{"a":1}', "application/json; charset=utf-8", "json"),
        (b'{"a":1}', "APPLICATION/JSON", "json"),
        (b"<xml/>", "text/xml", "xml"),
        (b"<xml/>", "application/xml; charset=UTF-8", "xml"),
        (b"<xml/>", "application/json", "json"),  # the Content-Type wins over the body
        (b'{"a":1}', "text/xml", "xml"),
        (b'{"a":1}', None, "json"),
        (b"[1]", None, "json"),
        (b"<xml/>", None, "xml"),
        (b"<xml/>", "", "xml"),
        (b"<xml/>", "text/plain", "xml"),
        (b'{"a":1}', "application/octet-stream", "json"),
        (b'  \r\n\t{"a":1}', None, "json"),
        (b"\n\n   <xml/>", None, "xml"),
        (b'\xef\xbb\xbf{"a":1}', None, "json"),
        (b"\xef\xbb\xbf<xml/>", None, "xml"),
        (b'\xef\xbb\xbf \n {"a":1}', None, "json"),
    ],
)
def test_detect_format(body, content_type, expected):
    assert detect_format(body, content_type) == expected


@pytest.mark.parametrize("body", [b"", b"   \n", b"hello", b"success", b"\xef\xbb\xbf", b"42", b"\x00<xml/>"])
def test_detect_format_refuses_neither(body):
    with pytest.raises(MalformedPush):
        detect_format(body, None)


@pytest.mark.parametrize(
    "body",
    [
        b"\xef\xbb\xbf" + to_xml(push("text", Content="hi")),
        b"\r\n  " + to_xml(push("text", Content="hi")),
        b"\xef\xbb\xbf" + to_json(push("text", Content="hi")),
        b" \n\t" + to_json(push("text", Content="hi")),
    ],
)
def test_leading_whitespace_and_bom_parse(body):
    message, _ = parse_message(body)
    assert isinstance(message, TextMessage)
    assert message.content == "hi"


def test_xml_push_with_declaration_and_plain_text():
    body = (b'<?xml version="1.0" encoding="utf-8"?>\n<xml><ToUserName>gh_1</ToUserName>'
            b"<FromUserName>u1</FromUserName><CreateTime>5</CreateTime><MsgType>text</MsgType>"
            b"<Content>a &amp; b &lt;c&gt;</Content><MsgId>7</MsgId></xml>")
    message, fmt = parse_message(body, "text/xml")
    assert fmt == "xml"
    assert message.content == "a & b <c>"
    assert (message.to_user, message.from_user, message.create_time, message.msg_id) == ("gh_1", "u1", 5, "7")


# ---- malformed pushes ------------------------------------------------------------------------------

BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    b"<xml><ToUserName>gh</ToUserName><FromUserName>&lol3;</FromUserName><MsgType>text</MsgType>"
    b"<Content>&lol3;</Content></xml>"
)
XXE = (
    b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    b"<xml><FromUserName>u</FromUserName><MsgType>text</MsgType><Content>&xxe;</Content></xml>"
)
DTD_ONLY = (
    b'<?xml version="1.0"?><!DOCTYPE xml SYSTEM "http://example.invalid/x.dtd">'
    b"<xml><FromUserName>u</FromUserName><MsgType>text</MsgType></xml>"
)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<xml><FromUserName>u</FromUserName><MsgType>text</MsgType>", None),  # unclosed
        (b"<xml><FromUserName>u</FromUser></xml>", None),
        (b"<xml>just text</xml>", None),
        (b"<xml/>", None),
        (b"<xml><Content>&undefined;</Content></xml>", None),
        (b"", "text/xml"),
        (BILLION_LAUGHS, None),
        (BILLION_LAUGHS, "text/xml"),
        (XXE, None),
        (DTD_ONLY, None),
        (b"[1, 2, 3]", None),
        (b'"text"', "application/json"),
        (b"42", "application/json"),
        (b"null", "application/json"),
        (b"{not json", None),
        (b'{"FromUserName": "u", "MsgType": "text"', None),
        (b'{"FromUserName": "\xff\xfe", "MsgType": "text"}', None),
        (b'{"a":' * 40 + b"1" + b"}" * 40, None),
        (b'{"a":' + b"[" * 100 + b"]" * 100 + b"}", None),
        (b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", None),
        (b'{"ToUserName":"gh","MsgType":"text","Content":"x"}', None),  # no FromUserName
        (b'{"FromUserName":"","MsgType":"text"}', None),
        (b'{"FromUserName":null,"MsgType":"text"}', None),
        (b'{"FromUserName":{"nested":1},"MsgType":"text"}', None),
        (b'{"ToUserName":"gh","FromUserName":"u","Content":"x"}', None),  # no MsgType
        (b'{"FromUserName":"u","MsgType":"  "}', None),
        (b"<xml><ToUserName>gh</ToUserName><MsgType>text</MsgType></xml>", None),
        (b"<xml><FromUserName>u</FromUserName><Content>x</Content></xml>", None),
        (b"<xml><FromUserName><![CDATA[]]></FromUserName><MsgType>text</MsgType></xml>", None),
    ],
)
def test_malformed_pushes(body, content_type):
    with pytest.raises(MalformedPush) as info:
        parse_message(body, content_type)
    assert isinstance(info.value, ProtocolError)
    assert info.value.status == 400


def test_moderately_nested_json_is_fine():
    fields = push("text", Content="x", Extra={"a": {"b": {"c": [1, [2, [3]]]}}})
    message, _ = parse_message(to_json(fields))
    assert message.fields["Extra"]["a"]["b"]["c"] == [1, [2, [3]]]


@pytest.mark.parametrize("fields", [{"MsgType": "text"}, {"FromUserName": "u"}, {}])
def test_message_from_fields_requires_sender_and_type(fields):
    with pytest.raises(MalformedPush):
        message_from_fields(fields)


# ---- passive answers -------------------------------------------------------------------------------


@pytest.fixture
def text_message() -> Message:
    return message_from_fields(push("text", Content="转人工", MsgId=1))


def test_transfer_answer_xml(text_message):
    body = transfer_answer(text_message, "xml", 1714112500)
    assert body.startswith(b"<xml>")
    assert b"<?xml" not in body
    assert parse_fields(body, "xml") == {
        "ToUserName": USER,
        "FromUserName": ACCOUNT,
        "CreateTime": "1714112500",
        "MsgType": "transfer_customer_service",
    }


def test_transfer_answer_json(text_message):
    body = transfer_answer(text_message, "json", 1714112500)
    assert json.loads(body) == {
        "ToUserName": USER,
        "FromUserName": ACCOUNT,
        "CreateTime": 1714112500,
        "MsgType": "transfer_customer_service",
    }


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_transfer_answer_with_kf_account(text_message, fmt):
    body = transfer_answer(text_message, fmt, 1714112500, kf_account="test1@test")
    fields = parse_fields(body, fmt)
    assert fields["MsgType"] == "transfer_customer_service"
    assert fields["TransInfo"] == {"KfAccount": "test1@test"}
    assert fields["ToUserName"] == USER


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_transfer_answer_is_built_by_a_serializer(fmt):
    forged = message_from_fields(push("text", Content="x", FromUserName="u]]><evil>&amp;",
                                      ToUserName="gh_<x>&"))
    fields = parse_fields(transfer_answer(forged, fmt, 1), fmt)
    assert fields["ToUserName"] == "u]]><evil>&amp;"
    assert fields["FromUserName"] == "gh_<x>&"
    assert set(fields) == {"ToUserName", "FromUserName", "CreateTime", "MsgType"}


ROUND_TRIP_TEXTS = [
    "plain",
    "a]]>b",
    "]]>]]><![CDATA[",
    "<b>bold</b> & <i>",
    "AT&T &amp; &lt;",
    "😀 表情 emoji 👍🏽",
    "quotes \" and ' and >",
    '<a href="https://x" data-miniprogram-appid="wx1" data-miniprogram-path="p">点我</a>',
    "多行\n文本\n",
    "",
]


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_text_round_trips_through_dump_and_parse(text, fmt):
    fields = {"ToUserName": USER, "FromUserName": ACCOUNT, "CreateTime": 1, "MsgType": "text",
              "Content": text}
    back = parse_fields(dump_fields(fields, fmt), fmt)
    assert back["Content"] == text
    assert back["MsgType"] == "text"


def test_json_dump_is_utf8_not_escaped():
    body = dump_fields({"Content": "你好😀"}, "json")
    assert "你好😀".encode() in body
    assert b"\\u" not in body


def test_dumped_reply_parses_as_a_message():
    fields = push("text", Content="a]]>b <&> 😀", MsgId=3)
    message, fmt = parse_message(dump_fields(fields, "xml"))
    assert fmt == "xml"
    assert message.content == "a]]>b <&> 😀"


# ---- frozen messages -------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "attr"), [
    (push("text", Content="x", MsgId=1), "content"),
    (push("text", Content="x", MsgId=1), "from_user"),
    (push("image", MediaId="m", MsgId=1), "media_id"),
    (event("subscribe", EventKey="qrscene_1"), "scene"),
    (event("CLICK", EventKey="k"), "event"),
])
def test_messages_are_frozen(fields, attr):
    message = message_from_fields(fields)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(message, attr, "changed")
    with pytest.raises(TypeError):
        message.fields["MsgType"] = "changed"  # type: ignore[index]
    assert message.fields["MsgType"] == fields["MsgType"]


def test_message_fields_are_a_copy():
    fields = push("text", Content="x", MsgId=1)
    message = message_from_fields(fields)
    fields["Content"] = "changed later"
    assert message.fields["Content"] == "x"
    assert message.content == "x"


_FIELD_TEXT = st.one_of(st.integers(-10**12, 10**12),
                        st.text(alphabet=st.sampled_from(list("ab 快递&<>\"'\r\n\t]]>\x00\x1f\ufffe\U0001f600")),
                                max_size=10))
_FIELD_NAMES = st.sampled_from(["ToUserName", "Content", "MsgType", "TransInfo", "KfAccount", "Item"])


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_FIELD_NAMES, st.one_of(_FIELD_TEXT, st.dictionaries(_FIELD_NAMES, _FIELD_TEXT,
                                                                             max_size=3)), max_size=5))
def test_answers_are_serialised_exactly_as_elementtree_would(fields):
    import xml.etree.ElementTree as ET

    from bot.protocol.wire import _NOT_XML, dump_fields

    def fill(parent, values):
        for key, value in values.items():
            child = ET.SubElement(parent, key)
            if isinstance(value, dict):
                fill(child, value)
            else:
                child.text = _NOT_XML.sub("", str(value))

    root = ET.Element("xml")
    fill(root, fields)
    expected = ET.tostring(root, encoding="utf-8", xml_declaration=False).replace(b"\r", b"&#13;")
    assert dump_fields(fields, "xml") == expected


_TEXTISH = st.one_of(st.none(), st.text(max_size=8), st.sampled_from(["", " 12", "12", "١٢", "0", "1714112445"]),
                     st.integers(-5, 2**60), st.booleans(), st.just({"a": "b"}))


@settings(max_examples=400, deadline=None)
@given(st.fixed_dictionaries({"MsgType": st.sampled_from(["text", "Text", " text"])},
                             optional={"FromUserName": _TEXTISH, "ToUserName": _TEXTISH, "Content": _TEXTISH,
                                       "MsgId": _TEXTISH, "MsgID": _TEXTISH, "CreateTime": _TEXTISH,
                                       "bizmsgmenuid": _TEXTISH}))
def test_the_plain_text_fast_path_builds_what_the_general_path_builds(fields):
    """Some of these take the fast path (test_a_text_push_takes_the_fast_path shows one does)."""
    from bot.protocol.wire import _any_message, _plain_text

    quick = _plain_text(fields) if fields["MsgType"] == "text" else None
    try:
        general = _any_message(fields)
    except MalformedPush:
        assert quick is None
        return
    assert quick is None or quick == general
    assert message_from_fields(fields) == general


def test_a_text_push_takes_the_fast_path():
    from bot.protocol.wire import _plain_text

    from .helpers import text_fields, xml_push

    fields = parse_fields(xml_push(text_fields("你好")), "xml")
    assert _plain_text(fields) == message_from_fields(fields) and _plain_text(fields) is not None
    as_json = {**text_fields("你好"), "MsgId": 24000000000000000001}  # JSON numbers, one past 2**64
    message = _plain_text(parse_fields(json.dumps(as_json).encode(), "json"))
    assert message is not None and message.msg_id == "24000000000000000001"
    assert message == message_from_fields(parse_fields(json.dumps(as_json).encode(), "json"))
