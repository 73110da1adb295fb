"""The sqlite store's schema, its version and the migrations between versions.

A file's `PRAGMA user_version` says which of the MIGRATIONS it has had. Opening a file runs the steps it
lacks, under the write lock (processes opening at once take turns), so a store written by an older kefu is
read by a newer one; a file from a newer kefu is refused, never written to.

Changing the schema: append a step to MIGRATIONS (never edit a released one: files out there have had it),
raise SCHEMA_VERSION, and check in `tests/fixtures/store-vN.sql` for the new N — a store with a few rows as
the new kefu writes it, dumped with `sqlite3 kefu.db .dump`. tests/test_store_schema.py opens every such
fixture, so each later kefu is tested against the stores each earlier one wrote.
"""

from __future__ import annotations

import sqlite3

from ..errors import StoreError

SCHEMA_VERSION = 2
TABLES = ("kv", "answers", "outbox", "log", "hits")  # what a kefu store holds (restore checks for them)

# MIGRATIONS[v] takes a file from user_version v to v + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = ((
    "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL)",
    "CREATE INDEX IF NOT EXISTS kv_expires ON kv (expires)",
    "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer BLOB NOT NULL, expires REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS answers_expires ON answers (expires)",
    """CREATE TABLE IF NOT EXISTS outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL, reply TEXT NOT NULL, push TEXT NOT NULL,
        created_at REAL NOT NULL, send_as TEXT, status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0, errcode INTEGER, error TEXT, next_try REAL NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS outbox_status_user ON outbox (status, user, id)",  # next, users
    "CREATE INDEX IF NOT EXISTS outbox_status ON outbox (status, id)",  # items(status), oldest pending
    "CREATE INDEX IF NOT EXISTS outbox_user ON outbox (user, id)",  # items(user)
    """CREATE TABLE IF NOT EXISTS log (
        id INTEGER PRIMARY KEY, ts REAL NOT NULL, user TEXT NOT NULL, kind TEXT NOT NULL,
        msg_type TEXT NOT NULL, text TEXT NOT NULL, rule TEXT NOT NULL, errcode INTEGER, detail TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS log_user_ts ON log (user, ts)",
    "CREATE INDEX IF NOT EXISTS log_ts ON log (ts)",
), (
    # rule hits: one row per rule and local day, and one per rule with day '*' holding the total
    """CREATE TABLE IF NOT EXISTS hits (
        rule TEXT NOT NULL, day TEXT NOT NULL, count INTEGER NOT NULL, last REAL NOT NULL,
        PRIMARY KEY (rule, day))""",
),)


def migrate(db: sqlite3.Connection) -> None:
    """Bring the file's schema up to SCHEMA_VERSION (in the caller's write transaction)."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(f"sqlite store: schema {version} is newer than this kefu ({SCHEMA_VERSION}): "
                         "it was written by a newer kefu")
    for steps in MIGRATIONS[version:]:
        for sql in steps:
            db.execute(sql)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def check_store(db: sqlite3.Connection, name: str) -> int:
    """The schema version of a file that holds an intact kefu store this kefu can read; else StoreError."""
    try:
        intact = db.execute("PRAGMA quick_check").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:  # not a database at all, or unreadable
        raise StoreError(f"{name}: not a kefu store: {exc}") from exc
    if intact != "ok":
        raise StoreError(f"{name}: damaged: {intact}")
    missing = [t for t in TABLES[:4] if t not in tables]  # the tables of schema 1 (hits came with 2)
    if version < 1 or missing:
        lacks = f", no table {', '.join(missing)}" if missing else ""
        raise StoreError(f"{name}: not a kefu store (schema version {version}{lacks})")
    if version > SCHEMA_VERSION:
        raise StoreError(f"{name}: schema {version} was written by a newer kefu (this one reads up to "
                         f"{SCHEMA_VERSION})")
    return version
