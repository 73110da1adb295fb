"""Backups of the sqlite store, and putting one back: `kefu backup PATH` and `kefu restore PATH`.

A backup is taken with SQLite's online backup API in one step, so it is one consistent snapshot (a read
transaction: under WAL the bot keeps writing meanwhile), written next to its destination and renamed into
place once complete and checked, as a single file (rollback journal, no -wal beside it) to copy anywhere.
Restoring needs the bot stopped: it takes the store file's exclusive lock, which fails while any process has
the file open, keeps the store it replaces as PATH.before-restore, then copies the backup's pages in. A
backup from an older kefu is migrated when kefu next opens the store (sqlschema.py).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..errors import StoreError
from .sqlschema import check_store
from .sqlthread import BUSY_TIMEOUT_MS

IN_USE_WAIT = 1.0  # seconds restore waits for the store's lock before saying it is in use


@dataclass(frozen=True)
class Copy:
    """What was written: where, from where, its schema version and size."""

    path: Path
    source: Path
    schema: int
    size: int
    replaced: Path | None = None  # restore: where the store it replaced was kept


def backup(store: Path, dest: Path, folder: bool = False, now: float | None = None) -> Copy:
    """Copy the store at `store` to `dest` (a file, or a folder to get kefu-YYYYmmdd-HHMMSS.db: one that
    exists, or any when `folder`), safely while kefu runs on it."""
    src = _open_existing(store, "rw")  # rw: reading a WAL file may need to write its -shm index
    part = None
    try:
        if folder or dest.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            dest = dest / f"{store.stem}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}.db"
        part = dest.with_name(dest.name + ".part")
        with contextlib.closing(sqlite3.connect(part, isolation_level=None)) as out:
            src.backup(out)  # all pages in one step: one read snapshot
            out.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
            schema = check_store(out, str(store))
        os.replace(part, dest)
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"cannot back up {store} to {dest}: {exc}") from exc
    finally:
        src.close()
        if part is not None:
            with contextlib.suppress(OSError):
                part.unlink()
    return Copy(dest, store, schema, dest.stat().st_size)


def restore(store: Path, source: Path) -> Copy:
    """Put the backup at `source` in place of the store at `store`. Refuses while anything has it open."""
    src = _open_existing(source, "ro")
    try:
        schema = check_store(src, str(source))
        with contextlib.closing(sqlite3.connect(store, isolation_level=None, timeout=IN_USE_WAIT)) as db:
            db.execute("PRAGMA locking_mode = EXCLUSIVE")  # held until close: no kefu can open it meanwhile
            try:
                db.execute("BEGIN EXCLUSIVE")
                db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                raise StoreError(f"{store} is in use (is kefu running on it?): stop kefu first ({exc})") from exc
            replaced = None
            if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                replaced = store.with_name(store.name + ".before-restore")
                with contextlib.closing(sqlite3.connect(replaced)) as aside:
                    db.backup(aside)
            src.backup(db)
            with contextlib.suppress(sqlite3.Error):
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"cannot restore {store} from {source}: {exc}") from exc
    finally:
        src.close()
    return Copy(store, source, schema, store.stat().st_size, replaced)


def _open_existing(path: Path, mode: str) -> sqlite3.Connection:
    """A connection to a file that must exist already (sqlite would create an empty one)."""
    if not path.is_file():
        raise StoreError(f"{path}: no such file")
    try:
        db = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode={mode}", uri=True,
                             timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open: {exc}") from exc
    return db
