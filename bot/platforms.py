"""What differs between a mini program and an official account in bot.yaml: the defaults of settings that
depend on what WeChat allows each platform. A value written in bot.yaml always wins.

| setting | miniprogram | official_account | why |
| --- | --- | --- | --- |
| quota.per_event | 2 | 3 | entering the session allows 1–2 sends a minute; subscribe, SCAN and CLICK allow 3 |
| handoff.end_on_enter | true | false | mini programs get no kf_close_session; official accounts have no enter event |
"""

from __future__ import annotations

from typing import Any

DEFAULTS: dict[str, dict[tuple[str, str], Any]] = {
    "miniprogram": {("quota", "per_event"): 2, ("handoff", "end_on_enter"): True},
    "official_account": {("quota", "per_event"): 3, ("handoff", "end_on_enter"): False},
}


def apply_defaults(platform: str, sections: dict[str, dict[str, Any]]) -> None:
    """Fill in the platform's default of every setting bot.yaml left out (`sections`: section → key → value)."""
    for (section, key), value in DEFAULTS.get(platform, {}).items():
        sections.setdefault(section, {}).setdefault(key, value)
