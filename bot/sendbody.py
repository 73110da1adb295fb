"""The JSON body of a customer-service message (/cgi-bin/message/custom/send) for each kind of Reply: pure.

UTF-8, never \\u-escaped (WeChat counts a message's length in bytes of what it receives), built once per
send. An image reply with a local file is sent with the media_id its upload got (`with_media_id`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from .messages import (
    CardReply,
    ImageReply,
    LinkReply,
    MediaFile,
    MenuReply,
    MiniProgramPageReply,
    MusicReply,
    NewsReply,
    Reply,
    TextReply,
    VideoReply,
    VoiceReply,
)


def build_send_body(touser: str, reply: Reply, platform: str = "miniprogram",
                    send_as: str | None = None) -> bytes:
    """The custom/send JSON for one reply."""
    body: dict[str, Any] = {"touser": touser, "msgtype": reply.kind}
    if isinstance(reply, TextReply):
        body["text"] = {"content": reply.content}
    elif isinstance(reply, ImageReply | VoiceReply):
        body[reply.kind] = {"media_id": reply.media_id}
    elif isinstance(reply, VideoReply):
        body["video"] = {"media_id": reply.media_id, "thumb_media_id": reply.thumb_media_id,
                         "title": reply.title, "description": reply.description}
    elif isinstance(reply, MusicReply):
        body["music"] = {"title": reply.title, "description": reply.description, "musicurl": reply.music_url,
                         "hqmusicurl": reply.hq_music_url, "thumb_media_id": reply.thumb_media_id}
    elif isinstance(reply, NewsReply):
        body["news"] = {"articles": [{"title": reply.title, "description": reply.description,
                                      "url": reply.url, "picurl": reply.pic_url}]}
    elif isinstance(reply, MenuReply):
        body["msgmenu"] = {"head_content": reply.head_content,
                           "list": [{"id": i, "content": c} for i, c in reply.options],
                           "tail_content": reply.tail_content}
    elif isinstance(reply, CardReply):
        body["wxcard"] = {"card_id": reply.card_id}
    elif isinstance(reply, LinkReply):
        body["link"] = {"title": reply.title, "description": reply.description, "url": reply.url,
                        "thumb_url": reply.thumb_url}
    elif isinstance(reply, MiniProgramPageReply):
        page: dict[str, str] = {"title": reply.title, "pagepath": reply.pagepath,
                                "thumb_media_id": reply.thumb_media_id}
        if platform == "official_account" and reply.appid:
            page["appid"] = reply.appid
        body["miniprogrampage"] = page
    else:  # pragma: no cover - every Reply kind is above
        raise TypeError(f"cannot send {type(reply).__name__}")
    if send_as:
        body["customservice"] = {"kf_account": send_as}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


def typing_body(touser: str) -> bytes:
    return json.dumps({"touser": touser, "command": "Typing"}).encode()


def media_of(reply: Reply) -> MediaFile | None:
    """The local file a reply must upload before it is sent, if any."""
    if isinstance(reply, ImageReply) and reply.file is not None:
        return reply.file
    if isinstance(reply, MiniProgramPageReply) and reply.thumb_file is not None:
        return reply.thumb_file
    return None


def with_media_id(reply: Reply, media_id: str) -> Reply:
    if isinstance(reply, ImageReply):
        return dataclasses.replace(reply, media_id=media_id)
    if isinstance(reply, MiniProgramPageReply):
        return dataclasses.replace(reply, thumb_media_id=media_id)
    raise TypeError(f"{type(reply).__name__} has no media")  # pragma: no cover - see media_of
