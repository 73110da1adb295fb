"""A lean HTTP/1.1 client for the one request kefu makes per reply: a JSON POST to WeChat's API host.

aiohttp's ClientSession is general: per request it builds a URL object, a request and a response object,
headers multidicts, cookie handling, tracing hooks and a timer context — measured here at about 190 µs of CPU
per send, four times what the inbound side spends on a push. A reply's send is always the same shape: one
host, a POST of a small JSON body, a small JSON answer. This client does only that, over a pool of keep-alive
connections, with the request written as one bytes object and the answer parsed by httptools (llhttp, the
parser uvicorn uses): about 40 µs per send. Everything else (the token GET, media uploads) stays on aiohttp.

What it guarantees: an answer is only ever read from the connection its request was written to; a
connection that timed out, broke, answered `Connection: close` or sent anything unasked for is closed, never
reused; idle connections are dropped after `idle_timeout`; at most `limit` connections are open.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from urllib.parse import urlsplit

import httptools

from .slots import Slots

IDLE_TIMEOUT = 15.0  # seconds an idle keep-alive connection is kept (aiohttp's default too)


def _time_out(waiter: asyncio.Future[tuple[int, bytes, bool]]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class ClientError(Exception):
    """The request got no complete HTTP answer: refused or broken connection, bad answer, timeout."""


class _Connection(asyncio.Protocol):
    __slots__ = ("transport", "parser", "waiter", "body", "closed", "delimited", "used", "has_headers")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, bytes, bool]] | None = None
        self.body: list[bytes] = []
        self.closed = False
        self.has_headers = False  # the current answer's headers are complete
        self.delimited = False  # the current answer has a Content-Length or chunked body (not "until close")
        self.used = 0.0  # monotonic time the connection last finished an exchange

    # ---- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # nothing was asked: the connection is out of step, never reuse it
            self.abort()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ClientError(f"bad HTTP answer: {exc}"))
            self.abort()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and self.has_headers and not self.delimited:
            self.on_message_complete(closing=True)  # an answer whose body runs until the connection closes
            return
        self._fail(ClientError("the connection closed before the answer was complete"))

    # ---- httptools callbacks

    def on_message_begin(self) -> None:
        self.body = []
        self.has_headers = self.delimited = False

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length" or lowered == b"transfer-encoding":
            self.delimited = True

    def on_headers_complete(self) -> None:
        self.has_headers = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self, closing: bool = False) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is None or waiter.done():
            self.abort()
            return
        keep = not closing and not self.closed and self.parser.should_keep_alive()
        waiter.set_result((self.parser.get_status_code(), b"".join(self.body), keep))

    # ----

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class JsonClient:
    """POSTs to one HTTP(S) origin (`base`, e.g. https://api.weixin.qq.com) over pooled connections."""

    def __init__(self, base: str, *, limit: int = 100, idle_timeout: float = IDLE_TIMEOUT,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
        self.prefix = parts.path.rstrip("/")
        default_port = self.port == (443 if parts.scheme == "https" else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._head_end = (f" HTTP/1.1\r\nHost: {host if default_port else f'{host}:{self.port}'}\r\n"
                          f"User-Agent: kefu\r\nAccept: application/json\r\n"
                          f"Content-Type: application/json; charset=utf-8\r\nContent-Length: ").encode("ascii")
        self.idle_timeout = idle_timeout
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._slots = Slots(limit)
        self._closed = False

    def __repr__(self) -> str:
        return f"JsonClient({self.host}:{self.port}, open={len(self._open)})"

    async def post(self, path: str, body: bytes, timeout: float) -> tuple[int, bytes]:
        """POST `body` (JSON) to `path` (with its query); the answer's status and body. Raises ClientError
        (TimeoutError after `timeout` seconds in all)."""
        if self._closed:
            raise ClientError("the client is closed")
        request = b"".join((b"POST ", (self.prefix + path).encode("ascii"), self._head_end,
                            str(len(body)).encode("ascii"), b"\r\n\r\n", body))
        if not self._slots.take_now():
            await self._slots.take()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            conn = self._reusable()
            if conn is None:  # a new connection (rare: they are kept alive)
                async with asyncio.timeout_at(deadline):
                    conn = await self._connect()
            conn.waiter = waiter = loop.create_future()
            timer = loop.call_at(deadline, _time_out, waiter)  # cheaper than a timeout context per send
            try:
                conn.transport.write(request)  # type: ignore[union-attr]
                status, answer, keep = await waiter
            except BaseException:
                conn.waiter = None
                self._drop(conn, abort=True)  # its answer may still come: never read it as another's
                raise
            finally:
                timer.cancel()
            if keep and not self._closed:
                conn.used = time.monotonic()
                self._idle.append(conn)
            else:
                self._drop(conn)
            return status, answer
        finally:
            self._slots.give()

    def _reusable(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the likeliest to still be open
            if not conn.closed and now - conn.used < self.idle_timeout:
                return conn
            self._drop(conn)
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(_Connection, self.host, self.port, ssl=self.ssl,
                                                   server_hostname=self.host if self.ssl else None)
        except OSError as exc:  # refused, unreachable, TLS failure (ssl.SSLError is an OSError)
            raise ClientError(f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from None
        self._open.add(conn)
        return conn

    def _drop(self, conn: _Connection, abort: bool = False) -> None:
        self._open.discard(conn)
        if conn.closed:
            return
        if abort:
            conn.abort()
        else:
            conn.closed = True
            conn.transport.close()  # type: ignore[union-attr]

    @property
    def open_connections(self) -> int:
        return sum(1 for conn in self._open if not conn.closed)

    async def close(self) -> None:
        self._closed = True
        self._idle.clear()
        for conn in list(self._open):
            self._drop(conn)
