"""Where kefu keeps what must outlive one request: retry dedupe, the outbox, state and the conversation log.

`open_store(url)` picks the backend from bot.yaml's `store:` URL:
- `memory://` — one process, nothing survives a restart (tests, trying kefu out);
- `sqlite:///PATH` — one host, one or several processes (the embedded default);
- `redis://[:PASSWORD@]HOST:PORT/DB[?prefix=kefu:]` — a fleet of instances.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from ..config import redact_url
from ..errors import ConfigError, Problem
from .base import STATUSES, LogEntry, OutboxItem, RuleHits, Status, Store
from .memory import MemoryStore


def open_store(url: str, source: str = "bot.yaml", clock: Callable[[], float] = time.time) -> Store:
    if url.startswith("memory://"):
        return MemoryStore(clock)
    if (path := sqlite_path(url)) is not None:
        from .sqlite import SqliteStore

        return SqliteStore(path, clock)
    if url.startswith(("redis://", "rediss://")):
        from .redis import RedisStore

        parts = urlsplit(url)
        prefix = parse_qs(parts.query).get("prefix", ["kefu:"])[0]
        return RedisStore(parts._replace(query="").geturl(), prefix, clock)
    raise ConfigError(Problem(source, None, f"unknown store '{redact_url(url)}': use memory://, sqlite:///PATH "
                                            "or redis://HOST:PORT/DB"))


def sqlite_path(url: str) -> str | None:
    """The file of a `sqlite:///PATH` store URL (relative to the working directory); None for other stores."""
    return (url[len("sqlite:///"):] or "kefu.db") if url.startswith("sqlite:///") else None


__all__ = ["STATUSES", "LogEntry", "MemoryStore", "OutboxItem", "RuleHits", "Status", "Store", "open_store"]
