"""bot.protocol.signature: sign, verify, check_timestamp (wechat-protocol.md §1 and §3)."""

from __future__ import annotations

import hashlib

import pytest

from bot.errors import BadSignature, ProtocolError, StaleTimestamp
from bot.protocol.signature import check_timestamp, sign, verify

# Known-answer vectors from wechat-protocol.md §3 (WeChat's own message-push page).
TOKEN = "AAAAA"
GET_TS, GET_NONCE = "1714036504", "1514711492"
GET_SIGNATURE = "f464b24fc39322e44b38aa78f5edd27bd1441696"
POST_TS, POST_NONCE = "1714112445", "415670741"
POST_SIGNATURE = "6c5c811b55cc85e0e1b54100749188c20beb3f5d"
POST_ENCRYPT = (
    "+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVzazhZv"
    "6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoN"
    "qJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04="
)
POST_MSG_SIGNATURE = "046e02f8204d34f8ba5fa3b1db94908f3df2e9b3"


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ((TOKEN, GET_TS, GET_NONCE), GET_SIGNATURE),
        ((TOKEN, POST_TS, POST_NONCE), POST_SIGNATURE),
        ((TOKEN, POST_TS, POST_NONCE, POST_ENCRYPT), POST_MSG_SIGNATURE),
    ],
    ids=["get", "post", "post-msg_signature"],
)
def test_known_answer_vectors(parts, expected):
    assert sign(*parts) == expected
    verify(parts, expected)  # does not raise


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 0, 2), (2, 0, 1)])
def test_sign_does_not_depend_on_argument_order(order):
    parts = (TOKEN, GET_TS, GET_NONCE)
    assert sign(*(parts[i] for i in order)) == GET_SIGNATURE


def test_sign_is_sha1_of_sorted_concatenation_lowercase_hex():
    parts = ("b", "a", "c令牌")
    digest = sign(*parts)
    assert digest == hashlib.sha1("abc令牌".encode()).hexdigest()
    assert len(digest) == 40
    assert digest == digest.lower()


@pytest.mark.parametrize(
    ("parts", "signature", "reason"),
    [
        ((TOKEN, GET_TS, GET_NONCE), "0" * 40, "does not match"),
        ((TOKEN, GET_TS, GET_NONCE), GET_SIGNATURE[:-1], "does not match"),
        ((TOKEN, GET_TS, GET_NONCE), GET_SIGNATURE + "0", "does not match"),
        (("BBBBB", GET_TS, GET_NONCE), GET_SIGNATURE, "does not match"),  # wrong token
        ((TOKEN, "1714036505", GET_NONCE), GET_SIGNATURE, "does not match"),  # other timestamp
        ((TOKEN, GET_TS, "1514711493"), GET_SIGNATURE, "does not match"),  # other nonce
        ((TOKEN, POST_TS, POST_NONCE), POST_MSG_SIGNATURE, "does not match"),  # msg_signature as signature
        # the body changed
        ((TOKEN, POST_TS, POST_NONCE, POST_ENCRYPT + "x"), POST_MSG_SIGNATURE, "does not match"),
        ((TOKEN, GET_TS, GET_NONCE), "签名" * 20, "does not match"),  # non-ASCII must not crash
        ((TOKEN, GET_TS, GET_NONCE), None, "missing"),
        ((TOKEN, GET_TS, GET_NONCE), "", "missing"),
    ],
)
def test_verify_refuses(parts, signature, reason):
    with pytest.raises(BadSignature, match=reason) as info:
        verify(parts, signature)
    assert isinstance(info.value, ProtocolError)
    assert info.value.status == 403


def test_verify_accepts_uppercase_hex():
    verify((TOKEN, GET_TS, GET_NONCE), GET_SIGNATURE.upper())  # does not raise


# ---- timestamps ------------------------------------------------------------------------------------

NOW = 1714036504.0


@pytest.mark.parametrize(
    ("timestamp", "now", "max_age", "expected"),
    [
        ("1714036504", NOW, 300, 1714036504),
        ("1714036204", NOW, 300, 1714036204),  # exactly max_age old
        ("1714036804", NOW, 300, 1714036804),  # exactly max_age ahead
        ("1714036503", NOW + 0.9, 300, 1714036503),
        ("1714036504", NOW + 299, 300, 1714036504),
        ("1", NOW, 0, 1),  # max_age 0: no age check
        ("99999999999", NOW, 0, 99999999999),
        ("0", NOW, 0, 0),
    ],
)
def test_check_timestamp_accepts(timestamp, now, max_age, expected):
    assert check_timestamp(timestamp, now, max_age) == expected


@pytest.mark.parametrize(
    ("timestamp", "now", "max_age"),
    [
        ("1714036203", NOW, 300),  # one second too old
        ("1714036805", NOW, 300),  # one second too far ahead
        ("1714000000", NOW, 300),  # stale
        ("1800000000", NOW, 300),  # in the future
        ("1", NOW, 300),
        ("1714036504", NOW + 301, 300),
        ("1714036500", NOW, 1),
    ],
)
def test_check_timestamp_refuses_stale_and_future(timestamp, now, max_age):
    with pytest.raises(StaleTimestamp, match="away from the clock") as info:
        check_timestamp(timestamp, now, max_age)
    assert info.value.status == 403


@pytest.mark.parametrize("timestamp", [None, "", "abc", "1714036504.5", "1e9", "0x10", "17140365O4",
                                       " 1714036504 ", "1_714_036_504", "-1", "１７１４０３６５０４"])
@pytest.mark.parametrize("max_age", [300, 0])
def test_check_timestamp_refuses_non_numbers(timestamp, max_age):
    with pytest.raises(StaleTimestamp, match="not a number") as info:
        check_timestamp(timestamp, NOW, max_age)
    assert info.value.status == 403
