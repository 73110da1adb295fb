"""The console in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright): an operator logs
in, pushes arrive, hit counts change, a message is tried, a conversation opened, a refused reload read and a
failed send retried — against a real kefu server on a real port, with a fake WeChat API beside it.

Skips when Chromium or Playwright is missing, unless KEFU_REQUIRE_BROWSER=1 (CI), where that is a failure.
The tests are plain sync functions: Playwright's sync API cannot run inside an event loop, so the servers run
on a loop in a thread of their own."""

from __future__ import annotations

import asyncio
import os
import threading
import urllib.request
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.server import RUNTIME, Runtime, create_app

from .conftest import FAST_RETRY
from .fakewechat import Failure, FakeWeChat
from .helpers import USER, settings_for, signed_query, text_fields, xml_push

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ADMIN = "br0wser-admin-t0ken-5c1d"
SEND = "/cgi-bin/message/custom/send"
RULES = {
    "10-welcome.yaml": "rules:\n  - name: welcome\n    when: {event: user_enter_tempsession}\n    reply: 欢迎\n",
    "20-orders.yaml": "rules:\n"
                      "  - name: shipping\n    when: {keywords: [快递, 物流]}\n    reply: 明天到\n"
                      "  - name: human\n    when: {equals: [人工]}\n    transfer: true\n",
}
TIMEOUT = 10_000  # ms Playwright waits for a page or an element


def _missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install playwright; never `playwright install`)"
    return None


