"""Bytes ⇄ fields ⇄ Message, and the passive answers, in XML and JSON.

Inbound XML is read by xmlfields.py (expat, no DTDs, no entities). Outbound XML is built by ElementTree's
serializer, never by string formatting, so any text round-trips.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

from ..errors import MalformedPush
from ..messages import (
    EnterSessionEvent,
    EventMessage,
    ImageMessage,
    ImageReply,
    KfSessionEvent,
    LinkMessage,
    LocationEvent,
    LocationMessage,
    MenuEvent,
    Message,
    MiniProgramPageMessage,
    MusicReply,
    NewsReply,
    Reply,
    SubscribeEvent,
    TextMessage,
    TextReply,
    UnknownMessage,
    VideoMessage,
    VideoReply,
    VoiceMessage,
    VoiceReply,
)
from .xmlfields import XmlRefused, parse_xml_fields

Format = Literal["xml", "json"]
MAX_DEPTH = 32  # WeChat's deepest push (ScanCodeInfo, SendPicsInfo/PicList/item) is 4 levels
_SURROGATE = re.compile("[\ud800-\udfff]")


def detect_format(body: bytes, content_type: str | None) -> Format:
    """XML or JSON: by Content-Type when it says, else by the first non-blank byte."""
    ct = (content_type or "").lower()
    if "json" in ct:
        return "json"
    if "xml" in ct:
        return "xml"
    head = body.lstrip(b" \t\r\n\xef\xbb\xbf")[:1]
    if head in (b"{", b"["):
        return "json"
    if head == b"<":
        return "xml"
    raise MalformedPush("body is neither XML nor JSON")


def parse_fields(body: bytes, fmt: Format) -> dict[str, Any]:
    """The push's top-level fields. Nested XML elements and JSON objects stay nested."""
    return _parse_json(body) if fmt == "json" else _parse_xml(body)


