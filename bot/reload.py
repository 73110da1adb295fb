"""Reading the rules and templates folders from disk and compiling them: the one loader that `serve`,
`check` and `chat` share, so that what `check` accepts is exactly what the server runs.

`load_ruleset` is synchronous (file reads, YAML, Jinja compilation): the server runs it in a thread.
`RulesHolder` is the single reference a request reads once to get a complete RuleSet snapshot.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from .config import Settings
from .engine import RuleSet, SourceFile, compile_ruleset
from .errors import Problem, RulesError

MAX_SOURCE_BYTES = 2 * 1024 * 1024
TEMPLATE_SUFFIXES = (".j2", ".jinja", ".jinja2", ".txt", ".md", ".html")


def display_name(path: Path, base: Path) -> str:
    """`rules/faq.yaml` when under the config folder, else the absolute path."""
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path)


def _read(path: Path, name: str, problems: list[Problem]) -> str | None:
    try:
        if path.stat().st_size > MAX_SOURCE_BYTES:
            problems.append(Problem(name, None, f"file is larger than {MAX_SOURCE_BYTES} bytes"))
            return None
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        problems.append(Problem(name, None, "file is not UTF-8 text"))
    except OSError as exc:
        problems.append(Problem(name, None, f"cannot read: {exc.strerror or exc}"))
    return None


def read_rule_files(folder: Path, base: Path, problems: list[Problem]) -> list[SourceFile]:
    """Every *.yaml (and *.yml) directly in the folder, in name order; *.test.yaml are rule tests."""
    if not folder.is_dir():
        problems.append(Problem(display_name(folder, base), None, "rules folder not found"))
        return []
    out = []
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if path.suffix not in (".yaml", ".yml") or path.name.endswith((".test.yaml", ".test.yml")):
            continue
        if path.name.startswith(".") or not path.is_file():
            continue
        name = display_name(path, base)
        text = _read(path, name, problems)
        if text is not None:
            out.append(SourceFile(name=name, text=text))
    return out


def read_template_files(folder: Path, base: Path, problems: list[Problem]) -> list[SourceFile]:
    """Every template file under the folder (recursively); the key is its path inside the folder."""
    if not folder.is_dir():
        return []  # no templates folder: fine until a rule names a template
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for filename in sorted(files):
            path = Path(root) / filename
            if filename.startswith(".") or path.suffix not in TEMPLATE_SUFFIXES:
                continue
            name = display_name(path, base)
            text = _read(path, name, problems)
            if text is not None:
                out.append(SourceFile(name=name, text=text, key=path.relative_to(folder).as_posix()))
    return out


def load_ruleset(settings: Settings) -> RuleSet:
    """Read and compile the rules and templates named by the settings; raise RulesError listing
    every problem."""
    base = Path(settings.source).resolve().parent if settings.source != "<defaults>" else Path.cwd()
    problems: list[Problem] = []
    rule_files = read_rule_files(settings.rules, base, problems)
    template_files = read_template_files(settings.templates, base, problems)
    if not rule_files and not problems:
        problems.append(Problem(display_name(settings.rules, base), None,
                                "no *.yaml rule files in the rules folder"))
    label = display_name(settings.templates, base) + "/"
    try:
        ruleset = compile_ruleset(rule_files, template_files, settings.vars, settings.wechat.platform,
                                  templates_label=label)
    except RulesError as exc:
        raise RulesError([*problems, *exc.problems]) from None
    if problems:
        raise RulesError(problems)
    return ruleset


@dataclass(frozen=True, slots=True)
class Loaded:
    ruleset: RuleSet
    loaded_at: float


class RulesHolder:
    """The one place the live RuleSet lives. Swapping is a single reference assignment: a request that
    read `current` keeps a complete snapshot for as long as it needs it."""

    def __init__(self, ruleset: RuleSet, clock=time.time):
        self._clock = clock
        self._loaded = Loaded(ruleset, clock())
        self.error: str | None = None

    @property
    def current(self) -> RuleSet:
        return self._loaded.ruleset

    @property
    def loaded_at(self) -> float:
        return self._loaded.loaded_at

    def swap(self, ruleset: RuleSet) -> None:
        self._loaded = Loaded(ruleset, self._clock())
        self.error = None
