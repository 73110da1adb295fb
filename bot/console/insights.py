"""The console's insights page: what users ask that no rule answers (the ten largest groups, each with a
draft rule to paste), and the charts of the period. Reports are made off the event loop and cached per
period (bot/insights/service.py)."""

from __future__ import annotations

from aiohttp import web
from markupsafe import Markup

from ..errors import StoreError
from ..insights.charts import all_charts
from ..insights.service import PERIODS, Insights, PeriodError
from ..runtime import RUNTIME
from .pages import page, render, runtime

INSIGHTS = web.AppKey("insights", Insights)


def setup(app: web.Application) -> None:
    rt = app[RUNTIME]
    insights = app[INSIGHTS] = Insights(rt.store, rt.settings, lambda: rt.rules.current, rt.clock)

    async def stop(_: web.Application) -> None:
        await insights.close()

    app.on_cleanup.append(stop)
    app.router.add_get("/admin/insights", view)


@page
async def view(request: web.Request) -> web.StreamResponse:
    rt = runtime(request)
    insights = request.app[INSIGHTS]
    asked = request.query.get("since", "7d")
    try:
        period = insights.period(asked)
    except PeriodError as exc:
        return render(request, "error.html", status=400, title="洞察 Insights", message=f"since: {exc}")
    try:
        report = await insights.report(period)
    except StoreError as exc:
        return render(request, "error.html", status=503, title="存储不可用 Store unavailable", message=str(exc))
    charts = {name: Markup(svg) for name, svg in all_charts(report).items()}  # escaped by ElementTree
    handled = sum(d.messages for d in report.days)
    return render(request, "insights.html", title="洞察 Insights", report=report, charts=charts, periods=PERIODS,
                  period=period.name, handled=handled, keep_days=rt.settings.log.keep // 86400,
                  catch_all=rt.settings.insights.catch_all)
