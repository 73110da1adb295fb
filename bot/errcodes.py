"""What a WeChat API failure means, decided in one place: `classify`.

A call to WeChat ends in one of three ways worth telling apart, whatever form the failure takes (an
exception from the transport, an HTTP status, an errcode in the JSON answer):

- TRANSIENT: worth trying again later — no answer (refused, reset, timeout), HTTP 5xx or 429, an answer that
  is not JSON, errcode -1 (WeChat busy). The API client retries these a few times at once; the outbox then
  backs off and tries again up to `outbox.max_attempts`.
- TOKEN: the access_token is invalid or expired (40001, 40014, 42001): refresh it once and call again.
- FINAL: the same request cannot succeed — any other errcode (45015 outside the 48-hour window, 45047,
  43004, …), any other HTTP status (3xx, 4xx), the proxy refusing our credentials (407) or a TLS
  certificate that does not verify. Retrying would only repeat it; the reply is marked failed.

The words for the errcodes operators meet most are here too (`describe_errcode`).
"""

from __future__ import annotations

import enum
import ssl
from collections.abc import Mapping

import aiohttp


class Verdict(enum.Enum):
    OK = "ok"
    TRANSIENT = "transient"
    TOKEN = "token-expired"
    FINAL = "final"


TOKEN_ERRORS = frozenset({40001, 40014, 42001})
TRANSIENT_ERRORS = frozenset({-1})
TRANSIENT_STATUS = frozenset({429})

ERRCODE_WORDS: Mapping[int, str] = {
    -1: "WeChat is busy; try again",
    0: "ok",
    40001: "the access_token is invalid (or the appsecret is wrong)",
    40003: "the openid is not a user of this account",
    40013: "the appid is invalid",
    40014: "the access_token is malformed",
    40125: "the appsecret is invalid",
    40164: "this server's IP address is not in the account's IP whitelist",
    61004: "this server's IP address is not in the account's IP whitelist",
    41001: "the access_token is missing",
    42001: "the access_token has expired",
    43004: "the user has not followed the account",
    44002: "the message is empty",
    45002: "the message is too long",
    45009: "the daily API quota is used up",
    45015: "the user last wrote more than 48 hours ago: no more messages may be sent",
    45047: "the send quota for this user is used up until they write again",
    48001: "the account has no permission for this API (unverified official account?)",
}


def classify(errcode: int | None = 0, status: int | None = 200, failure: BaseException | None = None) -> Verdict:
    """The one judgement of a call's outcome: `failure` (the transport raised), else the HTTP `status` (None:
    no answer), else WeChat's `errcode` (None: the answer carried none that could be read)."""
    if failure is not None:
        return Verdict.FINAL if _hopeless(failure) else Verdict.TRANSIENT
    if status is None or status >= 500 or status in TRANSIENT_STATUS:
        return Verdict.TRANSIENT
    if status != 200:
        return Verdict.FINAL
    if errcode == 0:
        return Verdict.OK
    if errcode is None or errcode in TRANSIENT_ERRORS:
        return Verdict.TRANSIENT
    return Verdict.TOKEN if errcode in TOKEN_ERRORS else Verdict.FINAL


def _hopeless(failure: BaseException) -> bool:
    """Transport failures that the same request will meet again: the proxy wants other credentials, or the
    server's certificate does not verify (a missing wechat.ca_file, a proxy that inspects TLS)."""
    if isinstance(failure, aiohttp.ClientHttpProxyError):
        return failure.status in (401, 403, 407)
    if isinstance(failure, aiohttp.ClientConnectorCertificateError | aiohttp.ServerFingerprintMismatch):
        return True
    cause = getattr(failure, "os_error", None) or failure.__cause__
    return isinstance(cause, ssl.SSLCertVerificationError) or isinstance(failure, ssl.SSLCertVerificationError)


def describe_errcode(errcode: int | None, errmsg: str = "") -> str:
    if errcode is None:
        return errmsg or "WeChat could not be reached"
    words = ERRCODE_WORDS.get(errcode)
    return f"{errcode}: {words} ({errmsg})" if words else f"{errcode}: {errmsg}"
