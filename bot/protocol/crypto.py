"""WeChat's message encryption (安全模式 / 兼容模式): AES-256-CBC, IV = the key's first 16 bytes,
PKCS#7 padding to 32-byte blocks.
Plaintext = 16 random bytes + 4-byte big-endian length + message (UTF-8) + appid.

Every way a ciphertext can be wrong raises a ProtocolError subclass (a 4xx), never anything else.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..errors import BadSignature, MalformedPush

BLOCK = 32  # WeChat pads to 32 bytes, not AES's 16


class DecryptError(MalformedPush):
    """The Encrypt field is not a valid ciphertext for this key."""


class AppIdMismatch(BadSignature):
    """The message decrypted, but for another appid: not ours."""


def decode_aes_key(encoding_aes_key: str) -> bytes:
    """The 43-character EncodingAESKey → the 32-byte AES key. Raises ValueError when it is not one."""
    if len(encoding_aes_key) != 43:
        raise ValueError(f"must be 43 characters, not {len(encoding_aes_key)}")
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except binascii.Error:
        raise ValueError("is not base64 (letters, digits, + and /)") from None
    if len(key) != 32:  # pragma: no cover - 43 base64 characters always give 32 bytes
        raise ValueError("does not decode to 32 bytes")
    return key


class WeChatCrypto:
    def __init__(self, encoding_aes_key: str, appid: str):
        self._key = decode_aes_key(encoding_aes_key)
        self._iv = self._key[:16]
        self.appid = appid
        # made once: each encrypt or decrypt takes a fresh context from it (building the Cipher, its AES and
        # its CBC cost a safe-mode push about 10 µs)
        self._aes = Cipher(algorithms.AES(self._key), modes.CBC(self._iv))

    def __repr__(self) -> str:
        return f"WeChatCrypto(appid={self.appid!r}, key=***)"

    def _cipher(self) -> Cipher:
        return self._aes

    def encrypt(self, message: str, random_prefix: bytes | None = None) -> str:
        """Encrypt a message for WeChat; `random_prefix` (16 bytes) only for known-answer tests."""
        prefix = secrets.token_bytes(16) if random_prefix is None else random_prefix
        if len(prefix) != 16:
            raise ValueError("random_prefix must be 16 bytes")
        body = message.encode("utf-8")
        plain = prefix + len(body).to_bytes(4, "big") + body + self.appid.encode("utf-8")
        pad = BLOCK - len(plain) % BLOCK
        plain += bytes([pad]) * pad
        encryptor = self._cipher().encryptor()
        return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode("ascii")

    def decrypt(self, encrypted: str) -> str:
        """Decrypt an Encrypt field and check its appid; return the inner message text."""
        try:
            raw = base64.b64decode(encrypted.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise DecryptError("Encrypt is not base64") from None
        if not raw or len(raw) % 16:
            raise DecryptError("Encrypt is not a whole number of AES blocks")
        decryptor = self._cipher().decryptor()
        plain = decryptor.update(raw) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= BLOCK or pad > len(plain) or plain[-pad:] != bytes([pad]) * pad:
            raise DecryptError("bad padding (wrong EncodingAESKey?)")
        content = plain[:-pad]
        if len(content) < 20:
            raise DecryptError("decrypted message is too short")
        length = int.from_bytes(content[16:20], "big")
        if length > len(content) - 20:
            raise DecryptError("decrypted length field is out of range")
        message, appid = content[20:20 + length], content[20 + length:]
        if not hmac.compare_digest(appid, self.appid.encode("utf-8")):
            raise AppIdMismatch("the message is for another appid")
        try:
            return message.decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptError("decrypted message is not UTF-8") from None
