"""YAML that remembers where everything came from, and the checks shared by bot.yaml and rule files.

`load_yaml` returns plain dicts and lists (subclasses `YamlMap` and `YamlList`) that also know the line of
each key and item, so that every later check can say `file:line: what is wrong`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

import yaml

from .errors import Problem

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlMap(dict):
    """A mapping that knows its own line and the line of each of its keys."""

    line: int = 0

    def __init__(self) -> None:
        super().__init__()
        self.key_lines: dict[Any, int] = {}
        self.value_lines: dict[Any, int] = {}

    def line_of(self, key: Any) -> int:
        """The line of the key: where to point at the key itself."""
        return self.key_lines.get(key, self.line)

    def value_line_of(self, key: Any) -> int:
        """The line where the value's text starts (for `key: |`, the line after the key)."""
        return self.value_lines.get(key, self.line_of(key))


class YamlList(list):
    """A list that knows its own line and the line of each item."""

    line: int = 0

    def __init__(self) -> None:
        super().__init__()
        self.item_lines: list[int] = []

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if 0 <= index < len(self.item_lines) else self.line


class BlockText(str):
    """Text written as a `|` block: its lines are the file's lines, from the one after the `|` (value_line_of,
    line_of for a list item). Other text may fold lines (`>`, plain and quoted text over several lines) or hold
    `\\n` escapes, so its own line breaks say nothing about where in the file something is."""

    __slots__ = ()


class _DuplicateKey(yaml.MarkedYAMLError):
    pass


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.merged: dict[yaml.Node, int] = {}  # per flattened mapping node: how many of its pairs are merged

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """PyYAML's, which flattens in place — also the mappings a `<<:` merges, before they are constructed
        themselves — remembering how many pairs each one got from merges: counting its merge keys afterwards
        would take the inherited keys for its own, and an overridden one for a duplicate."""
        if node in self.merged:
            return
        own = sum(1 for key_node, _ in node.value if key_node.tag != _MERGE)
        super().flatten_mapping(node)
        self.merged[node] = len(node.value) - own


_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"


def _construct(loader: _Loader, node: yaml.Node) -> Any:
    """The node's value. Text (most of a rule file) is the node's own string: PyYAML's construct_object would
    return the same after its bookkeeping for anchors and recursion, which text never needs."""
    if node.tag == _STR and type(node) is yaml.ScalarNode:
        return BlockText(node.value) if node.style == "|" else node.value
    return loader.construct_object(node, deep=True)


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> YamlMap:
    loader.flatten_mapping(node)  # `<<: *anchor` entries become the first pairs; the mapping's own follow
    merged = loader.merged[node]
    result = YamlMap()
    result.line = node.start_mark.line + 1
    inherited: set[Any] = set()  # keys from merges, which the mapping's own keys override (as YAML says)
    for i, (key_node, value_node) in enumerate(node.value):
        key = _construct(loader, key_node)
        try:
            hash(key)
        except TypeError:
            raise _DuplicateKey(None, None, "a key must be plain text", key_node.start_mark) from None
        if i < merged:
            inherited.add(key)
        elif key in inherited:
            inherited.discard(key)  # its own now: a second one would be a duplicate
        elif key in result:
            raise _DuplicateKey(None, None, f"duplicate key '{key}'", key_node.start_mark)
        result[key] = _construct(loader, value_node)
        result.key_lines[key] = key_node.start_mark.line + 1
        if type(value_node) is yaml.ScalarNode:
            result.value_lines[key] = _content_line(value_node)
    return result


def _content_line(node: yaml.Node) -> int:
    """Where a node's text starts: for a block scalar (| or >), the line after its indicator."""
    line = node.start_mark.line + 1
    return line + 1 if isinstance(node, yaml.ScalarNode) and node.style in ("|", ">") else line


def _construct_list(loader: _Loader, node: yaml.SequenceNode) -> YamlList:
    result = YamlList()
    result.line = node.start_mark.line + 1
    for item in node.value:
        result.append(_construct(loader, item))
        result.item_lines.append(_content_line(item))
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_list)


class YamlSyntaxError(Exception):
    def __init__(self, problem: Problem):
        self.problem = problem
        super().__init__(str(problem))


def load_yaml(text: str, filename: str) -> Any:
    """Parse YAML text; raise YamlSyntaxError with `file:line` when it is not valid YAML."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        # at the end of the stream PyYAML points past the last line: point at the last line instead
        last = len(text.splitlines()) or 1
        line = min(mark.line + 1, last) if mark is not None else None
        what = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            started = min(exc.context_mark.line + 1, last) if exc.context_mark else None
            where = f" that starts on line {started}" if started and line and started < line else ""
            what = f"{exc.problem} ({exc.context}{where})"
        raise YamlSyntaxError(Problem(filename, line, f"YAML syntax: {what}")) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(Problem(filename, None, f"YAML syntax: {exc}")) from None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class Checker:
    """Collects problems for one file, so that every problem is reported, not just the first."""

    def __init__(self, filename: str):
        self.filename = filename
        self.problems: list[Problem] = []

    def add(self, line: int | None, message: str) -> None:
        self.problems.append(Problem(self.filename, line, message))

    def unknown_keys(self, mapping: YamlMap, allowed: Iterable[str], where: str = "") -> None:
        allowed = list(allowed)
        for key in mapping:
            if key not in allowed:
                prefix = f"{where}: " if where else ""
                self.add(mapping.line_of(key), f"{prefix}unknown key '{key}'{did_you_mean(key, allowed)}")
