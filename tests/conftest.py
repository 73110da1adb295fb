from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bot.server import RUNTIME, Runtime, create_app
from bot.wechat_api import RetryPolicy

from .fakewechat import FakeWeChat
from .helpers import settings_for, signed_query

# Fast retries so that failure tests take milliseconds; the policy's shape is what is under test.
FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.005, timeout=0.5)


@pytest.fixture
async def fake(aiohttp_server) -> FakeWeChat:
    fake = FakeWeChat()
    server = await aiohttp_server(fake.app())
    fake.base = str(server.make_url("")).rstrip("/")  # type: ignore[attr-defined]
    return fake


@dataclass
class Bot:
    client: TestClient
    runtime: Runtime
    path: str = "/wechat"

    async def push(self, body: bytes, query: dict[str, str] | None = None,
                   content_type: str | None = None, **query_kw: Any):
        headers = {"Content-Type": content_type} if content_type else {}
        return await self.client.post(self.path, data=body, headers=headers,
                                      params=query if query is not None else signed_query(**query_kw))

    async def drain(self) -> None:
        """Wait until every reply is sent (or failed) and the conversation log is written."""
        assert self.runtime.outbox is not None and self.runtime.conversation is not None
        await self.runtime.outbox.drain()
        await self.runtime.conversation.flush()


BotFactory = Callable[..., Awaitable[Bot]]


@pytest.fixture
def make_bot(aiohttp_client, tmp_path, fake) -> BotFactory:
    """make_bot(rules={"a.yaml": "..."}, templates=..., config=..., credentials=True, watch=False)
    → a running Bot whose bot.yaml, rules/ and templates/ are in tmp_path."""

    async def factory(rules: dict[str, str], *, retry: RetryPolicy = FAST_RETRY, watch: bool = False,
                      signals: bool = False, **kw: Any) -> Bot:
        kw.setdefault("api_base", fake.base)
        settings = settings_for(tmp_path, rules, **kw)
        app = create_app(settings, retry=retry, config=tmp_path / "bot.yaml", watch=watch, signals=signals)
        client = await aiohttp_client(app)
        return Bot(client, app[RUNTIME], settings.server.path)

    return factory


@pytest.fixture(params=["redis", "sqlite"])
async def fleet_of(request, tmp_path, fake):
    """fleet_of(rules, n) → n running instances sharing one store (Redis, then SQLite) and the fake API."""
    from aiohttp.test_utils import TestServer

    from bot.config import load_settings

    from .helpers import write_bot
    from .stores import flush_prefix, redis_url, require_redis

    if request.param == "redis":
        require_redis()
        url = redis_url()
    else:
        url = f"sqlite:///{tmp_path}/kefu.db"
    clients: list[TestClient] = []

    async def make(rules: dict[str, str], n: int) -> list[Bot]:
        config = write_bot(tmp_path, rules, api_base=fake.base, store=url)
        bots = []
        for _ in range(n):
            app = create_app(load_settings(config), retry=FAST_RETRY)
            client = TestClient(TestServer(app))
            await client.start_server()
            clients.append(client)
            bots.append(Bot(client, app[RUNTIME]))
        return bots

    yield make
    for client in clients:
        await client.close()
    if request.param == "redis":
        await flush_prefix(url)


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def backend(request, tmp_path):
    """(store, clock, kind): one open store of each kind. The clock drives expiry and leases for memory and
    sqlite; Redis keeps its own. Two Outboxes on it are two instances of a fleet sharing a store."""
    from bot.store import open_store

    from .stores import Clock, flush_prefix, redis_url, require_redis

    clock = Clock()
    url = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/kefu.db"}.get(request.param)
    if request.param == "redis":
        require_redis()
        url = redis_url()
    store = open_store(url, clock=clock)
    await store.open()
    yield store, clock, request.param
    await store.close()
    if request.param == "redis":
        await flush_prefix(url)
