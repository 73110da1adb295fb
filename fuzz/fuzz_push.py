"""Coverage-guided fuzzing of everything a push goes through before an answer: signature and timestamp
checks, format detection, XML/JSON parsing, safe-mode unwrapping and decryption, message building, the
rule engine (the bundled rules) and answer sealing.

The only acceptable failure is a ProtocolError (the server's 4xx). Anything else is a crash.

    pip install atheris
    python fuzz/fuzz_push.py -max_total_time=600 -max_len=8192 -dict=fuzz/push.dict fuzz/corpus fuzz/seeds

The first byte of an input picks the mode (plaintext, safe mode with fuzzed inner message, safe mode with a
fuzzed Encrypt field, compat mode, hostile query string) and the Content-Type; the rest is the body. Inputs
are signed correctly, so the fuzzer gets past the signature check into the parsers. With the first byte's
high bit set, the input's first line is the timestamp. fuzz/push.dict gives the fuzzer the protocol's words.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs

import atheris

with atheris.instrument_imports(include=["bot"]):
    from bot.config import TIMEZONE, Secret, load_settings
    from bot.engine import decide
    from bot.errors import ProtocolError
    from bot.messages import TextReply
    from bot.protocol.crypto import WeChatCrypto
    from bot.protocol.push import PushCodec
    from bot.protocol.signature import sign
    from bot.protocol.wire import detect_format, dump_fields, parse_fields, passive_fields, transfer_fields
    from bot.sources import load_ruleset
    from bot.textsplit import split_replies
    from bot.wechat_api import build_send_body

TOKEN, KEY, APPID = "fuzz-token", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "wxfuzz0123456789"
CRYPTO = WeChatCrypto(KEY, APPID)
CODEC = PushCodec(Secret(TOKEN), CRYPTO, max_timestamp_age=0)
RULESET = load_ruleset(load_settings(Path(__file__).resolve().parent.parent / "bot.yaml"))
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=TIMEZONE)
CONTENT_TYPES = [None, "text/xml", "application/json", "application/octet-stream", "application/xml; x"]


TIMESTAMP, NONCE = "1714112445", "415670741"


def one_input(data: bytes) -> None:
    """data[0] picks the mode and the Content-Type; the rest is the body (or what goes into it)."""
    if not data:
        return
    mode, content_type = data[0] % 6, CONTENT_TYPES[(data[0] // 6) % len(CONTENT_TYPES)]
    body = data[1:]
    timestamp = TIMESTAMP
    if data[0] >= 128 and b"\n" in body:  # a fuzzed timestamp: the first line of the input
        raw, _, body = body.partition(b"\n")
        timestamp = raw.decode("latin-1")
    query = {"timestamp": timestamp, "nonce": NONCE, "signature": sign(TOKEN, timestamp, NONCE)}
    if mode in (2, 3):  # safe mode: the fuzz bytes are the inner message (2) or the Encrypt field (3)
        encrypt = CRYPTO.encrypt(body.decode("utf-8", "replace")) if mode == 2 else body.decode("latin-1")
        query.update(encrypt_type="aes", msg_signature=sign(TOKEN, timestamp, NONCE, encrypt))
        body = dump_fields({"ToUserName": "gh_fuzz", "Encrypt": encrypt},
                           "json" if content_type == "application/json" else "xml")
    elif mode == 4:  # compat mode: a random envelope, signed over whatever Encrypt it may hold
        query.update(encrypt_type="aes", msg_signature=sign(TOKEN, timestamp, NONCE, _encrypt_of(body)))
    elif mode == 5:  # a hostile query string: the first line of the input
        line, _, body = body.partition(b"\n")
        query = {k: v[0] for k, v in parse_qs(line.decode("latin-1"), keep_blank_values=True).items()}
    try:
        CODEC.verify_query(query)
        push = CODEC.read(query, body, content_type)
    except ProtocolError:
        return
    decision = decide(RULESET, push.message, NOW)
    CODEC.seal(push, transfer_fields(push.message, 1, "kf@fuzz"))
    for reply in split_replies(decision.replies):
        build_send_body(push.message.from_user, reply)
        if isinstance(reply, TextReply):
            CODEC.seal(push, passive_fields(push.message, reply, 1))


def _encrypt_of(body: bytes) -> str:
    """The Encrypt field the codec will see, or "" (then the signature is simply wrong)."""
    try:
        fmt = detect_format(body, None)
        value = parse_fields(body, fmt).get("Encrypt")
    except ProtocolError:
        return ""
    return value if isinstance(value, str) else ""


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
