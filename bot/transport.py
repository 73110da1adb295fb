"""The road to WeChat: the app's one aiohttp ClientSession, its proxy and its CA, and failures told in words.

- `make_session(settings)`: the process's ClientSession for every call to WeChat. `wechat.ca_file` adds a
  private CA (a corporate proxy that inspects TLS, a test API) to the system's; TLS verification is never
  turned off.
- `route(settings)`: `wechat.proxy` (http://user:pass@host:3128) sends every call through a forward proxy;
  without it the standard HTTPS_PROXY / HTTP_PROXY / NO_PROXY environment is followed. The password only
  ever becomes a Proxy-Authorization header, never part of a URL that an error message could print.
- `Transport`: the seam the API client calls through (`WeChatAPI(transport=…)`); tests can put anything
  that answers `request()` there. `SessionTransport` (the session, by the route) is the real one.
- `explain(failure)`: a transport failure in words an operator can act on (`kefu send` prints it, the
  outbox logs it): the proxy refused the connection or the credentials, a certificate did not verify, …
"""

from __future__ import annotations

import re
import ssl
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from .config import WeChatSettings, redact_url

CONNECTIONS = 100  # connections to WeChat (or the proxy) at once: aiohttp's default
PROXY_AUTH = ("the proxy refused our credentials (407 Proxy Authentication Required): check the user and password "
              "in wechat.proxy or HTTPS_PROXY")


class Transport(Protocol):
    async def request(self, method: str, url: str, *, params: Mapping[str, str] | None = None,
                      data: bytes | aiohttp.FormData | None = None, timeout: float) -> tuple[int, bytes]:
        """The answer's status and body. Raises TimeoutError, aiohttp.ClientError or OSError when no answer
        came."""
        ...


class Route:
    """Where calls to WeChat go: straight there, or through a proxy (its URL without credentials, and the
    Proxy-Authorization header they make). Never shows the header."""

    __slots__ = ("proxy", "headers")

    def __init__(self, proxy: URL | None = None, headers: Mapping[str, str] | None = None):
        self.proxy = proxy
        self.headers = headers

    def __repr__(self) -> str:
        return f"Route({self.shown()})"

    def shown(self) -> str:
        return f"through the proxy {self.proxy}" if self.proxy is not None else "with no proxy"


def route(settings: WeChatSettings) -> Route:
    """wechat.proxy; else the environment's proxy for api_base's scheme (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY)
    unless NO_PROXY names its host — as curl, requests and aiohttp's trust_env read them."""
    raw = settings.proxy.reveal() if settings.proxy else _env_proxy(settings.api_base)
    if not raw:
        return Route()
    url = URL(raw if "://" in raw else f"http://{raw}")
    headers = None
    if url.user is not None:
        headers = {"Proxy-Authorization": aiohttp.encode_basic_auth(url.user, url.password or "")}
    return Route(url.with_user(None), headers)


def _env_proxy(api_base: str) -> str | None:
    parts = urlsplit(api_base)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")


class SessionTransport:
    """Calls through an aiohttp ClientSession (the app's, from make_session), by `route`."""

    def __init__(self, session: aiohttp.ClientSession, route: Route | None = None):
        self.session = session
        self.route = route or Route()

    def __repr__(self) -> str:
        return f"SessionTransport({self.route.shown()})"

    async def request(self, method: str, url: str, *, params: Mapping[str, str] | None = None,
                      data: bytes | aiohttp.FormData | None = None, timeout: float) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json; charset=utf-8"} if isinstance(data, bytes) else None
        async with self.session.request(method, url, params=params, data=data, headers=headers,
                                        proxy=self.route.proxy, proxy_headers=self.route.headers,
                                        allow_redirects=False,  # WeChat never redirects: a 3xx is an error
                                        timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            return resp.status, await resp.read()


def ssl_context(settings: WeChatSettings) -> ssl.SSLContext:
    """The system's CAs, plus wechat.ca_file's. Verification on, always."""
    context = ssl.create_default_context()
    if settings.ca_file is not None:
        context.load_verify_locations(cafile=str(settings.ca_file))
    return context


def proxy_problem(value: str) -> str | None:
    """What is wrong with a wechat.proxy value, if anything (never showing its password)."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if parts and parts.scheme in ("http", "https") and parts.hostname and parts.path in ("", "/"):
        return None
    return f"must be a URL like http://user:password@host:3128, not '{redact_url(value)}'"


def ca_file_problem(path: Path) -> str | None:
    """What is wrong with a wechat.ca_file, if anything."""
    try:
        ssl.create_default_context().load_verify_locations(cafile=str(path))
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        return f"{path} must be a file of PEM certificates ({getattr(exc, 'strerror', None) or exc})"
    return None


def make_session(settings: WeChatSettings, limit: int = CONNECTIONS) -> aiohttp.ClientSession:
    """The ClientSession every call to WeChat goes through (the proxy is chosen per call: see Route)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit, ssl=ssl_context(settings)))


def explain(failure: BaseException, timeout: float | None = None) -> str:
    """A transport failure in words, with what to check. Never contains a password or a query string."""
    if isinstance(failure, aiohttp.ClientHttpProxyError):
        if failure.status == 407:
            return PROXY_AUTH
        return f"the proxy would not open a tunnel to WeChat ({failure.status} {failure.message})"
    if isinstance(failure, aiohttp.ClientProxyConnectionError):
        return (f"cannot connect to the proxy {failure.host}:{failure.port} ({_reason(failure)}): is it running, "
                "and is wechat.proxy or HTTPS_PROXY right?")
    if isinstance(failure, aiohttp.ClientConnectorCertificateError):
        why = getattr(failure.certificate_error, "verify_message", None) or failure.certificate_error
        return (f"the TLS certificate of {failure.host} did not verify ({why}): if a proxy or a private CA "
                "signs it, set wechat.ca_file to that CA's certificate (PEM)")
    if isinstance(failure, aiohttp.ClientConnectorSSLError | ssl.SSLError):
        return f"the TLS handshake failed ({_reason(failure)})"
    if isinstance(failure, aiohttp.ClientConnectorError):
        return f"cannot connect to {failure.host}:{failure.port} ({_reason(failure)})"
    if isinstance(failure, TimeoutError):
        return f"no answer within {timeout:g} s" if timeout else "no answer in time"
    if isinstance(failure, aiohttp.ServerDisconnectedError):
        return "the connection was closed before the answer came"
    text = str(failure)
    return f"{type(failure).__name__}: {_no_query(text)}" if text else type(failure).__name__


def explain_status(status: int) -> str:
    if status == 407:  # a plain-HTTP API through a proxy: the proxy answers the request itself
        return PROXY_AUTH
    return f"HTTP {status}"


def _reason(failure: BaseException) -> str:
    error = getattr(failure, "os_error", None) or failure
    return getattr(error, "strerror", None) or _no_query(str(error)) or type(error).__name__


def _no_query(text: str) -> str:
    """An exception's text without query strings (they carry the access_token and the secret) or URL
    passwords."""
    return redact_url(_QUERY.sub("?…", text))


_QUERY = re.compile(r"\?[^\s'\"<>)]*")
