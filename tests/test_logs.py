"""Logging: records go through a queue to a thread that writes them; one line each, JSON with fields."""

from __future__ import annotations

import io
import json
import logging
import re
import threading

import pytest

from bot import logs


class Stream(io.StringIO):
    """A stderr that remembers which threads wrote to it."""

    def __init__(self) -> None:
        super().__init__()
        self.writers: set[str] = set()

    def write(self, text: str) -> int:
        self.writers.add(threading.current_thread().name)
        return super().write(text)


@pytest.fixture
def setup():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    listeners = []

    def start(fmt: str = "text") -> tuple[Stream, logging.handlers.QueueListener]:
        stream = Stream()
        listeners.append(logs.setup_logging(fmt, "INFO", stream))
        return stream, listeners[-1]

    yield start
    for listener in listeners:
        logs._stop(listener)
    root.handlers[:], level = saved
    root.setLevel(level)


def test_lines_are_written_by_the_listeners_thread_never_the_callers(setup):
    stream, listener = setup()
    log = logging.getLogger("bot.test")
    log.info("first %s", "line")
    log.warning("second")
    logs._stop(listener)  # what exit does: everything queued is written
    lines = stream.getvalue().splitlines()
    assert [line.split(None, 3)[2:] for line in lines] == [["INFO", "bot.test: first line"],
                                                         ["WARNING", "bot.test: second"]]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO    bot\.test: first line", lines[0]), lines[0]
    assert stream.writers and threading.current_thread().name not in stream.writers


def test_a_second_setup_writes_out_the_first_and_replaces_it(setup):
    first, _ = setup()
    logging.getLogger("bot.test").info("before")
    second, listener = setup()
    logging.getLogger("bot.test").info("after")
    logs._stop(listener)
    assert first.getvalue().endswith("bot.test: before\n") and "after" not in first.getvalue()
    assert second.getvalue().endswith("bot.test: after\n")
    assert len(logging.getLogger().handlers) == 1


def test_json_lines_carry_structured_fields_and_the_traceback(setup):
    stream, listener = setup("json")
    log = logging.getLogger("bot.server")
    logs.info(log, "push rid=1a2b3c4d", lambda: {"rid": "1a2b3c4d", "rule": "物流"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("send %s crashed", "x")
    logs._stop(listener)
    push, crash = (json.loads(line) for line in stream.getvalue().splitlines())
    assert push["msg"] == "push rid=1a2b3c4d" and push["rid"] == "1a2b3c4d" and push["rule"] == "物流"
    assert push["level"] == "info" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", push["ts"])
    assert crash["msg"] == "send x crashed" and "ValueError: boom" in crash["exc"]


def test_arguments_changed_after_the_call_do_not_change_the_line(setup):
    stream, listener = setup()
    values = ["before"]
    logging.getLogger("bot.test").info("value %s", values)
    values[0] = "after"
    logs._stop(listener)
    assert stream.getvalue().endswith("bot.test: value ['before']\n")


def test_info_fields_are_made_only_when_the_line_is_logged(caplog):
    made = []
    log = logging.getLogger("bot.server")
    with caplog.at_level(logging.WARNING):
        logs.info(log, "not shown", lambda: made.append(1) or {})
    assert made == [] and caplog.records == []
    with caplog.at_level(logging.INFO):
        logs.info(log, "push rid=00000000", lambda: {"rid": "00000000"})
    assert [r.getMessage() for r in caplog.records] == ["push rid=00000000"]
    assert caplog.records[0].fields == {"rid": "00000000"}


def test_a_forked_worker_writes_its_own_lines_and_the_parent_goes_on(setup, tmp_path):
    """kefu serve --workers forks after logging is set up: the child gets a listener of its own (no thread
    crosses a fork), and what it logs before os._exit is written."""
    import os

    path = tmp_path / "stderr.log"
    with path.open("a", encoding="utf-8") as stream:
        listeners = logs.setup_logging("text", "INFO", stream)
        log = logging.getLogger("bot.test")
        log.info("parent before")
        pid = os.fork()
        if pid == 0:  # the child: log, write out, leave without atexit (as a worker does)
            try:
                log.info("child %d", os.getpid())
                logs.flush()
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        log.info("parent after")
        logs._stop(listeners)
    assert os.waitstatus_to_exitcode(status) == 0
    lines = [line.split(": ", 1)[1] for line in path.read_text(encoding="utf-8").splitlines()]
    assert sorted(lines) == sorted(["parent before", f"child {pid}", "parent after"])
