"""Logging to stderr, one line per event: readable by default, JSON lines with --log-format json.

A busy bot logs a line per push and per send, so the handler is built for that: the timestamp text is made
once per second, and lines are written in batches (at most every FLUSH_EVERY seconds, at once for warnings
and errors, and at exit) instead of one write per line. Python's default handler cost a push about as much
as reading and parsing it.

Log calls may pass structured fields as `extra={"fields": {...}}`: the JSON format puts them in the object
(`{"ts", "level", "logger", "msg", "rid", "user", …}`), the text format shows only the message, which already
says the same in words.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

FLUSH_EVERY = 0.2  # seconds a line may wait in the buffer (a quiet bot's last line: see LineHandler.tick)
FLUSH_AT = 64 * 1024  # characters


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def printable(value: str) -> str:
    """A value from a push, safe in a log line: line breaks and control characters written as \\xNN, so that
    a push cannot start a line of its own."""
    if value.isprintable():  # the usual case, in C; False also for some harmless characters (U+3000)
        return value
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256
                            else f"\\u{ord(m.group()):04x}", value)


_MILLIS = tuple(f",{ms:03d}" for ms in range(1000))  # ",000" … ",999": a lookup, not a format, per line


class _Clock:
    """'2026-11-28 16:41:49' (local time) or '2026-11-28T08:41:49' (UTC), made once per second."""

    def __init__(self, utc: bool):
        self.utc = utc
        self._second = -1
        self._text = ""

    def text(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            if self.utc:
                self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            else:
                self._text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            self._second = second
        return self._text


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock(utc=False)
        self._middles: dict[tuple[str, str], str] = {}  # (level, logger) → " INFO    bot.server: "

    def format(self, record: logging.LogRecord) -> str:
        line = self.line(record.created, record.levelname, record.name, record.getMessage(), None)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line

    def line(self, created: float, level: str, name: str, message: str, fields: dict[str, Any] | None) -> str:
        """The text format shows only the message: it says in words what the fields hold."""
        middle = self._middles.get((level, name))
        if middle is None:
            middle = f" {level:<7} {name}: "
            if len(self._middles) < 256:  # a few loggers and levels
                self._middles[level, name] = middle
        return self._clock.text(created) + _MILLIS[int((created % 1) * 1000)] + middle + message


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock(utc=True)

    def format(self, record: logging.LogRecord) -> str:
        exc = self.formatException(record.exc_info) if record.exc_info else None
        return self.line(record.created, record.levelname, record.name, record.getMessage(),
                         getattr(record, "fields", None), exc)

    def line(self, created: float, level: str, name: str, message: str, fields: dict[str, Any] | None,
             exc: str | None = None) -> str:
        entry: dict[str, Any] = {"ts": f"{self._clock.text(created)}.{int((created % 1) * 1000):03d}Z",
                                 "level": level.lower(), "logger": name, "msg": message}
        if fields:
            entry.update(fields)
        if exc:
            entry["exc"] = exc
        return json.dumps(entry, ensure_ascii=False, default=str)


class LineHandler(logging.Handler):
    """Formatted lines into a buffer; the buffer into the stream in one write."""

    def __init__(self, stream: IO[str]):
        super().__init__()
        self.stream = stream
        self._lines: list[str] = []
        self._size = 0
        self._last = time.monotonic()
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.add(line, record.levelno >= logging.WARNING)

    def add(self, line: str, urgent: bool = False) -> None:
        with self._guard:
            self._lines.append(line)
            self._size += len(line)
        if urgent or self._size >= FLUSH_AT or time.monotonic() - self._last >= FLUSH_EVERY:
            self.flush()

    def tick(self) -> None:
        """Write what has waited FLUSH_EVERY seconds (the server calls this a few times a second)."""
        if self._lines and time.monotonic() - self._last >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        with self._guard:
            lines, self._lines, self._size = self._lines, [], 0
            self._last = time.monotonic()
        if lines:
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # stderr closed or gone: nothing to tell anyone
                pass


_handler: LineHandler | None = None  # the handler setup_logging installed


def info(logger: logging.Logger, message: str,
         fields: dict[str, Any] | Callable[[], dict[str, Any]]) -> None:
    """An INFO line with structured fields — the push and send lines, one per push or reply. When kefu's own
    handler is the only one the line reaches (as `kefu serve` sets it up), the line is formatted and buffered
    directly: a LogRecord and the logging module's dispatch cost a push about as much as its matching. Else
    (a test's caplog, an embedding application's handlers) it is an ordinary log call. `fields` may be a
    function making them: the text format never asks for it."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _handler
    if handler is not None and _only(handler, logger):
        formatter = handler.formatter
        if isinstance(formatter, TextFormatter):
            handler.add(formatter.line(time.time(), "INFO", logger.name, message, None))
            return
        if isinstance(formatter, JsonFormatter):
            handler.add(formatter.line(time.time(), "INFO", logger.name, message,
                                       fields() if callable(fields) else fields))
            return
    logger.info("%s", message, extra={"fields": fields() if callable(fields) else fields})


def _only(handler: LineHandler, logger: logging.Logger) -> bool:
    """Whether `handler` on the root is the one handler a line from `logger` reaches, with no filters."""
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return False
        if current.parent is None:  # the root
            return (len(current.handlers) == 1 and current.handlers[0] is handler and not handler.filters
                    and handler.level <= logging.INFO)
        if current.handlers or not current.propagate:
            return False
        current = current.parent  # type: ignore[assignment]
    return False  # pragma: no cover - a logger always ends at the root


def setup_logging(fmt: str = "text", level: str = "INFO") -> LineHandler:
    global _handler
    handler = _handler = LineHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # a LogRecord need not look up the caller's file and line (a walk up the stack), the thread or the
    # process, which kefu's lines never print
    logging._srcfile = None  # type: ignore[attr-defined]  # the documented switch: logging's own docs
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # watchfiles says "N changes detected" for every batch, relevant or not (a log file written next to
    # bot.yaml would make that a line per line); kefu logs the reloads that matter itself
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    return handler


def tick() -> None:
    """Flush lines that have waited long enough, on whichever LineHandler the root logger has."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, LineHandler):
            handler.tick()


@functools.lru_cache(maxsize=4096)  # a push's line and its replies' send lines ask for the same id
def request_id(dedupe_key: str) -> str:
    """A push's request id: 8 hex digits derived from its dedupe key, so that the push line, its retries and
    the lines of the replies it caused (sent later, maybe by another instance) carry the same id, and the
    id says nothing about the user."""
    return hashlib.blake2b(dedupe_key.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
