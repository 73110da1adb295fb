"""Store backends for tests: memory, sqlite (a temporary file) and redis (a real Redis, each test under its
own key prefix). Redis tests skip with a reason when no Redis answers, unless KEFU_REQUIRE_REDIS=1 (CI),
where a missing Redis fails them."""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlparse

import pytest

REDIS_URL = os.environ.get("KEFU_TEST_REDIS", "redis://127.0.0.1:6379/0")


def redis_available() -> bool:
    parsed = urlparse(REDIS_URL)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=0.5):
            return True
    except OSError:
        return False


def require_redis() -> None:
    if redis_available():
        return
    if os.environ.get("KEFU_REQUIRE_REDIS") == "1":
        pytest.fail(f"KEFU_REQUIRE_REDIS=1 but no Redis answers at {REDIS_URL}")
    pytest.skip(f"no Redis at {REDIS_URL} (start redis-server, or run .ci/run which starts one)")


def redis_url(prefix: str | None = None) -> str:
    """The test Redis with a key prefix of its own, so tests never see each other's keys."""
    return f"{REDIS_URL}?prefix=kefu-test-{prefix or uuid.uuid4().hex[:12]}:"


async def flush_prefix(url: str) -> None:
    import redis.asyncio as aioredis

    prefix = url.split("prefix=", 1)[1]
    client = aioredis.from_url(url.split("?", 1)[0])
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


class Clock:
    """A clock the test moves by hand (`clock.now += 60`): the stores' `clock=` for expiry and leases."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now
