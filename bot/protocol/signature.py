"""WeChat's push signatures: sha1 over the sorted, concatenated parts, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac

from ..errors import BadSignature, StaleTimestamp


def sign(*parts: str) -> str:
    """sha1("".join(sorted(parts))) as lowercase hex: `signature` and `msg_signature` alike."""
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()


def verify(expected_parts: tuple[str, ...], signature: str | None) -> None:
    """Raise BadSignature unless `signature` is the signature of the parts."""
    if not signature:
        raise BadSignature("missing signature")
    good = sign(*expected_parts)
    if not hmac.compare_digest(good.encode("ascii"), signature.lower().encode("utf-8", "replace")):
        raise BadSignature("signature does not match")


def check_timestamp(timestamp: str | None, now: float, max_age: int) -> int:
    """Return the timestamp as an int; raise StaleTimestamp when it is too far from `now`.

    A max_age of 0 turns the age check off (the timestamp must still be a number)."""
    if not timestamp or len(timestamp) > 12 or not timestamp.isascii() or not timestamp.isdigit():
        raise StaleTimestamp("timestamp is not a number of seconds")
    value = int(timestamp)
    if max_age and abs(now - value) > max_age:
        raise StaleTimestamp(f"timestamp is {int(now - value)} s away from the clock")
    return value
