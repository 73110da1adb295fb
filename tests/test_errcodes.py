"""One judgement of every way a call to WeChat can end: transient, token expired, final or ok."""

from __future__ import annotations

import ssl

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey

from bot.errcodes import Verdict, classify, describe_errcode

KEY = ConnectionKey("api.weixin.qq.com", 443, True, True, None, None, None)


@pytest.mark.parametrize(("kwargs", "verdict"), [
    ({"errcode": 0}, Verdict.OK),
    ({"errcode": -1}, Verdict.TRANSIENT),
    ({"errcode": None}, Verdict.TRANSIENT),  # an answer that is not JSON
    ({"errcode": 40001}, Verdict.TOKEN),
    ({"errcode": 40014}, Verdict.TOKEN),
    ({"errcode": 42001}, Verdict.TOKEN),
    ({"errcode": 45015}, Verdict.FINAL),
    ({"errcode": 45047}, Verdict.FINAL),
    ({"errcode": 40164}, Verdict.FINAL),
    ({"status": None}, Verdict.TRANSIENT),
    ({"status": 500}, Verdict.TRANSIENT),
    ({"status": 503}, Verdict.TRANSIENT),
    ({"status": 429}, Verdict.TRANSIENT),
    ({"status": 302}, Verdict.FINAL),
    ({"status": 404}, Verdict.FINAL),
    ({"status": 407}, Verdict.FINAL),
    ({"status": 200, "errcode": 0}, Verdict.OK),
    ({"status": 404, "errcode": 0}, Verdict.FINAL),  # the status speaks before the body
    ({"failure": TimeoutError()}, Verdict.TRANSIENT),
    ({"failure": aiohttp.ServerDisconnectedError()}, Verdict.TRANSIENT),
    ({"failure": aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "refused"))}, Verdict.TRANSIENT),
    ({"failure": aiohttp.ClientProxyConnectionError(KEY, ConnectionRefusedError(111, "refused"))},
     Verdict.TRANSIENT),
    ({"failure": aiohttp.ClientHttpProxyError(None, (), status=407, message="Proxy Authentication Required")},
     Verdict.FINAL),
    ({"failure": aiohttp.ClientHttpProxyError(None, (), status=502, message="Bad Gateway")}, Verdict.TRANSIENT),
    ({"failure": aiohttp.ClientConnectorCertificateError(KEY, ssl.SSLCertVerificationError("unknown CA"))},
     Verdict.FINAL),
])
def test_every_outcome_is_judged_in_one_place(kwargs, verdict):
    assert classify(**kwargs) is verdict


def test_errcodes_are_described_in_words():
    assert "IP" in describe_errcode(40164, "invalid ip")
    assert "quota" in describe_errcode(45047, "out of limit")
    assert describe_errcode(99999, "mystery") == "99999: mystery"
    assert "reached" in describe_errcode(None)
