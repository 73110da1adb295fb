"""bot.yaml's named time windows: `hours:` names a window once, rules say `time: business`, templates print
`{{ hours.business }}`.

```yaml
hours:
  business: {weekdays: mon-fri, hours: '09:00-18:00'}
  holidays: {dates: ['2026-10-01..2026-10-07']}
```

A window is written as a rule's `time:` mapping and compiled by the same code (engine/when.py), so that a
mistake reads the same in bot.yaml as in a rule file. `hours` is taken live by a reload (reload.LIVE_SETTINGS).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, time
from types import MappingProxyType
from typing import Any

from .yamlsrc import Checker, YamlMap, type_name

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # templates read it as hours.NAME
WEEKDAYS_ZH = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")


@dataclass(frozen=True, slots=True)
class Window:
    """One named window: the compiled condition (engine.conditions.TimeIs) and how templates print it."""

    name: str
    condition: Any  # TimeIs
    text: str  # 周一至周五 09:00-18:00
    line: int  # where bot.yaml names it

    def __str__(self) -> str:
        return self.text


def parse_windows(value: Any, line: int, check: Checker) -> Mapping[str, Window] | None:
    """`hours:` from bot.yaml → {name: Window}; every problem goes to `check` with its line."""
    from .engine.when import time_window  # the engine imports config: not at import time

    if value is None:
        return MappingProxyType({})
    if not isinstance(value, YamlMap):
        check.add(line, f"'hours' names time windows (business: {{weekdays: mon-fri, hours: '09:00-18:00'}}), "
                        f"not {type_name(value)}")
        return None
    out: dict[str, Window] = {}
    for name, spec in value.items():
        at = value.line_of(name)
        if not isinstance(name, str) or not NAME.match(name):
            check.add(at, f"hours: {name!r} is not a window name (letters, digits and _, e.g. business)")
            continue
        condition = time_window(check, spec, at, f"hours: '{name}'")
        if condition is not None:
            out[name] = Window(name, condition, describe(condition), at)
    return MappingProxyType(out)


def describe(window: Any) -> str:
    """A window in words, for replies: `周一至周五 09:00-18:00`, `每天 09:00-21:00`, `2026-10-01至2026-10-07`."""
    parts = []
    if window.weekdays is not None:
        parts.append(_days(window.weekdays))
    elif window.hours is not None:
        parts.append("每天")
    if window.dates is not None:
        parts.append("、".join(_date(a) if a == b else f"{_date(a)}至{_date(b)}" for a, b in window.dates))
    if window.hours is not None:
        parts.append("、".join(f"{_time(a)}-{'24:00' if b == time(0) and a != b else _time(b)}"
                              if a != b else "00:00-24:00" for a, b in window.hours))
    return " ".join(parts) or "任何时间"


def _days(days: frozenset[int]) -> str:
    if len(days) == 7:
        return "每天"
    runs: list[list[int]] = []
    for day in sorted(days):
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    return "、".join(WEEKDAYS_ZH[r[0]] if len(r) == 1 else f"{WEEKDAYS_ZH[r[0]]}至{WEEKDAYS_ZH[r[-1]]}"
                    for r in runs)


def _date(day: date) -> str:
    return day.isoformat()


def _time(t: time) -> str:
    return t.strftime("%H:%M")
