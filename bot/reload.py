"""Reading the rules and templates folders from disk and compiling them: the one loader that `serve`,
`check`, `chat` and every reload share, so that what `check` accepts is exactly what the server runs.

`load_ruleset` is synchronous (file reads, YAML, Jinja compilation): the Reloader runs it in a thread.
`RulesHolder` is the single reference a request reads once to get a complete RuleSet snapshot; the
`Reloader` builds a new RuleSet and swaps it in whole, or keeps the old one and records why.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, fields, is_dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .config import Settings, load_settings
from .engine import RuleSet, SourceFile
from .engine.compile import compile_steps, run_steps
from .engine.index import merge_automata
from .engine.limits import configure as configure_limits
from .errors import Problem, RulesError, SourceError
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
    out = []
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
                                           templates_label=label, previous=previous, media=media)
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

    def __init__(self, ruleset: RuleSet, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._loaded = Loaded(ruleset, clock())
        self.errors: tuple[str, ...] = ()  # the problems of the last refused reload; () once one succeeds
        self.refused_at: float | None = None  # when a reload was last refused (kept after one succeeds)
        self.restart_needed: tuple[str, ...] = ()  # bot.yaml settings changed since start

    @property
    def current(self) -> RuleSet:
        return self._loaded.ruleset

    @property
    def loaded_at(self) -> float:
        return self._loaded.loaded_at

    @property
    def error(self) -> str | None:
        return "\n".join(self.errors) if self.errors else None

    def swap(self, ruleset: RuleSet) -> None:
        self._loaded = Loaded(ruleset, self._clock())
        self.errors = ()

    def refuse(self, errors: tuple[str, ...]) -> None:
        """A reload was refused for `errors`; the current rule set keeps serving."""
        self.errors = errors
        self.refused_at = self._clock()

    def status(self) -> dict[str, Any]:
        ruleset = self.current
        return {
            "rules": {
                "version": ruleset.version,
                "count": len(ruleset.rules),
                "files": list(ruleset.files),
                "loaded_at": datetime.fromtimestamp(self.loaded_at, UTC).isoformat(),
                "error": self.error,
                "errors": list(self.errors),
            },
            "restart_needed": list(self.restart_needed),
        }


BUILD_SLICE = 0.002  # seconds of building between two turns of the event loop
RETIRE_AFTER = 60.0  # seconds a replaced rule set stays usable for requests that still hold it

# bot.yaml settings a running bot takes live; every other change is reported as "needs restart".
LIVE_SETTINGS = ("rules", "templates", "media", "vars", "allow_empty_rules")  # timezone: restart (the server's clock)


def restart_needed(running: Settings, new: Settings) -> tuple[str, ...]:
    """The dotted names of settings that differ and only take effect after a restart."""
    changed: list[str] = []
    for f in fields(Settings):
        if f.name in LIVE_SETTINGS or f.name == "source":
            continue
        old, fresh = getattr(running, f.name), getattr(new, f.name)
        if is_dataclass(old) and is_dataclass(fresh):
            changed.extend(f"{f.name}.{sub.name}" for sub in fields(old)
                           if getattr(old, sub.name) != getattr(fresh, sub.name))
        elif old != fresh:
            changed.append(f.name)
    return tuple(changed)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one reload did."""

    swapped: bool  # a new rule set is live
    version: str  # the version serving after the reload
    errors: tuple[str, ...] = ()  # why it was refused
    restart_needed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Built:
    ruleset: RuleSet
    settings: Settings  # the running settings with the live parts of the new bot.yaml
    restart_needed: tuple[str, ...]


async def build(config: Path | None, running: Settings, previous: RuleSet | None = None) -> Built:
    """Read bot.yaml (if any) and the rules and templates it names, in a thread (file I/O); then compile on
    the event loop in small steps, yielding between rule files: a thread would hold the GIL against the
    requests for the whole build, a step holds the loop for a few milliseconds. Raises SourceError
    (ConfigError or RulesError) listing every problem."""
    def read() -> tuple[Settings, Settings, Any]:
        new = load_settings(config) if config is not None else running
        effective = replace(running, **{name: getattr(new, name) for name in LIVE_SETTINGS})
        return new, effective, read_all(effective)

    new, effective, sources = await asyncio.to_thread(read)
    steps = load_steps(effective, previous, sources)
    slice_started = time.perf_counter()
    while True:
        try:
            next(steps)
        except StopIteration as done:
            ruleset = done.value
            break
        if time.perf_counter() - slice_started >= BUILD_SLICE:
            await asyncio.sleep(0)  # let requests run
            slice_started = time.perf_counter()
    if ruleset.index is not None:  # fewer, larger automata: built off the loop (see engine/index.py)
        await asyncio.to_thread(merge_automata, ruleset.index)
    return Built(ruleset, effective, restart_needed(running, new))