class LiveServer:
    """kefu and a fake WeChat API on real ports of 127.0.0.1, served by an event loop in a thread."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kefu-live-server", daemon=True)
        self.runners: list[web.AppRunner] = []

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 15) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _serve(self, app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.runners.append(runner)
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def _start(self) -> None:
        self.fake = FakeWeChat()
        api = await self._serve(self.fake.app())
        settings = settings_for(self.folder, RULES, api_base=api, store=f"sqlite:///{self.folder}/kefu.db",
                                config=f"admin:\n  token: {ADMIN}\n")
        app = create_app(settings, retry=FAST_RETRY, config=self.folder / "bot.yaml")
        self.runtime: Runtime = app[RUNTIME]
        self.base = await self._serve(app)

    def start(self) -> LiveServer:
        self.thread.start()
        self.run(self._start())
        return self

    def stop(self) -> None:
        for runner in reversed(self.runners):
            self.run(runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    # ---- what the test does to the bot ------------------------------------------------------------

    def push(self, text: str, user: str = USER) -> str:
        query = "&".join(f"{k}={v}" for k, v in signed_query().items())
        request = urllib.request.Request(f"{self.base}/wechat?{query}", data=xml_push(text_fields(text, user)),
                                         headers={"Content-Type": "text/xml"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.read().decode()

    def settle(self) -> None:
        """Wait until every reply is sent or failed and the conversation log (and hit counts) are written."""
        async def settle() -> None:
            await self.runtime.outbox.drain()
            await self.runtime.conversation.flush()
        self.run(settle())


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    reason = _missing()
    if reason is not None:
        if os.environ.get("KEFU_REQUIRE_BROWSER") == "1":
            pytest.fail(f"KEFU_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path).start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def page(chromium, server):
    context = chromium.new_context(base_url=server.base, locale="zh-CN")
    context.set_default_timeout(TIMEOUT)
    try:
        yield context.new_page()
    finally:
        context.close()


def log_in(page, token: str = ADMIN) -> None:
    page.goto("/admin")
    page.fill("#token", token)
    page.click("button[type=submit]")


def hits(page, rule: str) -> tuple[str, str]:
    row = page.locator(f"tr#rule-{rule}")
    return row.locator("td.today").inner_text(), row.locator("td.total").inner_text()


def test_no_access_without_the_token(page, server):
    for path in ("/admin/rules", "/admin/outbox", f"/admin/conversations?user={USER}", "/admin/rules/reload"):
        page.goto(path)
        assert page.url.startswith(f"{server.base}/admin/login"), path
        assert page.locator("#token").is_visible()
    log_in(page, "not-the-token")
    assert "Wrong token" in page.locator(".flash.bad").inner_text()
    page.goto("/admin/rules")
    assert "/admin/login" in page.url
    log_in(page)
    assert page.url == f"{server.base}/admin/rules"
    page.click("text=退出 Log out")
    page.goto("/admin/outbox")
    assert "/admin/login" in page.url
    assert ADMIN not in page.content()


def test_an_operator_follows_rules_conversations_failures_and_reloads(page, server):
    log_in(page)
    assert page.url == f"{server.base}/admin/rules"
    assert hits(page, "shipping") == ("0", "0")
    assert "never fired" in page.locator("tr#rule-shipping").inner_text()

    # pushes arrive: the counts change
    server.fake.fail(SEND, Failure(errcode=45015))  # the first reply fails: the user wrote too long ago
    assert server.push("我的快递到哪了") == "success"
    assert server.push("物流呢") == "success"
    server.push("人工")
    server.settle()
    page.reload()
    assert hits(page, "shipping") == ("2", "2") and hits(page, "human") == ("1", "1")
    assert "never fired" not in page.locator("tr#rule-shipping").inner_text()
    assert "never fired" in page.locator("tr#rule-welcome").inner_text()

    # try a message: the rule, its reply, no transfer — and nothing sent or counted
    sent_before = len(server.fake.calls_to(SEND))
    page.click("nav >> text=试一试 Try it")
    page.fill("#text", "快递什么时候到")
    page.click("#try-form button[type=submit]")
    assert page.locator("#result-rule").inner_text() == "shipping"
    assert page.locator("#result-where").inner_text() == "rules/20-orders.yaml:2"
    assert "明天到" in page.locator("#result .replies").inner_text()
    assert page.locator("#result-transfer").inner_text().startswith("否 no")
    page.check("input[name=kind][value=event]")
    page.select_option("#event", "user_enter_tempsession")
    page.click("#try-form button[type=submit]")
    assert page.locator("#result-rule").inner_text() == "welcome"
    server.settle()
    assert len(server.fake.calls_to(SEND)) == sent_before
    page.goto("/admin/rules")
    assert hits(page, "shipping") == ("2", "2") and hits(page, "welcome") == ("0", "0")

    # open the conversation: what the user asked, the rules, the replies, the failure and why, the transfer
    page.click("nav >> text=对话 Conversations")
    page.click(f"#users a:has-text('{USER}')")
    timeline = page.locator("#timeline").inner_text()
    for seen in ("我的快递到哪了", "物流呢", "shipping", "明天到", "errcode 45015", "48 小时", "转人工 Transfer"):
        assert seen in timeline, seen

    # the failed send, with its reason, retried: WeChat takes it now
    page.click("nav >> text=发送队列 Outbox")
    failed = page.locator("table#failed tbody tr[data-id]")
    assert failed.count() == 1 and "45015" in failed.inner_text()
    failed.locator("button:has-text('重试 Retry')").click()
    assert "Queued again" in page.locator("#done").inner_text()
    server.run(server.fake.wait_sent(2, timeout=5))  # the other shipping reply, and the retried one
    server.settle()
    page.goto("/admin/outbox")
    assert page.locator("table#failed tbody tr[data-id]").count() == 0
    assert [s["text"]["content"] for s in server.fake.sent] == ["明天到", "明天到"]

    # a broken edit is refused, with file:line, and the rules keep serving
    version = server.runtime.rules.current.version
    (server.folder / "rules" / "30-broken.yaml").write_text(
        "rules:\n  - name: oops\n    when: {keyword: [x]}\n    reply: y\n", encoding="utf-8")
    page.click("nav >> text=重新加载 Reload")
    page.click("button:has-text('现在重新加载 Reload now')")
    refused = page.locator("#refused").inner_text()
    assert "rules/30-broken.yaml:3" in refused and "keyword" in refused
    assert page.locator("#version").inner_text() == version
    assert server.push("快递") == "success"  # still answered by the old rules


def test_pages_work_without_javascript_and_fit_a_phone(chromium, server):
    context = chromium.new_context(base_url=server.base, java_script_enabled=False, viewport={"width": 375,
                                   "height": 740}, is_mobile=True, has_touch=True)
    context.set_default_timeout(TIMEOUT)
    page = context.new_page()
    try:
        server.push("快递")
        server.settle()
        log_in(page)
        for path in ("/admin/rules", "/admin/try", "/admin/conversations", "/admin/outbox", "/admin/rules/reload",
                     f"/admin/conversations?user={USER}"):
            page.goto(path)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 375, (path, width)  # no sideways scrolling on a phone
        page.goto("/admin/try")
        page.fill("#text", "人工")
        page.click("#try-form button[type=submit]")
        assert page.locator("#result-rule").inner_text() == "human"
        assert "是 yes" in page.locator("#result-transfer").inner_text()
    finally:
        context.close()
