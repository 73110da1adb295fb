"""The insights page in a real headless Chromium (the console's browser-test set-up, tests/test_console_browser.py):
groups of what no rule answered, a draft opened without JavaScript, and the four charts rendered — a
screenshot of each goes to $KEFU_ARTEFACTS (or the test's temporary folder)."""

from __future__ import annotations

import os
from pathlib import Path

from .test_console_browser import TIMEOUT, chromium, log_in, page, server  # noqa: F401 - fixtures

CHARTS = ("hourly", "rates", "rules", "heat")


def artefacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("KEFU_ARTEFACTS", tmp_path)) / "insights"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_an_operator_sees_what_no_rule_answers_and_the_charts(page, server, tmp_path):  # noqa: F811
    for i, text in enumerate(["发票怎么开", "能开发票吗？", "发票怎么开", "请问怎么开发票", "能便宜点吗", "便宜点呗"]):
        server.push(text, user=f"o_browser_user_{i}")
    server.push("我的快递到哪了", user="o_browser_user_9")
    server.settle()
    log_in(page)
    page.click("nav >> text=洞察 Insights")
    first = page.locator("#groups li.group").first
    assert first.get_attribute("data-key") == "发票" and first.locator(".count").inner_text() == "4"
    assert "快递到哪了" not in page.locator("#groups").inner_text()  # a rule answered it
    assert not first.locator("pre.yaml.rule").is_visible()
    first.locator("summary").click()
    assert "keywords:" in first.locator("pre.yaml.rule").inner_text()
    assert "say: 发票怎么开" in first.locator("pre.yaml.test").inner_text()
    folder = artefacts(tmp_path)
    for name in CHARTS:
        chart = page.locator(f"#chart-{name}")
        box = chart.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 100, name
        shot = folder / f"chart-{name}.png"
        chart.screenshot(path=str(shot))
        assert shot.stat().st_size > 2000, name  # an image with something drawn in it
    assert page.locator("#chart-hourly rect").count() >= 1  # the hour's bar
    assert page.locator("#chart-heat rect").count() == 7 * 24
    assert page.locator("#chart-rules polyline, #chart-rules circle").count() >= 1
    page.screenshot(path=str(folder / "insights-page.png"), full_page=True)


def test_the_insights_page_works_without_javascript_on_a_phone(chromium, server):  # noqa: F811
    context = chromium.new_context(base_url=server.base, java_script_enabled=False, viewport={"width": 375,
                                   "height": 740}, is_mobile=True, has_touch=True)
    context.set_default_timeout(TIMEOUT)
    phone = context.new_page()
    try:
        server.push("包邮吗", user="o_phone_user")
        server.settle()
        log_in(phone)
        phone.goto("/admin/insights?since=1d")
        assert phone.locator("#groups li.group").first.get_attribute("data-key") == "包邮"
        phone.locator("#groups summary").first.click()  # <details> opens without a script
        assert phone.locator("pre.yaml.rule").first.is_visible()
        assert phone.evaluate("document.documentElement.scrollWidth") <= 375  # charts scale down
        for name in CHARTS:
            assert phone.locator(f"#chart-{name}").is_visible(), name
    finally:
        context.close()