class Reloader:
    """Rebuilds the rule set off the event loop and swaps it in whole, or keeps the old one and says why.

    Reloads never overlap: a request that arrives during a reload makes exactly one more reload run after
    it, however many requests arrive meanwhile (an editor's burst of saves costs at most two builds)."""

    def __init__(self, holder: RulesHolder, running: Settings, config: Path | None = None,
                 build: Callable[[Path | None, Settings, RuleSet | None], Awaitable[Built]] = build,
                 manage_gc: bool = False, retire_after: float = RETIRE_AFTER):
        self.holder = holder
        self.manage_gc = manage_gc
        self.retire_after = retire_after
        self._retiring: set[asyncio.TimerHandle] = set()
        self.running = running
        self.config = config
        self._build = build
        self._lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._runner: asyncio.Task[Outcome | None] | None = None
        self._dirty: str | None = None  # the reason of a reload requested and not started yet
        self._watched = running
        self.builds = 0  # how many times a rule set was built (for tests and metrics)
        self.refused = 0
        self.swaps = 0  # how many of them went live

    async def reload(self, reason: str) -> Outcome:
        """Reload now (after any reload already running) and return what happened."""
        async with self._lock:
            return await self._reload(reason)

    def request(self, reason: str) -> asyncio.Task[Outcome | None]:
        """Ask for a reload without waiting. A request made during a reload gets one more reload after it,
        so that the last change is always read; requests made meanwhile share that one."""
        self._dirty = reason
        if self._runner is None or self._runner.done():
            self._runner = asyncio.ensure_future(self._run_requests())
        return self._runner

    async def _run_requests(self) -> Outcome | None:
        outcome = None
        while self._dirty is not None:
            reason, self._dirty = self._dirty, None
            outcome = await self.reload(reason)
        return outcome

    def _apply(self, built: Built, old: RuleSet, reason: str, started: float) -> bool:
        """Swap the built rule set in (on the event loop, between two requests). True if it changed."""
        ruleset, restart, self._watched = built.ruleset, built.restart_needed, built.settings
        if restart != self.holder.restart_needed and restart:
            log.warning("bot.yaml changed, needs restart: %s", ", ".join(restart))
        self.holder.restart_needed = restart
        if ruleset.version == old.version and not self.holder.errors:
            log.debug("reload (%s): nothing changed, still %s", reason, old.version)
            ruleset.retire()  # an identical copy: free it now
            return False
        self.holder.swap(ruleset)
        log.info("rules reloaded (%s): %s → %s, %d rules in %.0f ms", reason, old.version,
                 ruleset.version, len(ruleset.rules), (time.perf_counter() - started) * 1000)
        if self.manage_gc:
            gc.freeze()  # the new rule set lives long: keep it out of every later full collection
            self._retire_later(old)
        return True

    @contextlib.contextmanager
    def _full_collections_paused(self):
        """While a large rule set is built, a full (generation 2) collection would scan every object in the
        process and stall the event loop for a long time; young collections still run."""
        if not self.manage_gc:
            yield
            return
        thresholds = gc.get_threshold()
        gc.set_threshold(thresholds[0], thresholds[1], 1_000_000)
        try:
            yield
        finally:
            gc.set_threshold(*thresholds)

    def _retire_later(self, old: RuleSet) -> None:
        """Free the replaced rule set once no request can still be using it (requests take milliseconds)."""
        loop = asyncio.get_running_loop()

        def retire() -> None:
            self._retiring.discard(handle)
            old.retire()

        handle = loop.call_later(self.retire_after, retire)
        self._retiring.add(handle)

    def _follow_new_paths(self) -> None:
        """After a refused reload, still follow the folders the new bot.yaml names, so that creating a
        missing folder is noticed."""
        if self.config is None:
            return
        try:
            new = load_settings(self.config)
        except SourceError:
            return
        self._watched = replace(self._watched, rules=new.rules, templates=new.templates, media=new.media)

    @property
    def watched(self) -> Settings:
        """The settings whose paths the watcher follows: the running ones with the live parts of bot.yaml."""
        return self._watched

    async def _reload(self, reason: str) -> Outcome:
        old = self.holder.current
        started = time.perf_counter()
        self.builds += 1
        try:
            with self._full_collections_paused():
                built = await self._build(self.config, self.running, old)
                swapped = self._apply(built, old, reason, started)
        except SourceError as exc:
            self.refused += 1
            self._follow_new_paths()
            self.holder.refuse(tuple(str(p) for p in exc.problems))
            log.error("rules rejected, still serving %s: %s", old.version, "; ".join(self.holder.errors))
            outcome = Outcome(False, old.version, self.holder.errors, self.holder.restart_needed)
        except Exception as exc:  # a bug, or the disk: refused like a broken edit, not the end of live reload
            self.refused += 1
            self.holder.refuse((f"the rules could not be built ({type(exc).__name__}: {exc}); "
                                "the log has the traceback",))
            log.exception("reload (%s) failed, still serving %s", reason, old.version)
            outcome = Outcome(False, old.version, self.holder.errors, self.holder.restart_needed)
        else:
            self.swaps += swapped
            outcome = Outcome(swapped, self.holder.current.version, (), built.restart_needed)
        async with self._changed:
            self._changed.notify_all()
        return outcome

    async def wait_for(self, predicate: Callable[[RulesHolder], bool], timeout: float = 10.0) -> None:
        """Wait until a reload leaves the holder in a state that satisfies `predicate`."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self.holder)), timeout)

    async def close(self) -> None:
        for handle in self._retiring:
            handle.cancel()
        self._retiring.clear()
        if self._runner is not None and not self._runner.done():
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
