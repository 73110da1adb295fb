"""The insights' charts as SVG, drawn on the server (pure): no JavaScript, no external service, no fonts to
fetch. Built with ElementTree, so every label (rule names, days) is escaped by a serializer. Presentation
attributes only (no `style`), so the console's Content-Security-Policy lets them show inline. Each mark has a
<title>: the browser shows its number on hover."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from .figures import WEEKDAYS, Report

WIDTH, HEIGHT = 760, 240
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 16, 34  # the plot's margins
GRID, TEXT, MUTED = "#dde2e6", "#1d2329", "#66707a"
BAR, UNANSWERED, TRANSFER = "#07c160", "#c62828", "#9a6200"
PALETTE = ("#0b63c5", "#07c160", "#c62828", "#9a6200", "#6a1b9a", "#00838f")
FONT = "sans-serif"


def _svg(name: str, label: str, height: int = HEIGHT) -> ET.Element:
    svg = ET.Element("svg", {"xmlns": "http://www.w3.org/2000/svg", "viewBox": f"0 0 {WIDTH} {height}",
                             "width": "100%", "role": "img", "aria-label": label, "id": f"chart-{name}",
                             "class": "chart", "font-family": FONT, "font-size": "11"})
    ET.SubElement(svg, "title").text = label
    return svg


def _add(parent: ET.Element, tag: str, text: str | None = None, **attrs: object) -> ET.Element:
    element = ET.SubElement(parent, tag, {k.rstrip("_").replace("_", "-"): str(v) for k, v in attrs.items()})
    if text is not None:
        element.text = text
    return element


def _tip(element: ET.Element, text: str) -> None:
    ET.SubElement(element, "title").text = text


def _done(svg: ET.Element) -> str:
    return ET.tostring(svg, encoding="unicode")


def _nice(top: float) -> float:
    """A round axis maximum at or above `top`."""
    if top <= 0:
        return 1
    step = 10 ** math.floor(math.log10(top))
    for factor in (1, 2, 2.5, 5, 10):
        if factor * step >= top:
            return factor * step
    return 10 * step  # pragma: no cover


def _axes(svg: ET.Element, top: float, labels: Sequence[tuple[float, str]], percent: bool = False) -> None:
    """Horizontal grid lines at 0, half and the top, and labels along x at the given positions."""
    bottom = HEIGHT - BOTTOM
    for fraction in (0, 0.5, 1):
        y = bottom - fraction * (bottom - TOP)
        _add(svg, "line", x1=LEFT, x2=WIDTH - RIGHT, y1=f"{y:.1f}", y2=f"{y:.1f}", stroke=GRID)
        value = top * fraction
        text = f"{value * 100:.0f}%" if percent else (f"{value:.0f}" if value >= 10 or value == 0 else f"{value:g}")
        _add(svg, "text", text, x=LEFT - 6, y=f"{y + 4:.1f}", text_anchor="end", fill=MUTED)
    for x, text in labels:
        _add(svg, "text", text, x=f"{x:.1f}", y=HEIGHT - BOTTOM + 16, text_anchor="middle", fill=MUTED)


def _empty(svg: ET.Element) -> str:
    _add(svg, "text", "这段时间没有数据 No data in this period", x=WIDTH / 2, y=HEIGHT / 2, text_anchor="middle",
         fill=MUTED, font_size=14)
    return _done(svg)


def _every(count: int, most: int = 10) -> int:
    return max(1, math.ceil(count / most))


def hourly(report: Report) -> str:
    """Bars: user messages per hour over the period."""
    svg = _svg("hourly", "每小时消息数 Messages per hour")
    if not report.messages:
        return _empty(svg)
    top = _nice(max(n for _, n in report.hourly))
    width = (WIDTH - LEFT - RIGHT) / max(1, len(report.hourly))
    bottom, span = HEIGHT - BOTTOM, HEIGHT - BOTTOM - TOP
    midnights = [(i, hour) for i, (hour, _) in enumerate(report.hourly) if hour.endswith(" 00")] \
        or [(0, report.hourly[0][0])]
    step = _every(len(midnights))
    _axes(svg, top, [(LEFT + i * width, hour[5:10]) for i, hour in midnights[::step]])
    for i, (hour, n) in enumerate(report.hourly):
        if n:
            tall = span * n / top
            bar = _add(svg, "rect", x=f"{LEFT + i * width:.2f}", y=f"{bottom - tall:.2f}",
                       width=f"{max(width - 0.5, 0.8):.2f}", height=f"{tall:.2f}", fill=BAR)
            _tip(bar, f"{hour}:00  {n}")
    return _done(svg)


def _lines(svg: ET.Element, days: Sequence[str], series: Sequence[tuple[str, str, Sequence[float]]],
           top: float, percent: bool, dashed: int | None = None) -> None:
    """A line per series (series number `dashed` dashed, so that equal values still show both)."""
    bottom, span = HEIGHT - BOTTOM, HEIGHT - BOTTOM - TOP
    gap = (WIDTH - LEFT - RIGHT) / max(1, len(days))
    xs = [LEFT + gap * (i + 0.5) for i in range(len(days))]
    step = _every(len(days))
    _axes(svg, top, [(xs[i], days[i][5:]) for i in range(0, len(days), step)], percent)
    for n, (name, color, values) in enumerate(series):
        points = [(xs[i], bottom - span * v / top) for i, v in enumerate(values)]
        if len(points) > 1:
            line = _add(svg, "polyline", points=" ".join(f"{x:.1f},{y:.1f}" for x, y in points), fill="none",
                        stroke=color, stroke_width=2)
            if n == dashed:
                line.set("stroke-dasharray", "6 4")
        for i, (x, y) in enumerate(points):
            dot = _add(svg, "circle", cx=f"{x:.1f}", cy=f"{y:.1f}", r=3, fill=color)
            _tip(dot, f"{name} {days[i]}: " + (f"{values[i] * 100:.1f}%" if percent else f"{values[i]:g}"))
        room = min(170.0, (WIDTH - LEFT - RIGHT) / len(series))  # the legend's width per series
        short = name if len(name) * 7 <= room - 24 else name[:max(1, int((room - 24) / 7) - 1)] + "…"
        _add(svg, "rect", x=f"{LEFT + 8 + room * n:.1f}", y=2, width=10, height=10, fill=color)
        _add(svg, "text", short, x=f"{LEFT + 22 + room * n:.1f}", y=11, fill=TEXT)


def rates(report: Report) -> str:
    """Lines: the share of user messages that reached the fallback, and that were transferred, per day."""
    svg = _svg("rates", "每天未回答率和转人工率 Unanswered and transfer rate per day")
    if not any(d.messages for d in report.days):
        return _empty(svg)
    series = [("未回答 unanswered", UNANSWERED, [d.unanswered_rate for d in report.days]),
              ("转人工 transferred", TRANSFER, [d.transfer_rate for d in report.days])]
    top = min(1.0, _nice(max(max(values) for _, _, values in series) or 0.1))
    _lines(svg, [d.day for d in report.days], series, top, percent=True, dashed=1)
    return _done(svg)


def rule_hits(report: Report) -> str:
    """Lines: the top rules' hits per day."""
    svg = _svg("rules", "热门规则每天命中 Top rules' hits per day")
    if not report.rules:
        return _empty(svg)
    series = [(name, PALETTE[i % len(PALETTE)], [float(h) for h in hits])
              for i, (name, hits) in enumerate(report.rules)]
    top = _nice(max(max(values) for _, _, values in series))
    _lines(svg, [d.day for d in report.days], series, top, percent=False)
    return _done(svg)