def _parse_xml(body: bytes) -> dict[str, Any]:
    try:
        fields = parse_xml_fields(body, MAX_DEPTH)
    except XmlRefused as exc:
        raise MalformedPush(f"XML refused: {exc}") from None
    if not isinstance(fields, dict):
        raise MalformedPush("XML root has no fields")
    return fields


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise MalformedPush(f"invalid JSON: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise MalformedPush("JSON push must be an object")
    _check_json(data)
    return data


def _check_json(data: Any) -> None:
    """Bounded nesting, and text that is valid Unicode: JSON's \\ud800 escapes decode to lone surrogates,
    which no UTF-8 answer, log line or API call could carry."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise MalformedPush("JSON text holds an unpaired surrogate (\\ud800-\\udfff)")
        elif isinstance(value, dict | list):
            if depth >= MAX_DEPTH:
                raise MalformedPush("JSON nested too deeply")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and _SURROGATE.search(key):
                    raise MalformedPush("JSON key holds an unpaired surrogate")
                stack.append((item, depth + 1))


# ---- fields → Message --------------------------------------------------------------------------------


def _text(fields: Mapping[str, Any], key: str) -> str | None:
    """A field kefu reads as text. One that repeats or holds elements (XML) or is an object or a list (JSON)
    is not a push WeChat sends: reading it as missing would give a text without content, or a dedupe key
    without its MsgId."""
    value = fields.get(key)
    if value is None:
        return None
    if isinstance(value, dict | list):
        raise MalformedPush(f"{key} is not a plain value (repeated, or holding elements)")
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)  # JSON numbers (MsgId can exceed 2**53: json keeps ints exact)


def _float(fields: Mapping[str, Any], key: str) -> float | None:
    try:
        return float(fields[key])
    except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: a JSON integer of 400 digits
        return None


MAX_DIGITS = 20  # an int64 has 19; Python's int() refuses over 4,300 (ValueError) and is slow long before
_INTEGER = re.compile(rf"[+-]?[0-9]{{1,{MAX_DIGITS}}}")  # not int()'s "1_000", "١٢" or 5,000 digits


def _int(fields: Mapping[str, Any], key: str) -> int | None:
    text = _text(fields, key)
    if text is None:
        return None
    text = text.strip()
    return int(text) if _INTEGER.fullmatch(text) else None


# message type -> (class, {attribute: wire key, "float:"/"int:" prefixes convert})
_MESSAGE_TYPES: dict[str, tuple[type[Message], dict[str, str]]] = {
    "text": (TextMessage, {"content": "Content", "menu_id": "bizmsgmenuid"}),
    "image": (ImageMessage, {"pic_url": "PicUrl", "media_id": "MediaId"}),
    "miniprogrampage": (MiniProgramPageMessage, {
        "title": "Title", "app_id": "AppId", "page_path": "PagePath", "thumb_url": "ThumbUrl",
        "thumb_media_id": "ThumbMediaId"}),
    "voice": (VoiceMessage, {"media_id": "MediaId", "format": "Format", "recognition": "Recognition"}),
    "video": (VideoMessage, {"media_id": "MediaId", "thumb_media_id": "ThumbMediaId"}),
    "shortvideo": (VideoMessage, {"media_id": "MediaId", "thumb_media_id": "ThumbMediaId"}),
    "location": (LocationMessage, {"latitude": "float:Location_X", "longitude": "float:Location_Y",
                                   "scale": "int:Scale", "label": "Label"}),
    "link": (LinkMessage, {"title": "Title", "description": "Description", "url": "Url"}),
}
_MENU = (MenuEvent, {"menu_id": "MenuId"})
_KF = (KfSessionEvent, {"kf_account": "KfAccount", "from_kf_account": "FromKfAccount",
                        "to_kf_account": "ToKfAccount"})
_EVENTS: dict[str, tuple[type[EventMessage], dict[str, str]]] = {
    "user_enter_tempsession": (EnterSessionEvent, {"session_from": "SessionFrom"}),
    "subscribe": (SubscribeEvent, {"ticket": "Ticket"}),
    "scan": (SubscribeEvent, {"ticket": "Ticket"}),
    "location": (LocationEvent, {"latitude": "float:Latitude", "longitude": "float:Longitude",
                                 "precision": "float:Precision"}),
    **{name: _MENU for name in ("click", "view", "scancode_push", "scancode_waitmsg", "pic_sysphoto",
                                "pic_photo_or_album", "pic_weixin", "location_select",
                                "view_miniprogram")},
    **{name: _KF for name in ("kf_create_session", "kf_close_session", "kf_switch_session")},
}


def _convert(fields: Mapping[str, Any], spec: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attr, key in spec.items():
        if key.startswith("float:"):
            out[attr] = _float(fields, key[6:])
        elif key.startswith("int:"):
            out[attr] = _int(fields, key[4:])
        else:
            out[attr] = _text(fields, key)
    return out


def message_from_fields(fields: Mapping[str, Any], *, push: bool = False) -> Message:
    """Build the typed Message. Unknown types and events are kept, never refused. `push`: the fields came
    from WeChat, and must have a CreateTime (kefu's own messages — chat, tests, the console — may not)."""
    if fields.get("MsgType") == "text":
        message = _plain_text(fields)
        if message is not None:
            return message
    return _any_message(fields, push)


def _any_message(fields: Mapping[str, Any], push: bool = False) -> Message:
    from_user = _text(fields, "FromUserName")
    msg_type = (_text(fields, "MsgType") or "").strip().lower()
    if not from_user:
        raise MalformedPush("push has no FromUserName")
    if not msg_type:
        raise MalformedPush("push has no MsgType")
    create_time, to_user = _int(fields, "CreateTime"), _text(fields, "ToUserName") or ""
    if push and create_time is None:  # every push has one, and an event's dedupe key is made of it
        raise MalformedPush("push has no CreateTime (a number of seconds)")
    if push and not to_user:  # the account: a transfer answer is addressed from it
        raise MalformedPush("push has no ToUserName")
    common: dict[str, Any] = {
        "to_user": to_user,
        "from_user": from_user,
        "create_time": create_time or 0,
        "msg_type": msg_type,
        "msg_id": _text(fields, "MsgId") or _text(fields, "MsgID"),
        "fields": MappingProxyType(dict(fields)),
    }
    if msg_type == "event":
        event = (_text(fields, "Event") or "").strip().lower()
        event_key = _text(fields, "EventKey")
        cls, spec = _EVENTS.get(event, (EventMessage, {}))
        extra = _convert(fields, spec)
        if cls is SubscribeEvent:
            key = event_key or ""
            if event == "scan":
                extra["scene"] = key or None
            else:
                extra["scene"] = key[len("qrscene_"):] if key.startswith("qrscene_") else None
        # events have no MsgId (TEMPLATESENDJOBFINISH's MsgID is the template message's, not a push id)
        common["msg_id"] = None
        return cls(**common, event=event, event_key=event_key, **extra)
    if msg_type in _MESSAGE_TYPES:
        kind, spec = _MESSAGE_TYPES[msg_type]
        extra = _convert(fields, spec)
        if kind is TextMessage and extra["content"] is None:
            extra["content"] = ""
        return kind(**common, **extra)
    return UnknownMessage(**common)


def _plain_text(fields: Mapping[str, Any]) -> TextMessage | None:
    """The most common push, a text as XML carries it (every value a plain string) or as JSON does (CreateTime
    and MsgId numbers), built without the general path's conversions; None for anything else (the general
    path then builds it the same)."""
    get = fields.get
    from_user, to_user, content, msg_id = get("FromUserName"), get("ToUserName"), get("Content"), get("MsgId")
    create_time, menu_id = get("CreateTime"), get("bizmsgmenuid")
    if type(msg_id) is int:  # JSON (not a bool: those are ints too)
        msg_id = str(msg_id)
    if type(create_time) is str and create_time.isdigit() and create_time.isascii() and len(create_time) <= MAX_DIGITS:
        create_time = int(create_time)
    if (type(from_user) is str and from_user and type(to_user) is str and to_user and type(content) is str
            and type(msg_id) is str and msg_id and type(create_time) is int
            and (menu_id is None or type(menu_id) is str)):
        return TextMessage(to_user=to_user, from_user=from_user, create_time=create_time,
                           msg_type="text", msg_id=msg_id, fields=MappingProxyType(dict(fields)),
                           content=content, menu_id=menu_id)
    return None


def parse_message(body: bytes, content_type: str | None = None) -> tuple[Message, Format]:
    """bytes → (Message, the format it came in)."""
    fmt = detect_format(body, content_type)
    return message_from_fields(parse_fields(body, fmt)), fmt


# ---- passive answers -----------------------------------------------------------------------------------


def dump_fields(fields: Mapping[str, Any], fmt: Format) -> bytes:
    """Serialise a flat mapping of fields as a WeChat XML `<xml>` document or a JSON object."""
    if fmt == "json":
        return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")
    return _element("xml", fields).encode("utf-8").replace(b"\r", b"&#13;")


# Characters XML 1.0 cannot carry at all, not even as references.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _element(tag: str, value: Any) -> str:
    """One element as ElementTree's serializer writes it (tests/test_wire.py holds the two to the same bytes):
    text escaped, an empty element as `<Tag />`. A few string joins
    instead of building a tree: the transfer answer is written for every push no rule answers. Tags are
    kefu's own field names, never input. ElementTree writes \r raw, which parsers turn into \n: a character
    reference keeps it (every \r is inside text)."""
    if isinstance(value, Mapping):
        inner = "".join(_element(key, item) for key, item in value.items())
    else:
        inner = _NOT_XML.sub("", str(value))
        if "&" in inner:
            inner = inner.replace("&", "&amp;")
        if "<" in inner:
            inner = inner.replace("<", "&lt;")
        if ">" in inner:
            inner = inner.replace(">", "&gt;")
    return f"<{tag}>{inner}</{tag}>" if inner else f"<{tag} />"


def transfer_fields(message: Message, now: int, kf_account: str | None = None) -> dict[str, Any]:
    """The transfer_customer_service answer that hands the conversation to human agents."""
    fields: dict[str, Any] = {
        "ToUserName": message.from_user,
        "FromUserName": message.to_user,
        "CreateTime": now,
        "MsgType": "transfer_customer_service",
    }
    if kf_account:
        fields["TransInfo"] = {"KfAccount": kf_account}
    return fields


def passive_fields(message: Message, reply: Reply, now: int) -> dict[str, Any]:
    """An official account's passive reply: the answer to the push carries the message itself."""
    fields: dict[str, Any] = {"ToUserName": message.from_user, "FromUserName": message.to_user,
                              "CreateTime": now, "MsgType": reply.kind}
    if isinstance(reply, TextReply):
        fields["Content"] = reply.content
    elif isinstance(reply, ImageReply):
        fields["Image"] = {"MediaId": reply.media_id}
    elif isinstance(reply, VoiceReply):
        fields["Voice"] = {"MediaId": reply.media_id}
    elif isinstance(reply, VideoReply):
        fields["Video"] = {"MediaId": reply.media_id, "Title": reply.title,
                           "Description": reply.description}
    elif isinstance(reply, MusicReply):
        fields["Music"] = {"Title": reply.title, "Description": reply.description,
                           "MusicUrl": reply.music_url, "HQMusicUrl": reply.hq_music_url,
                           "ThumbMediaId": reply.thumb_media_id}
    elif isinstance(reply, NewsReply):
        fields["ArticleCount"] = 1
        fields["Articles"] = {"item": {"Title": reply.title, "Description": reply.description,
                                       "PicUrl": reply.pic_url, "Url": reply.url}}
    else:
        raise ValueError(f"a {reply.kind} reply cannot be a passive answer")
    return fields


def transfer_answer(message: Message, fmt: Format, now: int, kf_account: str | None = None) -> bytes:
    """transfer_fields, serialised in the push's format."""
    return dump_fields(transfer_fields(message, now, kf_account), fmt)


CONTENT_TYPES: dict[Format, str] = {"xml": "application/xml", "json": "application/json"}
