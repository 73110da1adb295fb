"""Logging to stderr, one line per event: readable by default, JSON lines with --log-format json.

The standard library's QueueHandler/QueueListener carry every record to a thread that formats and writes
it: the event loop never waits on stderr (a slow terminal or a full pipe to a log collector would otherwise
hold every push). `setup_logging` installs them; the listener drains the queue at exit, and a forked worker
(`kefu serve --workers`) gets a listener of its own.

Log calls may pass structured fields as `extra={"fields": {...}}`: the JSON format puts them in the object
(`{"ts", "level", "logger", "msg", "rid", "user", …}`), the text format shows only the message, which already
says the same in words.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import logging
import logging.handlers
import os
import queue
import re
import sys
import time
from collections.abc import Callable
from typing import Any

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def printable(value: str) -> str:
    """A value from a push, safe in a log line: line breaks and control characters written as \\xNN, so that
    a push cannot start a line of its own."""
    if value.isprintable():  # the usual case, in C; False also for some harmless characters (U+3000)
        return value
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256
                            else f"\\u{ord(m.group()):04x}", value)


class TextFormatter(logging.Formatter):
    """`2026-11-28 16:41:49,123 INFO    bot.server: push …` (local time)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC), level, logger, msg, the record's fields, exc."""

    converter = time.gmtime  # type: ignore[assignment]  # logging's documented way to UTC

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"ts": f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')}.{int(record.msecs):03d}Z",
                                 "level": record.levelname.lower(), "logger": record.name,
                                 "msg": record.getMessage()}
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


class _ToQueue(logging.handlers.QueueHandler):
    """Hands records to the listener's thread with their message and traceback already made into text (the
    arguments may change once the call returns), the structured fields kept for the JSON format."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # a copy: other handlers (a test's caplog) see the record as it was. A LogRecord is its __dict__, and
        # copying that is a third of copy.copy's cost (a push logs a line, a send another)
        made = logging.LogRecord.__new__(logging.LogRecord)
        made.__dict__.update(record.__dict__)
        record = made
        record.msg, record.args = record.getMessage(), None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        return record


class _Writer(logging.StreamHandler):
    """The listener thread's handler: formats each record, and writes the lines gathered in one go when the
    listener finds the queue empty (or 256 have gathered) — one write for a burst instead of one per line."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)
        if len(self.lines) >= 256:
            self.flush()

    def flush(self) -> None:
        if self.lines:
            text, self.lines = "".join(self.lines), []
            self.stream.write(text)
        super().flush()


LISTEN_EVERY = 0.05  # seconds the listener waits when the queue is empty: lines reach stderr within this


class _Listener(logging.handlers.QueueListener):
    def __init__(self, records: queue.SimpleQueue[logging.LogRecord], *handlers: logging.Handler) -> None:
        super().__init__(records, *handlers)
        self.records = records

    def dequeue(self, block: bool) -> Any:
        """The next record. When there is none, the lines gathered are written and the thread looks again a
        moment later, rather than waiting on the queue: a waiting thread is woken by every record, and on
        the event loop's core each wake-up (a thread switch and the GIL passed back and forth) cost a push
        more than its log line. stop()'s sentinel ends the thread after the lines before it are written."""
        while True:
            try:
                record = self.records.get_nowait()
            except queue.Empty:
                for handler in self.handlers:
                    handler.flush()
                time.sleep(LISTEN_EVERY)
                continue
            if record is None:  # QueueListener._sentinel: stop()
                for handler in self.handlers:
                    handler.flush()
            return record


_listener: logging.handlers.QueueListener | None = None  # the one setup_logging started


def info(logger: logging.Logger, message: str,
         fields: dict[str, Any] | Callable[[], dict[str, Any]]) -> None:
    """An INFO line with structured fields — the push and send lines. `fields` may be a function making them:
    it is only called when the line is logged."""
    if logger.isEnabledFor(logging.INFO):
        logger.info("%s", message, extra={"fields": fields() if callable(fields) else fields})


def setup_logging(fmt: str = "text", level: str = "INFO",
                  stream: Any = None) -> logging.handlers.QueueListener:
    """Send every record through a queue to a thread writing `stream` (stderr). Called again, it replaces
    the previous setup (after writing out what it still held)."""
    global _listener
    if _listener is not None:
        _stop(_listener)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    writer = _Writer(sys.stderr if stream is None else stream)
    writer.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    listener = _listener = _Listener(records, writer)
    # The logging HOWTO's optimizations: kefu's formats show none of these, and gathering them for every
    # record (the caller's file and line, thread, process) costs a push's line about a fifth of its time
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [_ToQueue(records)]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # watchfiles says "N changes detected" for every batch, relevant or not (a log file written next to
    # bot.yaml would make that a line per line); kefu logs the reloads that matter itself
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    listener.start()
    atexit.register(_stop, listener)
    return listener


def _stop(listener: logging.handlers.QueueListener) -> None:
    """Write out what is queued and end the thread (at exit, or when logging is set up again)."""
    global _listener
    if listener._thread is not None:  # stop() twice fails on 3.11
        listener.stop()
    if _listener is listener:
        _listener = None


def flush() -> None:
    """Write out every line logged so far (a forked worker calls this before it exits: no atexit there)."""
    listener = _listener
    if listener is not None and listener._thread is not None:
        listener.stop()
        listener.start()


def _before_fork() -> None:
    """`kefu serve --workers` forks: no listener thread may be writing while it does (the child would get
    a half-written line, and a queue nobody drains)."""
    listener = _listener
    if listener is not None and listener._thread is not None:
        listener.stop()


def _after_fork_in_parent() -> None:
    if _listener is not None and _listener._thread is None:
        _listener.start()


def _after_fork_in_child() -> None:
    """The child writes its own lines: a queue and a listener thread of its own, to the same stream."""
    global _listener
    if _listener is None:
        return
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = _Listener(records, *_listener.handlers)
    root = logging.getLogger()
    root.handlers[:] = [_ToQueue(records) if isinstance(h, _ToQueue) else h for h in root.handlers]
    _listener.start()
    atexit.register(_stop, _listener)


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


@functools.lru_cache(maxsize=4096)  # a push's line and its replies' send lines ask for the same id
def request_id(dedupe_key: str) -> str:
    """A push's request id: 8 hex digits derived from its dedupe key, so that the push line, its retries and
    the lines of the replies it caused (sent later, maybe by another instance) carry the same id, and the
    id says nothing about the user."""
    return hashlib.blake2b(dedupe_key.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