def heat(report: Report) -> str:
    """A week × hour map of user messages: when users write, so the shop staffs agents then."""
    height = TOP + 7 * 24 + 30
    svg = _svg("heat", "一周各时段用户消息 User messages by weekday and hour", height)
    cell_w, cell_h, left = (WIDTH - 70 - RIGHT) / 24, 24, 70
    top = max((max(row) for row in report.heat), default=0)
    for hour in range(0, 24, 3):
        _add(svg, "text", f"{hour}时", x=f"{left + (hour + 0.5) * cell_w:.1f}", y=height - 10, text_anchor="middle",
             fill=MUTED)
    for day, row in enumerate(report.heat):
        y = TOP + day * cell_h
        _add(svg, "text", WEEKDAYS[day], x=left - 6, y=y + 16, text_anchor="end", fill=MUTED)
        for hour, n in enumerate(row):
            cell = _add(svg, "rect", x=f"{left + hour * cell_w:.1f}", y=y, width=f"{cell_w - 1:.1f}",
                        height=cell_h - 1, fill=_shade(n / top if top else 0), rx=2)
            _tip(cell, f"{WEEKDAYS[day]} {hour}:00–{hour + 1}:00  {n}")
    return _done(svg)


def _shade(fraction: float) -> str:
    """From the page's light grey (nothing) to the accent green (the busiest hour)."""
    low, high = (0xee, 0xf1, 0xf3), (0x07, 0x9c, 0x4e)
    return "#" + "".join(f"{round(a + (b - a) * fraction):02x}" for a, b in zip(low, high, strict=True))


CHARTS = (("hourly", hourly), ("rates", rates), ("rules", rule_hits), ("heat", heat))


def all_charts(report: Report) -> dict[str, str]:
    return {name: draw(report) for name, draw in CHARTS}
