"""The lean JSON POST client (bot/apiclient.py) against scripted HTTP servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from bot.apiclient import ClientError, JsonClient

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = dict(line.split(b": ", 1) for line in lines[1:] if line)
    body = await reader.readexactly(int(headers.get(b"Content-Length", b"0")))
    return lines[0], headers, body


class Scripted:
    """A TCP server that answers each request on each connection as `script` says; counts connections."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[tuple[bytes, dict[bytes, bytes], bytes]] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.base = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        n = 0
        try:
            while True:
                self.requests.append(await read_request(reader))
                n += 1
                await self.script(reader, writer, n)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def test_keeps_one_connection_for_many_posts_and_writes_a_plain_request():
    async def script(reader, writer, n):
        writer.write(ok(b'{"errcode":0,"n":%d}' % n))

    async with Scripted(script) as server:
        client = JsonClient(server.base + "/prefix")
        for i in range(1, 6):
            status, body = await client.post(f"/cgi-bin/message/custom/send?access_token=T{i}", b'{"a":1}', 1.0)
            assert (status, body) == (200, b'{"errcode":0,"n":%d}' % i)
        await client.close()
    assert server.connections == 1
    line, headers, body = server.requests[0]
    assert line == b"POST /prefix/cgi-bin/message/custom/send?access_token=T1 HTTP/1.1"
    assert headers[b"Host"] == server.base.removeprefix("http://").encode()
    assert headers[b"Content-Type"] == b"application/json; charset=utf-8"
    assert body == b'{"a":1}'


async def test_reads_a_chunked_answer():
    async def script(reader, writer, n):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"er\r\n")
        await writer.drain()
        writer.write(b"9\r\nrcode\":0}\r\n0\r\n\r\n")

    async with Scripted(script) as server:
        client = JsonClient(server.base)
        assert await client.post("/x", b"{}", 1.0) == (200, b'{"errcode":0}')
        assert await client.post("/x", b"{}", 1.0) == (200, b'{"errcode":0}')
        await client.close()
    assert server.connections == 1


async def test_an_answer_delimited_by_closing_is_read_whole_and_the_connection_not_reused():
    async def script(reader, writer, n):
        writer.write(b"HTTP/1.0 200 OK\r\n\r\n" + b'{"errcode":0,"n":%d}' % n)
        writer.close()

    async with Scripted(script) as server:
        client = JsonClient(server.base)
        assert await client.post("/x", b"{}", 1.0) == (200, b'{"errcode":0,"n":1}')
        assert await client.post("/x", b"{}", 1.0) == (200, b'{"errcode":0,"n":1}')
        await client.close()
    assert server.connections == 2


async def test_connection_close_is_honoured():
    async def script(reader, writer, n):
        writer.write(ok(b"{}", b"Connection: close\r\n"))

    async with Scripted(script) as server:
        client = JsonClient(server.base)
        await client.post("/x", b"{}", 1.0)
        await client.post("/x", b"{}", 1.0)
        assert client.open_connections <= 1
        await client.close()
    assert server.connections == 2


async def test_a_truncated_answer_is_an_error_not_a_short_body():
    async def script(reader, writer, n):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"errcode\":0}")
        writer.close()

    async with Scripted(script) as server:
        client = JsonClient(server.base)
        with pytest.raises(ClientError, match="closed before the answer was complete"):
            await client.post("/x", b"{}", 1.0)
        await client.close()


async def test_garbage_is_an_error_and_the_connection_is_dropped():
    async def script(reader, writer, n):
        writer.write(b"this is not HTTP\r\n\r\n" if server.connections == 1 else ok(b"{}"))

    async with Scripted(script) as server:
        client = JsonClient(server.base)
        with pytest.raises(ClientError, match="bad HTTP answer"):
            await client.post("/x", b"{}", 1.0)
        assert await client.post("/x", b"{}", 1.0) == (200, b"{}")
        await client.close()
    assert server.connections == 2


