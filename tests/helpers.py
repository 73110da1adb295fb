"""Building signed pushes and test configurations."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bot.config import Settings, load_settings
from bot.protocol.signature import sign

TOKEN = "test-token-7d1f"
ACCOUNT = "gh_97417a04a28d"
USER = "o9AgO5Kd5ggOC-bXrbNODIiE3bGY"


def signed_query(token: str = TOKEN, timestamp: int | None = None, nonce: str = "415670741",
                 **extra: str) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {"signature": sign(token, ts, nonce), "timestamp": ts, "nonce": nonce, **extra}


def xml_push(fields: dict[str, Any]) -> bytes:
    parts = []
    for key, value in fields.items():
        if isinstance(value, int):
            parts.append(f"<{key}>{value}</{key}>")
        else:
            parts.append(f"<{key}><![CDATA[{value}]]></{key}>")
    return ("<xml>" + "".join(parts) + "</xml>").encode("utf-8")


def json_push(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, ensure_ascii=False).encode("utf-8")


_msg_ids = iter(range(10**17, 10**18))


def text_fields(content: str, user: str = USER, msg_id: int | None = None) -> dict[str, Any]:
    return {"ToUserName": ACCOUNT, "FromUserName": user, "CreateTime": int(time.time()),
            "MsgType": "text", "Content": content, "MsgId": msg_id if msg_id is not None else next(_msg_ids)}


def event_fields(event: str, user: str = USER, **extra: Any) -> dict[str, Any]:
    return {"ToUserName": ACCOUNT, "FromUserName": user, "CreateTime": int(time.time()),
            "MsgType": "event", "Event": event, **extra}


def write_bot(tmp_path: Path, rules: dict[str, str], templates: dict[str, str] | None = None,
              config: str = "", api_base: str = "https://api.weixin.qq.com",
              credentials: bool = True, wechat: str = "", store: str = "memory://") -> Path:
    """Write bot.yaml, rules/ and templates/ under tmp_path; return the bot.yaml path."""
    from .fakewechat import APPID, SECRET

    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "templates").mkdir(exist_ok=True)
    for name, text in rules.items():
        (tmp_path / "rules" / name).write_text(text, encoding="utf-8")
    for name, text in (templates or {}).items():
        path = tmp_path / "templates" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    creds = f"  appid: {APPID}\n  secret: {SECRET}\n" if credentials else ""
    text = (f"wechat:\n{creds}  token: {TOKEN}\n  api_base: {api_base}\n{wechat}"
            f"store: '{store}'\nvars:\n  shop_name: 测试小店\n{config}")
    path = tmp_path / "bot.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def settings_for(tmp_path: Path, rules: dict[str, str], **kw: Any) -> Settings:
    return load_settings(write_bot(tmp_path, rules, **kw))
