"""Sends through a real forward proxy (proxy.py in its own process) to the fake WeChat API over TLS signed by
a private CA: wechat.proxy with a user and password, HTTPS_PROXY/NO_PROXY from the environment,
wechat.ca_file, and each failure told in words — the proxy refusing the connection or the password, a
certificate that does not verify — by the API client and by `kefu send`."""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest

from bot.config import Secret, WeChatSettings
from bot.errcodes import Verdict
from bot.messages import TextReply
from bot.transport import make_session, route
from bot.wechat_api import WeChatAPI

from .conftest import FAST_RETRY
from .fakewechat import APPID, SECRET, FakeWeChat
from .helpers import write_bot
from .realproxy import forward_proxy, private_ca

PASSWORD = "pr0xy-pa55word"


@pytest.fixture
async def tls_fake(aiohttp_server, tmp_path):
    """The fake WeChat API on https://127.0.0.1:PORT with a certificate from a private CA."""
    ca_file, server_tls = private_ca(tmp_path)
    fake = FakeWeChat()
    server = await aiohttp_server(fake.app(), ssl=server_tls)
    fake.base = f"https://127.0.0.1:{server.port}"  # type: ignore[attr-defined]
    fake.ca_file = ca_file  # type: ignore[attr-defined]
    return fake


@pytest.fixture
def auth_proxy(tmp_path):
    with forward_proxy(tmp_path, f"kefu:{PASSWORD}") as port:
        yield port


def settings(fake, proxy: str = "", ca: bool = True) -> WeChatSettings:
    return WeChatSettings(appid=APPID, secret=Secret(SECRET), api_base=fake.base, proxy=Secret(proxy),
                          ca_file=fake.ca_file if ca else None)


async def send(s: WeChatSettings):
    async with make_session(s) as session:
        return await WeChatAPI(s, session, FAST_RETRY).send("o1", TextReply("您好，已发货"))


async def test_a_send_goes_through_an_authenticating_proxy_to_an_api_signed_by_a_private_ca(tls_fake, auth_proxy):
    result = await send(settings(tls_fake, f"http://kefu:{PASSWORD}@127.0.0.1:{auth_proxy}"))
    assert result.ok, result.reason
    assert tls_fake.sent == [{"touser": "o1", "msgtype": "text", "text": {"content": "您好，已发货"}}]


async def test_a_wrong_proxy_password_is_final_explained_and_never_shown(tls_fake, auth_proxy, caplog):
    caplog.set_level(logging.DEBUG)
    s = settings(tls_fake, f"http://kefu:wrong-{PASSWORD}@127.0.0.1:{auth_proxy}")
    result = await send(s)
    assert not result.ok and result.kind is Verdict.FINAL and result.attempts == 1  # no retry can fix it
    assert "407" in result.reason and "credentials" in result.reason and "wechat.proxy" in result.reason
    assert tls_fake.calls == []
    shown = result.reason + repr(result) + repr(s) + caplog.text
    assert PASSWORD not in shown
    assert repr(route(s)) == f"Route(through the proxy http://127.0.0.1:{auth_proxy})"


async def test_a_missing_password_is_a_407_too(tls_fake, auth_proxy):
    result = await send(settings(tls_fake, f"http://127.0.0.1:{auth_proxy}"))
    assert not result.ok and "407" in result.reason


async def test_without_the_ca_file_the_certificate_does_not_verify_and_that_is_final(tls_fake, auth_proxy):
    result = await send(settings(tls_fake, f"http://kefu:{PASSWORD}@127.0.0.1:{auth_proxy}", ca=False))
    assert not result.ok and result.kind is Verdict.FINAL and result.attempts == 1
    assert "did not verify" in result.reason and "wechat.ca_file" in result.reason
    assert tls_fake.calls == []


async def test_a_proxy_that_is_not_there_is_transient_and_explained(tls_fake, unused_tcp_port):
    result = await send(settings(tls_fake, f"http://kefu:{PASSWORD}@127.0.0.1:{unused_tcp_port}"))
    assert not result.ok and result.kind is Verdict.TRANSIENT and result.attempts == FAST_RETRY.attempts
    assert f"cannot connect to the proxy 127.0.0.1:{unused_tcp_port}" in result.reason
    assert PASSWORD not in result.reason


async def test_https_proxy_from_the_environment_when_wechat_proxy_is_absent(tls_fake, auth_proxy, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", f"http://kefu:wrong@127.0.0.1:{auth_proxy}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    refused = await send(settings(tls_fake))
    assert not refused.ok and "407" in refused.reason  # it went to the proxy named in the environment
    monkeypatch.setenv("HTTPS_PROXY", f"http://kefu:{PASSWORD}@127.0.0.1:{auth_proxy}")
    assert (await send(settings(tls_fake))).ok
    assert str(route(settings(tls_fake)).proxy) == f"http://127.0.0.1:{auth_proxy}"


async def test_no_proxy_sends_straight_to_the_api(tls_fake, auth_proxy, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", f"http://kefu:wrong@127.0.0.1:{auth_proxy}")  # would refuse us
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert (await send(settings(tls_fake))).ok
    assert route(settings(tls_fake)).proxy is None


async def test_wechat_proxy_wins_over_the_environment(tls_fake, auth_proxy, monkeypatch, unused_tcp_port):
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{unused_tcp_port}")  # nothing listens there
    assert (await send(settings(tls_fake, f"http://kefu:{PASSWORD}@127.0.0.1:{auth_proxy}"))).ok


async def _kefu_send(config, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    import os

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "send", "--config", str(config), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


def _config(tmp_path, fake, proxy_line: str):
    return write_bot(tmp_path, {"a.yaml": "rules: []\n"}, api_base=fake.base,
                     wechat=f"  ca_file: {fake.ca_file}\n{proxy_line}", config="allow_empty_rules: true\n")


async def test_kefu_send_says_which_proxy_it_used(tmp_path, tls_fake, auth_proxy):
    config = _config(tmp_path, tls_fake, "  proxy: ${KEFU_PROXY}\n")
    code, out, err = await _kefu_send(config, "o_user_1", "您好",
                                      env={"KEFU_PROXY": f"http://kefu:{PASSWORD}@127.0.0.1:{auth_proxy}"})
    assert code == 0, err
    assert out.strip() == f"sent to o_user_1 through the proxy http://127.0.0.1:{auth_proxy}"
    assert PASSWORD not in out + err


async def test_kefu_send_explains_a_refused_password_in_words(tmp_path, tls_fake, auth_proxy):
    config = _config(tmp_path, tls_fake, "  proxy: ${KEFU_PROXY}\n")
    code, out, err = await _kefu_send(config, "o_user_1", "您好",
                                      env={"KEFU_PROXY": f"http://kefu:nope-{PASSWORD}@127.0.0.1:{auth_proxy}"})
    assert code == 1
    assert "not sent: the proxy refused our credentials (407 Proxy Authentication Required)" in err
    assert f"through the proxy http://127.0.0.1:{auth_proxy}" in err
    assert PASSWORD not in out + err


async def test_kefu_send_explains_a_proxy_that_refuses_connections(tmp_path, tls_fake, unused_tcp_port):
    config = _config(tmp_path, tls_fake, f"  proxy: http://127.0.0.1:{unused_tcp_port}\n")
    code, _, err = await _kefu_send(config, "o_user_1", "您好")
    assert code == 1 and f"cannot connect to the proxy 127.0.0.1:{unused_tcp_port}" in err