async def test_a_late_answer_is_never_read_as_the_next_requests():
    """A request times out; its answer arrives afterwards. The next request must get its own answer, on a
    new connection, never the stale one."""
    release = asyncio.Event()

    async def script(reader, writer, n):
        if n == 1 and server.connections == 1:
            await release.wait()
        writer.write(ok(b'{"for":"conn%d"}' % server.connections))

    async with Scripted(script) as server:
        client = JsonClient(server.base)
        with pytest.raises(TimeoutError):
            await client.post("/x", b"{}", 0.05)
        release.set()
        assert await client.post("/x", b"{}", 1.0) == (200, b'{"for":"conn2"}')
        assert client.open_connections == 1  # the timed-out one was closed, not left open
        await client.close()
    assert server.connections == 2


async def test_a_connection_the_server_closed_while_idle_is_not_used():
    async def script(reader, writer, n):
        writer.write(ok(b"{}"))
        await writer.drain()
        writer.close()  # keep-alive promised, then closed while the client holds it idle

    async with Scripted(script) as server:
        client = JsonClient(server.base)
        await client.post("/x", b"{}", 1.0)
        for _ in range(100):  # the close reaches the client's protocol on a later loop turn
            if client.open_connections == 0:
                break
            await asyncio.sleep(0)
        assert await client.post("/x", b"{}", 1.0) == (200, b"{}")
        await client.close()
    assert server.connections == 2


async def test_idle_connections_expire(monkeypatch):
    async def script(reader, writer, n):
        writer.write(ok(b"{}"))

    async with Scripted(script) as server:
        client = JsonClient(server.base, idle_timeout=10.0)
        await client.post("/x", b"{}", 1.0)
        now = asyncio.get_running_loop().time()
        monkeypatch.setattr("bot.apiclient.time.monotonic", lambda: now + 11.0)
        await client.post("/x", b"{}", 1.0)
        await client.close()
    assert server.connections == 2


async def test_refused_connection_is_a_client_error():
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    client = JsonClient(f"http://127.0.0.1:{port}")
    with pytest.raises(ClientError, match="cannot connect"):
        await client.post("/x", b"{}", 1.0)


async def test_at_most_limit_connections_are_open():
    inside, release = 0, asyncio.Event()
    most = 0

    async def script(reader, writer, n):
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        await release.wait()
        inside -= 1
        writer.write(ok(b"{}"))

    async with Scripted(script) as server:
        client = JsonClient(server.base, limit=3)
        posts = [asyncio.create_task(client.post("/x", b"{}", 2.0)) for _ in range(8)]
        while inside < 3:
            await asyncio.sleep(0.001)
        assert client.open_connections == 3
        release.set()
        assert [await p for p in posts] == [(200, b"{}")] * 8
        await client.close()
    assert most == 3 and server.connections == 3


def test_only_http_urls():
    with pytest.raises(ValueError):
        JsonClient("ftp://example.com")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kefu test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return folder / "cert.pem", folder / "key.pem"


async def test_https_checks_the_certificate(aiohttp_server, tls_files):
    cert, key = tls_files

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"errcode": 0, "got": await request.json()})

    app = web.Application()
    app.router.add_post("/cgi-bin/message/custom/send", answer)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    server = await aiohttp_server(app, ssl=server_ctx)
    base = f"https://127.0.0.1:{server.port}"

    trusting = JsonClient(base, ssl_context=ssl.create_default_context(cafile=str(cert)))
    status, body = await trusting.post("/cgi-bin/message/custom/send?access_token=T", b'{"touser":"o"}', 2.0)
    assert status == 200 and body == b'{"errcode": 0, "got": {"touser": "o"}}'
    await trusting.close()

    untrusting = JsonClient(base)  # the system's CAs: a self-signed certificate must be refused
    with pytest.raises(ClientError, match="cannot connect"):
        await untrusting.post("/cgi-bin/message/custom/send", b"{}", 2.0)
    await untrusting.close()
