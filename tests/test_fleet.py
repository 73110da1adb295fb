"""Several instances of kefu on one store — Redis for a fleet, SQLite for several processes on one host:
retries answered once, the access token refreshed once, nothing sent twice."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.config import load_settings
from bot.server import RUNTIME, create_app

from .conftest import FAST_RETRY, Bot
from .fakewechat import Failure
from .helpers import event_fields, json_push, signed_query, text_fields, write_bot, xml_push

RULES = {"a.yaml": """
rules:
  - name: order
    when: {regex: '订单\\D*(?P<no>\\d+)'}
    reply:
      - text: 查询订单 {{ match.no }}
      - text: 请稍候
  - name: welcome
    when: {event: user_enter_tempsession}
    reply: 欢迎
  - name: human
    when: {equals: [人工]}
    transfer: true
"""}


@pytest.fixture
def fleet(fleet_of):
    """make(n) → n running instances sharing one store (Redis, then SQLite) and the fake WeChat API."""
    return lambda n: fleet_of(RULES, n)


async def drain_all(bots) -> None:
    for bot in bots:
        await bot.drain()


async def test_a_push_retried_to_each_instance_sends_once(fleet, fake):
    bots = await fleet(3)
    hold = asyncio.Event()
    fake.fail("/cgi-bin/token", Failure(hold=hold))
    body, query = xml_push(text_fields("订单 12345", msg_id=777)), signed_query()
    answers = [await (await bot.push(body, query=query)).text() for bot in bots]
    assert answers == ["success"] * 3
    hold.set()
    await fake.wait_sent(2)
    await drain_all(bots)
    assert [s["text"]["content"] for s in fake.sent] == ["查询订单 12345", "请稍候"]


async def test_a_transfer_is_the_same_answer_on_every_instance(fleet, fake):
    bots = await fleet(2)
    body = json_push(text_fields("人工", msg_id=778))
    first = await (await bots[0].push(body, content_type="application/json")).text()
    second = await (await bots[1].push(body, content_type="application/json")).text()
    assert first == second and "transfer_customer_service" in first


async def test_concurrent_deliveries_to_different_instances_decide_once(fleet, fake):
    bots = await fleet(3)
    body = json_push(event_fields("user_enter_tempsession", SessionFrom="x"))
    answers = await asyncio.gather(*[bot.push(body, content_type="application/json") for bot in bots])
    assert [a.status for a in answers] == [200] * 3
    await fake.wait_sent(1)
    await drain_all(bots)
    assert len(fake.sent) == 1


async def test_a_burst_of_sends_refreshes_the_token_once(fleet, fake):
    bots = await fleet(3)
    hold = asyncio.Event()
    fake.fail("/cgi-bin/token", Failure(hold=hold))
    for i in range(30):
        await bots[i % 3].push(xml_push(text_fields(f"订单 {i}", user=f"user{i}", msg_id=1000 + i)))
    await fake.wait_for(lambda: len(fake.calls_to("/cgi-bin/token")) >= 1)
    hold.set()
    await fake.wait_sent(60, timeout=20)
    await drain_all(bots)
    assert len(fake.calls_to("/cgi-bin/token")) == 1
    assert len(fake.sent) == 60


async def test_a_40001_from_another_instances_refresh_rereads_the_shared_token(fleet, fake):
    bots = await fleet(2)
    a, b = (bot.runtime for bot in bots)
    assert (await a.api.send("o1", _text("a"))).ok  # A fetches the first token and shares it
    fake.revoke_tokens()  # as if B (or anyone) fetched a new token: A's is now invalid
    b.api.tokens.invalidate(await b.api.tokens.get())  # B learns the shared token is bad…
    assert (await b.api.send("o2", _text("b"))).ok  # …fetches a new one and shares it
    assert len(fake.calls_to("/cgi-bin/token")) == 2
    assert (await a.api.send("o1", _text("c"))).ok  # A gets 40001, re-reads the store, takes B's token
    assert len(fake.calls_to("/cgi-bin/token")) == 2  # no third fetch
    assert [c.answer["errcode"] for c in fake.calls_to("/cgi-bin/message/custom/send")] == [0, 0, 40001, 0]


async def test_replies_left_by_a_stopped_instance_are_sent_by_another(fleet, fake):
    """An instance stops with replies pending (WeChat was down); another instance picks them up once the
    first's lease on the user has expired."""
    first, second = await fleet(2)
    first.runtime.outbox.settings = first.runtime.outbox.settings.__class__(lease=1)
    fake.fail("/cgi-bin/token", Failure(hold=asyncio.Event()))  # the first instance never gets a token
    await first.push(xml_push(text_fields("订单 555", msg_id=5550)))
    await first.runtime.outbox.close(timeout=0.01)  # stopped, replies pending, its lease left to expire
    assert (await first.runtime.store.outbox_counts())["pending"] == 2
    deadline = asyncio.get_running_loop().time() + 10
    while (await second.runtime.store.outbox_counts())["pending"]:  # until the first's 1 s lease expires
        assert asyncio.get_running_loop().time() < deadline, "the pending replies were never picked up"
        await second.runtime.outbox.scan()
        await second.drain()
        await asyncio.sleep(0.1)  # time must pass for the lease to expire: nothing else to wait on
    assert [s["text"]["content"] for s in fake.sent] == ["查询订单 555", "请稍候"]


def _text(content: str):
    from bot.messages import TextReply

    return TextReply(content)


async def test_an_unreachable_redis_still_answers(tmp_path, fake, caplog, unused_tcp_port):
    caplog.set_level(logging.INFO)
    config = write_bot(tmp_path, RULES, api_base=fake.base, store=f"redis://127.0.0.1:{unused_tcp_port}/0")
    app = create_app(load_settings(config), retry=FAST_RETRY)
    async with TestClient(TestServer(app)) as client:
        bot = Bot(client, app[RUNTIME])
        for i in range(5):
            resp = await bot.push(xml_push(text_fields("订单 1", msg_id=9000 + i)))
            assert resp.status == 200 and "transfer_customer_service" in await resp.text()
        resp = await bot.push(xml_push(event_fields("user_enter_tempsession")))
        assert await resp.text() == "success"
        ready = await client.get("/readyz")
        assert ready.status == 503 and (await ready.json())["store"] == "unreachable"
    outages = [r for r in caplog.records if "store unreachable" in r.getMessage()]
    assert len(outages) == 1  # once per incident, not once per push
    assert fake.sent == []
