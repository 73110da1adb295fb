"""Where kefu keeps what must outlive one request: the outbox (and, as it grows, state and dedupe keys).

`open_store(url)` picks the backend from bot.yaml's `store:` URL.
"""

from __future__ import annotations

from ..errors import ConfigError, Problem
from .base import OutboxItem, Store
from .memory import MemoryStore


def open_store(url: str, source: str = "bot.yaml") -> Store:
    if url.startswith("memory://"):
        return MemoryStore()
    scheme = url.split(":", 1)[0]
    raise ConfigError(Problem(source, None, f"store '{scheme}' is not available in this version of kefu; "
                                            "use store: memory://"))


__all__ = ["MemoryStore", "OutboxItem", "Store", "open_store"]
