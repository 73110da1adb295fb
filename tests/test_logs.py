"""The log handler: one line per record, written in batches, warnings at once, JSON with structured fields."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from bot import logs


@pytest.fixture
def captured():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    handler = logs.setup_logging("text", "INFO")
    handler.stream = stream
    yield stream, handler
    root.handlers[:], level = saved
    root.setLevel(level)


def test_info_lines_wait_for_a_batch_and_warnings_flush_it(captured, monkeypatch):
    stream, handler = captured
    monkeypatch.setattr(handler, "_last", float("inf"))  # as if the last flush were just now
    log = logging.getLogger("bot.test")
    log.info("first %s", "line")
    assert stream.getvalue() == ""
    log.warning("second")
    lines = stream.getvalue().splitlines()
    assert [line.split(None, 3)[2:] for line in lines] == [["INFO", "bot.test: first line"],
                                                         ["WARNING", "bot.test: second"]]


def test_tick_writes_lines_that_waited(captured, monkeypatch):
    stream, handler = captured
    monkeypatch.setattr(handler, "_last", float("inf"))
    logging.getLogger("bot.test").info("waiting")
    logs.tick()
    assert stream.getvalue() == ""
    monkeypatch.setattr(handler, "_last", 0.0)  # FLUSH_EVERY has passed
    logs.tick()
    assert stream.getvalue().endswith("bot.test: waiting\n")


def test_json_lines_carry_structured_fields():
    stream = io.StringIO()
    handler = logs.LineHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    record = logging.LogRecord("bot.server", logging.INFO, __file__, 1, "push %s", ("x",), None)
    record.fields = {"rid": "1a2b3c4d", "rule": "物流"}
    handler.emit(record)
    handler.flush()
    entry = json.loads(stream.getvalue())
    assert entry["msg"] == "push x" and entry["rid"] == "1a2b3c4d" and entry["rule"] == "物流"
    assert entry["level"] == "info" and entry["ts"].endswith("Z")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_quick_info_line_is_the_line_logging_would_write(fmt, monkeypatch):
    """logs.info skips the LogRecord when kefu's handler is the only one: the line must not differ."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        handler = logs.setup_logging(fmt, "INFO")
        handler.stream = stream = io.StringIO()
        monkeypatch.setattr(logs.time, "time", lambda: 1_800_000_000.25)
        monkeypatch.setattr(logging.time, "time_ns", lambda: 1_800_000_000_250_000_000)
        log = logging.getLogger("bot.server")
        fields = {"rid": "1a2b3c4d", "rule": "物流", "replies": 1}
        logs.info(log, "push rid=1a2b3c4d rule=物流", lambda: fields)  # the quick way, fields made on demand
        log.info("%s", "push rid=1a2b3c4d rule=物流", extra={"fields": fields})  # the logging module's
        handler.flush()
        quick, usual = stream.getvalue().splitlines()
        assert quick == usual
        if fmt == "json":
            assert json.loads(quick)["rule"] == "物流"
        else:  # local time, milliseconds, the level padded to 7, the logger, the message
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,250 INFO    bot\.server: push rid=1a2b3c4d rule=物流",
                                quick), quick
        log.setLevel(logging.WARNING)
        logs.info(log, "not shown", fields)
        handler.flush()
        assert "not shown" not in stream.getvalue()
    finally:
        logging.getLogger("bot.server").setLevel(logging.NOTSET)
        root.handlers[:], level = saved
        root.setLevel(level)


def test_the_quick_info_line_reaches_every_handler_when_there_are_others(captured, caplog):
    stream, handler = captured
    logging.getLogger().addHandler(caplog.handler)  # as an embedding application's or a test's handler
    with caplog.at_level(logging.INFO):
        logs.info(logging.getLogger("bot.server"), "push rid=00000000", lambda: {"rid": "00000000"})
    handler.flush()
    assert [r.getMessage() for r in caplog.records] == ["push rid=00000000"]
    assert caplog.records[0].fields == {"rid": "00000000"}
    assert stream.getvalue().endswith("bot.server: push rid=00000000\n")
