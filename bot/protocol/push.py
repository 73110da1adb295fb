"""A push, end to end, without I/O: query + body → verified, decrypted, parsed Push; answer → bytes.

Order of checks: the URL `signature` and the timestamp first (before the body is even read), then the
envelope is parsed, then — in safe and compat mode — `msg_signature` over the Encrypt field is verified
before anything is decrypted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..config import Secret
from ..errors import BadSignature, EncryptionRequired, MalformedPush
from ..messages import Message
from .crypto import WeChatCrypto
from .signature import check_timestamp, sign, verify
from .wire import CONTENT_TYPES, Format, detect_format, dump_fields, message_from_fields, parse_fields


class EncryptionNotConfigured(MalformedPush):
    """A safe-mode push arrived but wechat.encoding_aes_key is empty."""


@dataclass(slots=True)  # a value, but made per push: see VALUES_NOT_FROZEN in store/base.py
class Push:
    message: Message
    fmt: Format  # the format of the push, which is the format of its answer
    encrypted: bool
    nonce: str


class PushCodec:
    def __init__(self, token: Secret, crypto: WeChatCrypto | None, *, max_timestamp_age: int = 300,
                 require_encryption: bool = False, clock: Callable[[], float] = time.time):
        self._token = token
        self.crypto = crypto
        self.max_timestamp_age = max_timestamp_age
        self.require_encryption = require_encryption
        self.clock = clock

    def __repr__(self) -> str:
        return f"PushCodec(encrypted={self.crypto is not None}, require={self.require_encryption})"

    def verify_query(self, query: Mapping[str, str]) -> None:
        """The URL signature and the timestamp: checked before the body is read."""
        timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
        verify((self._token.reveal(), timestamp, nonce), query.get("signature"))
        check_timestamp(timestamp, self.clock(), self.max_timestamp_age)
        if self.require_encryption and query.get("encrypt_type", "").lower() != "aes":
            raise EncryptionRequired("plaintext push refused: security.require_encryption is on")

    def read(self, query: Mapping[str, str], body: bytes, content_type: str | None) -> Push:
        """Verify (call verify_query first), decrypt and parse the body."""
        fmt = detect_format(body, content_type)
        fields = parse_fields(body, fmt)
        encrypted = query.get("encrypt_type", "").lower() == "aes"
        if encrypted:
            fields = self._unwrap(query, fields)
        return Push(message_from_fields(fields, push=True), fmt, encrypted, query.get("nonce", ""))

    def _unwrap(self, query: Mapping[str, str], envelope: Mapping[str, object]) -> dict[str, object]:
        encrypt = envelope.get("Encrypt")
        if not isinstance(encrypt, str) or not encrypt:
            raise MalformedPush("encrypt_type=aes but the body has no Encrypt")
        if not query.get("msg_signature"):
            raise BadSignature("encrypt_type=aes but no msg_signature")
        verify((self._token.reveal(), query.get("timestamp", ""), query.get("nonce", ""), encrypt),
               query.get("msg_signature"))
        if self.crypto is None:
            raise EncryptionNotConfigured("safe-mode push, but wechat.encoding_aes_key is not set")
        inner = self.crypto.decrypt(encrypt).encode("utf-8")
        # The inner message is XML or JSON in the console's format; compat mode's plaintext fields are
        # ignored: Encrypt is the truth.
        return parse_fields(inner, detect_format(inner, None))

    def seal(self, push: Push, answer: Mapping[str, object]) -> tuple[bytes, str]:
        """An answer message → (body, content type), encrypted when the push was."""
        plain = dump_fields(answer, push.fmt)
        if not push.encrypted or self.crypto is None:
            return plain, CONTENT_TYPES[push.fmt]
        timestamp = int(self.clock())
        encrypt = self.crypto.encrypt(plain.decode("utf-8"))
        envelope = {
            "Encrypt": encrypt,
            "MsgSignature": sign(self._token.reveal(), str(timestamp), push.nonce, encrypt),
            "TimeStamp": timestamp,
            "Nonce": push.nonce,
        }
        return dump_fields(envelope, push.fmt), CONTENT_TYPES[push.fmt]
