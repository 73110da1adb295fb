"""`kefu backup` and `kefu restore`: the commands around store/backup.py as the CLI runs them (they print and
return an exit code; only __main__ exits)."""

from __future__ import annotations

import sys
from pathlib import Path

from .config import Settings
from .errors import StoreError


def _sqlite_file(settings: Settings, command: str) -> Path | None:
    from .store import sqlite_path

    path = sqlite_path(settings.store)
    if path is None:
        why = ("the memory store keeps nothing" if settings.store.startswith("memory://") else
               "Redis is backed up by its own persistence (RDB snapshots or AOF: see docs/deploy.md)")
        print(f"kefu {command}: {settings.source}: store '{settings.store_display}' is not an sqlite file; {why}",
              file=sys.stderr)
        return None
    return Path(path)


def run_backup(settings: Settings, dest: str) -> int:
    """Copy the sqlite store while kefu runs (SQLite's online backup)."""
    from .store.backup import backup

    store = _sqlite_file(settings, "backup")
    if store is None:
        return 1
    try:
        copy = backup(store, Path(dest), folder=dest.endswith("/"))  # PATH/: a folder, made if need be
    except StoreError as exc:
        print(f"kefu backup: {exc}", file=sys.stderr)
        return 1
    print(f"backed up {copy.source} to {copy.path} (schema {copy.schema}, {copy.size} bytes)")
    return 0


def run_restore(settings: Settings, source: str) -> int:
    """Put a backup in place of the sqlite store; kefu must be stopped."""
    from .store.backup import restore

    store = _sqlite_file(settings, "restore")
    if store is None:
        return 1
    try:
        copy = restore(store, Path(source))
    except StoreError as exc:
        print(f"kefu restore: {exc}", file=sys.stderr)
        return 1
    print(f"restored {copy.path} from {copy.source} (schema {copy.schema}, {copy.size} bytes)"
          + (f"; the store it replaced is kept as {copy.replaced}" if copy.replaced else ""))
    return 0
