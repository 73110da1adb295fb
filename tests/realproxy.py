"""A real forward proxy for the tests: proxy.py (PyPI, in the test extra) in a process of its own on
127.0.0.1, optionally asking for a user and password; and a private CA whose certificate the fake WeChat API
serves over TLS, as a corporate proxy that inspects TLS or a test API would."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

STARTUP = 20.0  # seconds proxy.py may take to listen on a loaded machine


def need_proxy_py() -> None:
    """Skip when proxy.py is not installed — except under KEFU_REQUIRE_PROXY=1 (CI), where it fails."""
    if importlib.util.find_spec("proxy") is None:
        if os.environ.get("KEFU_REQUIRE_PROXY") == "1":
            pytest.fail("proxy.py is not installed (pip install -e '.[test]'), and KEFU_REQUIRE_PROXY=1")
        pytest.skip("proxy.py is not installed (pip install -e '.[test]' brings it): no real proxy to test with")


@contextlib.contextmanager
def forward_proxy(tmp_path: Path, auth: str | None = None) -> Iterator[int]:
    """Run proxy.py on 127.0.0.1 and yield its port; `auth` is "user:password" for Basic auth."""
    need_proxy_py()
    port_file = tmp_path / f"proxy-{os.urandom(4).hex()}.port"
    cmd = [sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", "0", "--port-file", str(port_file),
           "--num-workers", "1", "--num-acceptors", "1", "--log-level", "WARNING"]
    if auth:
        cmd += ["--basic-auth", auth]
    log = open(tmp_path / "proxy.log", "ab")  # noqa: SIM115 - closed below, after the process
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        yield _wait_listening(proc, port_file)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()
        log.close()


def _wait_listening(proc: subprocess.Popen[bytes], port_file: Path) -> int:
    """The proxy's port, once it accepts connections (it writes the file when it listens)."""
    deadline = time.monotonic() + STARTUP
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"proxy.py exited with {proc.returncode}")
        text = port_file.read_text().strip() if port_file.exists() else ""
        if text.isdigit():
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", int(text)), timeout=1):
                return int(text)
        time.sleep(0.05)  # polling a process we do not own for a condition, with a deadline
    raise RuntimeError("proxy.py did not start listening")


def private_ca(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A CA's certificate (PEM, for wechat.ca_file) and a server TLS context whose certificate, for 127.0.0.1,
    that CA signed."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kefu test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    ca_file = folder / "private-ca.pem"
    ca_file.write_bytes(ca.public_bytes(pem))
    chain = folder / "server.pem"
    chain.write_bytes(leaf.public_bytes(pem) + key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                                 serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(chain)
    return ca_file, server
