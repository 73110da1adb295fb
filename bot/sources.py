"""Reading the rules, templates and media folders from disk and compiling them: the one loader that `serve`,
`check`, `chat`, `test` and every reload share, so that what `check` accepts is exactly what the server runs.

`load_ruleset` is synchronous (file reads, YAML, Jinja compilation): the Reloader (bot/reload.py) runs it in
a thread, in small steps (`read_all` then `load_steps`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

from .config import Settings
from .engine import RuleSet, SourceFile
from .engine.compile import compile_steps, run_steps
from .engine.index import merge_automata
from .engine.limits import configure as configure_limits
from .errors import Problem, RulesError
from .messages import MediaFile

log = logging.getLogger(__name__)

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
        problems.append(_not_utf8(path, name))
    except OSError as exc:
        problems.append(Problem(name, None, f"cannot read: {exc.strerror or exc}"))
    return None


def _not_utf8(path: Path, name: str) -> Problem:
    """`file:line: …` at the first byte that is not UTF-8 (a file saved as GBK, say)."""
    try:
        data = path.read_bytes()
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - data.rfind(b"\n", 0, exc.start)  # in bytes
        return Problem(name, line, f"file is not UTF-8 text (byte 0x{data[exc.start]:02x} at byte {column} of "
                                   "the line; save it as UTF-8)")
    except OSError:
        pass
    return Problem(name, None, "file is not UTF-8 text")


def _rule_paths(folder: Path) -> list[Path]:
    """Every *.yaml (and *.yml) directly in the folder, in name order; *.test.yaml are rule tests."""
    return [path for path in sorted(folder.iterdir(), key=lambda p: p.name)
            if path.suffix in (".yaml", ".yml") and not path.name.endswith((".test.yaml", ".test.yml"))
            and not path.name.startswith(".") and path.is_file()]


def _template_paths(folder: Path) -> list[Path]:
    """Every template file under the folder, recursively, hidden files and folders aside."""
    out: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out.extend(Path(root) / f for f in sorted(files)
                   if not f.startswith(".") and Path(f).suffix in TEMPLATE_SUFFIXES)
    return out


def read_rule_files(folder: Path, base: Path, problems: list[Problem],
                    allow_missing: bool = False) -> list[SourceFile]:
    if not folder.is_dir():
        if not allow_missing:
            problems.append(Problem(display_name(folder, base), None, "rules folder not found"))
        return []
    out = []
    for path in _rule_paths(folder):
        name = display_name(path, base)
        text = _read(path, name, problems)
        if text is not None:
            out.append(SourceFile(name=name, text=text))
    return out


def read_template_files(folder: Path, base: Path, problems: list[Problem]) -> list[SourceFile]:
    """The key of a template is its path inside the folder (`faq/refund.j2`)."""
    if not folder.is_dir():
        return []  # no templates folder: fine until a rule names a template
    out = []
    for path in _template_paths(folder):
        name = display_name(path, base)
        text = _read(path, name, problems)
        if text is not None:
            out.append(SourceFile(name=name, text=text, key=path.relative_to(folder).as_posix()))
    return out


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")
MAX_IMAGE_BYTES = 2 * 1024 * 1024  # WeChat's limit for an uploaded image


def read_media(settings: Settings) -> dict[str, MediaFile | str]:
    """Every image under the media folder and the templates folder, by its path inside the folder (the media
    folder wins a tie): a MediaFile, or why it cannot be sent."""
    found: dict[str, MediaFile | str] = {}
    for folder in (settings.templates, settings.media):
        if not folder.is_dir():
            continue
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in files:
                path = Path(root) / name
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    found[path.relative_to(folder).as_posix()] = _media_file(path)
    return found


def _media_file(path: Path) -> MediaFile | str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if len(data) > MAX_IMAGE_BYTES:
        return f"is {len(data) // 1024} KB; WeChat takes images up to 2 MB"
    if not data.startswith(IMAGE_MAGIC):
        return "is not a PNG, JPEG or GIF image"
    return MediaFile(str(path.resolve()), hashlib.sha256(data).hexdigest(), len(data))


def _fingerprint(settings: Settings) -> tuple[tuple[str, int, int], ...]:
    """Name, mtime and size of every source file: what tells that the sources changed while being read."""
    paths = (_rule_paths(settings.rules) if settings.rules.is_dir() else []) + \
        (_template_paths(settings.templates) if settings.templates.is_dir() else [])
    out = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        out.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(out)


STABLE_READ_TRIES = 5


def read_sources(settings: Settings, base: Path,
                 problems: list[Problem]) -> tuple[list[SourceFile], list[SourceFile]]:
    """Read the rule and template files, again if any of them changed meanwhile (an editor or a deploy
    writing as we read), so that what is compiled is the folders as they were at one instant."""
    for _ in range(STABLE_READ_TRIES):
        before = _fingerprint(settings)
        attempt: list[Problem] = []
        rule_files = read_rule_files(settings.rules, base, attempt, allow_missing=settings.allow_empty_rules)
        template_files = read_template_files(settings.templates, base, attempt)
        if _fingerprint(settings) == before:
            break
        log.debug("sources changed while being read; reading again")
    problems.extend(attempt)
    return rule_files, template_files


def load_ruleset(settings: Settings, previous: RuleSet | None = None) -> RuleSet:
    """Read and compile the rules and templates named by the settings; raise RulesError listing
    every problem. `previous` lends its compiled templates to the ones that did not change."""
    ruleset = run_steps(load_steps(settings, previous))
    if ruleset.index is not None:
        merge_automata(ruleset.index)
    return ruleset


def read_all(settings: Settings) -> tuple[Path, list[Problem], list[SourceFile], list[SourceFile], dict[str, Any]]:
    """Everything a build reads from disk (the part a server runs in a thread)."""
    base = Path(settings.source).resolve().parent if settings.source != "<defaults>" else Path.cwd()
    problems: list[Problem] = []
    rule_files, template_files = read_sources(settings, base, problems)
    return base, problems, rule_files, template_files, read_media(settings)


def load_steps(settings: Settings, previous: RuleSet | None = None,
               sources: tuple[Path, list[Problem], list[SourceFile], list[SourceFile], dict[str, Any]] | None = None,
               ) -> Generator[None, None, RuleSet]:
    """load_ruleset in small steps (see engine.compile_steps); `sources` from read_all, or read now."""
    base, problems, rule_files, template_files, media = sources or read_all(settings)
    configure_limits(settings.limits.regex_ms, settings.limits.render_ms, settings.limits.render_chars)
    if not rule_files and not problems and not settings.allow_empty_rules:
        problems.append(Problem(display_name(settings.rules, base), None,
                                "no *.yaml rule files in the rules folder (set allow_empty_rules: true in "
                                "bot.yaml if that is what you want: then every message gets the fallback)"))
    label = display_name(settings.templates, base) + "/"
    try:
        ruleset = yield from compile_steps(rule_files, template_files, settings.vars, settings.wechat.platform,
                                           templates_label=label, previous=previous, media=media,
                                           windows=settings.hours)
    except RulesError as exc:
        raise RulesError([*problems, *exc.problems]) from None
    if problems:
        raise RulesError(problems)
    return ruleset
