"""bot.yaml's `insights:` section (read by config.py, as its `hours:` is by hours.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..yamlsrc import Checker, YamlMap, type_name


@dataclass(frozen=True, slots=True)
class InsightsSettings:
    examples: bool = True  # false: the insights show counts and words, never what users wrote
    catch_all: tuple[str, ...] = ()  # rules that answer "anything else": their messages count as unanswered


def parse_insights(value: Any, line: int, check: Checker) -> InsightsSettings | None:
    """`insights: {examples: true, catch_all: [NAME, …]}` → InsightsSettings; problems go to `check`."""
    if value is None:
        return InsightsSettings()
    if not isinstance(value, YamlMap):
        check.add(line, f"'insights' must be a mapping, not {type_name(value)}")
        return None
    check.unknown_keys(value, ("examples", "catch_all"), "insights")
    examples = value.get("examples", True)
    if isinstance(examples, str) and examples.lower() in ("true", "false"):
        examples = examples.lower() == "true"  # from ${ENV}
    if not isinstance(examples, bool):
        check.add(value.line_of("examples"), f"'examples' must be true or false, not {type_name(examples)}")
        return None
    names = value.get("catch_all", [])
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
        check.add(value.line_of("catch_all"), "'catch_all' must be a rule name or a list of them, "
                                              f"not {type_name(value.get('catch_all'))}")
        return None
    return InsightsSettings(examples, tuple(names))
