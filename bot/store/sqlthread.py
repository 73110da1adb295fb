"""The sqlite store's thread: group commit of the calls queued to it.

All I/O runs on this thread (never on the event loop), which owns a plain sqlite3 connection. Callers queue
small functions and await their answers; the thread runs everything queued at once as ONE transaction, each
call in a SAVEPOINT of its own (a call that fails is rolled back alone and its caller gets StoreError; the
others commit), and answers after COMMIT: a write is committed before its call returns. A batch with a write
begins IMMEDIATE, taking the file's write lock at once, so read-then-write calls are atomic also against other
processes. WAL lets readers and the one writer work at once; `busy_timeout` makes a process wait for
another's write instead of failing. Every PURGE_EVERY-th write also runs the store's `sweep`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any, NamedTuple, TypeVar

from ..errors import StoreError

BUSY_TIMEOUT_MS = 5000
PURGE_EVERY = 500  # writes between two sweeps of expired keys and answers
MAX_BATCH = 500  # calls per transaction: bounds how long one commit keeps other processes waiting

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]


class _Call(NamedTuple):
    """One call waiting for the store's thread: what to run there, and where its answer goes."""

    what: str
    op: Op
    write: bool  # False: it only reads (a batch of reads only begins DEFERRED and locks nobody out)
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


Outcome = tuple[_Call, Any, BaseException | None]  # (call, result, error)


def connect(path: str) -> sqlite3.Connection:
    """A connection as the store uses it: autocommit (the caller says BEGIN), waiting for other writers, WAL."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")  # first: WAL may wait too
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        db.close()
        raise
    return db


class SqliteThread:
    """One file's thread: start() it, call() it from the event loop, stop() it (the calls queued still run)."""

    def __init__(self, path: str, clock: Callable[[], float], sweep: Callable[[sqlite3.Connection, float], None]):
        self.path = path
        self._clock = clock
        self._sweep = sweep
        self._queue: SimpleQueue[_Call | None] = SimpleQueue()  # None on the queue: stop
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._writes = 0  # the thread's alone
        self._close_error: sqlite3.Error | None = None

    def start(self) -> None:
        self._thread.start()

    async def stop(self) -> None:
        """Stop taking calls, let the thread finish those queued, close the file."""
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)  # the calls queued before still run and are answered
        if self._close_error is not None:
            raise StoreError(f"sqlite store: close failed: {self._close_error}") from self._close_error

    async def call(self, what: str, op: Callable[[sqlite3.Connection], T], write: bool = True) -> T:
        """Run `op` on the thread (in a savepoint of the next batch); its result once committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Call(what, op, write, loop, future))
        return await future

    # -- on the thread -----------------------------------------------------------------------------

    def _serve(self) -> None:
        """Open the file, run batches of calls until stop() queues None, close the file."""
        queue = self._queue
        db: sqlite3.Connection | None = None
        failure: StoreError | None = None
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = connect(self.path)  # only this thread uses the connection
        except Exception as exc:  # OSError, sqlite3.Error, ValueError (a NUL in the path): the thread stays
            failure = StoreError(f"sqlite store: cannot open the file: {exc}")  # each call gets it, until stop()
        stop = False
        while not stop:
            calls = [queue.get()]
            with contextlib.suppress(Empty):
                while len(calls) < MAX_BATCH and calls[-1] is not None:
                    calls.append(queue.get_nowait())
            stop = calls[-1] is None  # stop() queues None last: the calls before it still run
            if batch := [call for call in calls if call is not None]:
                _deliver(self._run(db, batch) if db is not None else [(call, None, failure) for call in batch])
        if db is not None:
            try:
                db.close()
            except sqlite3.Error as exc:
                self._close_error = exc

    def _run(self, db: sqlite3.Connection, calls: list[_Call]) -> list[Outcome]:
        """One transaction for all `calls`, each in a savepoint: a call that raises is rolled back alone.
        If the transaction itself fails (BEGIN, COMMIT, or sqlite rolled it all back: disk full, I/O error),
        nothing of it was written and every call gets the error."""
        outcomes: list[Outcome] = []
        writes = sum(call.write for call in calls)
        try:
            db.execute("BEGIN IMMEDIATE" if writes else "BEGIN DEFERRED")
            for call in calls:
                if not call.future.cancelled():  # a racy look from this thread, good enough to skip the abandoned
                    outcomes.append((call, *_isolated(db, call.what, call.op)))
            if self._writes // PURGE_EVERY != (self._writes + writes) // PURGE_EVERY:
                now = self._clock()  # a sweep that fails is only skipped
                _isolated(db, "purge", lambda db: self._sweep(db, now))
            db.execute("COMMIT")
        except Exception as exc:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            return [(call, None, _error(call.what, exc)) for call in calls]
        self._writes += writes
        return outcomes


def _error(what: str, exc: BaseException) -> BaseException:
    """What the caller gets: sqlite's failures as StoreError (without data in it); a bug as itself."""
    if not isinstance(exc, (sqlite3.Error, ValueError)):
        return exc
    error = StoreError(f"sqlite store: {what} failed: {exc}")
    error.__cause__ = exc
    return error


def _isolated(db: sqlite3.Connection, what: str, op: Op) -> tuple[Any, BaseException | None]:
    """Run `op` in a savepoint: (its result, None), or rolled back alone: (None, the error for its caller).
    Raises when sqlite has rolled back the whole transaction."""
    db.execute("SAVEPOINT call")
    try:
        result = op(db)
    except Exception as exc:
        if not db.in_transaction:
            raise
        db.execute("ROLLBACK TO call")
        db.execute("RELEASE call")
        return None, _error(what, exc)
    db.execute("RELEASE call")
    return result, None


def _deliver(outcomes: list[Outcome]) -> None:
    """Complete the callers' futures: one wake-up per event loop for the whole batch."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits for these any more
            loop.call_soon_threadsafe(_settle, settled)


def _settle(outcomes: list[Outcome]) -> None:  # on the event loop
    for call, result, error in outcomes:
        if call.future.done():  # cancelled while its call ran
            pass
        elif error is None:
            call.future.set_result(result)
        else:
            call.future.set_exception(error)
