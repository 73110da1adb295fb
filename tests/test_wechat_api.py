"""The WeChat API client against the fake API: tokens, retries, failures, and secrets that never leak."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from bot.config import Secret, WeChatSettings
from bot.errcodes import Verdict
from bot.messages import TextReply
from bot.sendbody import build_send_body
from bot.wechat_api import WeChatAPI

from .conftest import FAST_RETRY
from .fakewechat import APPID, SECRET, Failure

SEND = "/cgi-bin/message/custom/send"
TOKEN_PATH = "/cgi-bin/token"


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


def make_api(fake, session, *, secret: str = SECRET, stable: bool = False, clock=None) -> WeChatAPI:
    settings = WeChatSettings(appid=APPID, secret=Secret(secret), token=Secret("t"), api_base=fake.base,
                              use_stable_token=stable)
    kwargs = {"clock": clock} if clock else {}
    return WeChatAPI(settings, session, FAST_RETRY, **kwargs)


async def test_send_fetches_a_token_and_sends(fake, session):
    api = make_api(fake, session)
    result = await api.send("o1", TextReply("你好"))
    assert result.ok and result.errcode == 0
    assert fake.sent == [{"touser": "o1", "msgtype": "text", "text": {"content": "你好"}}]
    token_call = fake.calls_to(TOKEN_PATH)[0]
    assert token_call.query == {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}


async def test_a_burst_of_sends_fetches_one_token(fake, session):
    hold = asyncio.Event()
    fake.fail(TOKEN_PATH, Failure(hold=hold))  # every send queues behind one slow refresh
    api = make_api(fake, session)
    sends = [asyncio.ensure_future(api.send(f"o{i}", TextReply("x"))) for i in range(20)]
    await fake.wait_for(lambda: len(fake.calls_to(TOKEN_PATH)) == 1)
    hold.set()
    results = await asyncio.gather(*sends)
    assert all(r.ok for r in results)
    assert len(fake.calls_to(TOKEN_PATH)) == 1
    assert len(fake.sent) == 20


async def test_token_is_cached_and_refreshed_ahead_of_expiry(fake, session):
    now = [1000.0]
    fake.expires_in = 7200
    api = make_api(fake, session, clock=lambda: now[0])
    await api.send("o1", TextReply("a"))
    now[0] += 6000  # still well inside the token's life
    await api.send("o1", TextReply("b"))
    assert len(fake.calls_to(TOKEN_PATH)) == 1
    now[0] += 1000  # within the last 5 minutes: refresh before WeChat says it expired
    await api.send("o1", TextReply("c"))
    assert len(fake.calls_to(TOKEN_PATH)) == 2
    assert [c.answer["errcode"] for c in fake.calls_to(SEND)] == [0, 0, 0]


async def test_stable_token_is_used_when_configured(fake, session):
    api = make_api(fake, session, stable=True)
    assert (await api.send("o1", TextReply("x"))).ok
    assert fake.calls_to(TOKEN_PATH) == []
    body = fake.calls_to("/cgi-bin/stable_token")[0].body
    assert body == {"grant_type": "client_credential", "appid": APPID, "secret": SECRET,
                    "force_refresh": False}


@pytest.mark.parametrize("errcode", [40001, 40014, 42001])
async def test_token_error_refreshes_once_and_retries_once(fake, session, errcode):
    api = make_api(fake, session)
    assert (await api.send("o1", TextReply("a"))).ok
    if errcode == 40001:
        fake.revoke_tokens()  # another process took the token
    else:
        fake.fail(SEND, Failure(errcode=errcode))
    result = await api.send("o1", TextReply("b"))
    assert result.ok
    assert len(fake.calls_to(TOKEN_PATH)) == 2
    assert len(fake.calls_to(SEND)) == 3


async def test_a_persistent_token_error_is_not_looped_on(fake, session):
    api = make_api(fake, session)
    fake.fail(SEND, Failure(errcode=40001), Failure(errcode=40001), Failure(errcode=40001))
    result = await api.send("o1", TextReply("x"))
    assert not result.ok and result.errcode == 40001
    assert len(fake.calls_to(SEND)) == 2
    assert len(fake.calls_to(TOKEN_PATH)) == 2


@pytest.mark.parametrize("failure", [
    Failure(errcode=-1), Failure(http=500), Failure(http=502), Failure(drop=True), Failure(delay=2.0),
], ids=["errcode-1", "http500", "http502", "drop", "timeout"])
async def test_transient_failures_are_retried(fake, session, failure):
    api = make_api(fake, session)
    fake.fail(SEND, failure, failure)
    result = await api.send("o1", TextReply("x"))
    assert result.ok
    assert result.attempts == 3
    assert len(fake.calls_to(SEND)) == 3


async def test_retries_are_bounded(fake, session):
    api = make_api(fake, session)
    fake.fail(SEND, *[Failure(errcode=-1)] * 10)
    result = await api.send("o1", TextReply("x"))
    assert not result.ok and result.errcode == -1
    assert len(fake.calls_to(SEND)) == FAST_RETRY.attempts


async def test_http_errors_beyond_retries_fail_cleanly(fake, session):
    api = make_api(fake, session)
    fake.fail(SEND, *[Failure(http=503)] * 5)
    result = await api.send("o1", TextReply("x"))
    assert not result.ok and result.errcode is None and "503" in result.errmsg
    assert result.kind is Verdict.TRANSIENT and result.attempts == FAST_RETRY.attempts


@pytest.mark.parametrize("status", [301, 400, 403, 404])
async def test_other_http_statuses_are_final_and_not_retried(fake, session, status):
    api = make_api(fake, session)
    fake.fail(SEND, Failure(http=status))
    result = await api.send("o1", TextReply("x"))
    assert not result.ok and result.kind is Verdict.FINAL and f"HTTP {status}" in result.reason
    assert result.attempts == 1 and len(fake.calls_to(SEND)) == 1


async def test_a_send_that_never_got_a_token_reports_the_attempts_made(fake, session):
    api = make_api(fake, session, secret="not-the-secret")
    result = await api.send("o1", TextReply("x"))
    assert result.attempts == 1 and result.kind is Verdict.FINAL  # one token call, no send: not "3 attempts"


@pytest.mark.parametrize("errcode", [45015, 45047, 43004, 40003, 48001, 45009, 45002])
async def test_final_errcodes_are_not_retried(fake, session, errcode):
    api = make_api(fake, session)
    fake.fail(SEND, Failure(errcode=errcode))
    result = await api.send("o1", TextReply("x"))
    assert not result.ok and result.errcode == errcode
    assert len(fake.calls_to(SEND)) == 1


async def test_wrong_secret_fails_without_sending(fake, session):
    api = make_api(fake, session, secret="not-the-secret")
    result = await api.send("o1", TextReply("x"))
    assert not result.ok and result.errcode == 40125
    assert "appsecret" in result.reason
    assert fake.calls_to(SEND) == []


async def test_unreachable_api_fails_cleanly(session, unused_tcp_port):
    settings = WeChatSettings(appid=APPID, secret=Secret(SECRET), api_base=f"http://127.0.0.1:{unused_tcp_port}")
    api = WeChatAPI(settings, session, FAST_RETRY)
    result = await api.send("o1", TextReply("x"))
    assert not result.ok and result.errcode is None


async def test_secrets_and_tokens_never_reach_logs_or_reprs(fake, session, caplog):
    caplog.set_level(logging.DEBUG)
    api = make_api(fake, session)
    fake.fail(TOKEN_PATH, Failure(drop=True), Failure(http=500))
    fake.fail(SEND, Failure(errcode=40001), Failure(drop=True), Failure(errcode=-1))
    assert (await api.send("o1", TextReply("x"))).ok
    tokens = {c.answer["access_token"] for c in fake.calls_to(TOKEN_PATH)
              if isinstance(c.answer, dict) and "access_token" in c.answer}
    assert tokens
    # aiohttp.access lines are the fake WeChat server's own access log, not kefu's
    text = "\n".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")
    text += repr(api) + repr(api.settings) + repr(api.tokens.__dict__.keys())
    assert SECRET not in text
    for token in tokens:
        assert token not in text


def test_send_body_is_compact_utf8():
    body = build_send_body("o1", TextReply("你好 😀"))
    assert body == '{"touser":"o1","msgtype":"text","text":{"content":"你好 😀"}}'.encode()


async def test_a_refused_token_fetch_is_remembered_for_a_while(fake, session):
    now = [1000.0]
    api = make_api(fake, session, secret="wrong", clock=lambda: now[0])
    results = [await api.send("o1", TextReply("x")) for _ in range(20)]
    assert all(r.errcode == 40125 for r in results)
    assert len(fake.calls_to(TOKEN_PATH)) == 1  # the token API has a daily quota: don't hammer it
    now[0] += 31
    await api.send("o1", TextReply("x"))
    assert len(fake.calls_to(TOKEN_PATH)) == 2


async def test_a_transient_token_failure_is_not_remembered(fake, session):
    api = make_api(fake, session)
    fake.fail(TOKEN_PATH, *[Failure(errcode=-1)] * FAST_RETRY.attempts)
    assert not (await api.send("o1", TextReply("x"))).ok
    assert (await api.send("o1", TextReply("y"))).ok


class ScriptedTransport:
    """The transport seam: a test answers (or fails) each call itself, no HTTP at all."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls: list[tuple[str, str]] = []

    async def request(self, method, url, *, params=None, data=None, timeout):
        self.calls.append((method, url))
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


async def test_any_transport_can_stand_in_for_the_session():
    token = (200, b'{"access_token": "T", "expires_in": 7200}')
    transport = ScriptedTransport(token, (200, b'{"errcode": 0, "errmsg": "ok"}'))
    settings = WeChatSettings(appid=APPID, secret=Secret(SECRET), api_base="https://api.example")
    result = await WeChatAPI(settings, transport=transport, retry=FAST_RETRY).send("o1", TextReply("x"))
    assert result.ok and transport.calls == [("GET", "https://api.example/cgi-bin/token"),
                                             ("POST", "https://api.example/cgi-bin/message/custom/send")]


async def test_a_proxy_refusing_our_credentials_is_final_and_said_in_words():
    refused = aiohttp.ClientHttpProxyError(None, (), status=407, message="Proxy Authentication Required")
    transport = ScriptedTransport(refused)
    settings = WeChatSettings(appid=APPID, secret=Secret(SECRET), api_base="https://api.example")
    result = await WeChatAPI(settings, transport=transport, retry=FAST_RETRY).send("o1", TextReply("x"))
    assert not result.ok and result.kind is Verdict.FINAL and result.attempts == 1 and len(transport.calls) == 1
    assert "proxy refused our credentials" in result.reason
