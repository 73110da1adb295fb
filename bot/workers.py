"""`kefu serve --workers N`: N server processes on one port, sharing one store.

The parent checks the configuration and the rules (so a broken edit fails here with `file:line`, not N
times), opens the listening socket, and forks the workers, which inherit it and take turns accepting
connections. Each worker is a whole kefu: its own event loop, rule watcher and outbox lanes. What must
happen once across them (the answer to a push and its retries, each reply's send, the token refresh) already
goes through the shared store, exactly as for instances on several hosts; that is why the memory store,
which each process would hold alone, is refused.

The parent stays small: it forwards SIGTERM/SIGINT (stop) and SIGHUP (reload) to every worker, and starts a
new worker when one dies unexpectedly — unless workers keep dying right after starting, which means
something is wrong that restarting will not fix.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable

from aiohttp.web_runner import GracefulExit

from . import logs
from .config import Settings

log = logging.getLogger(__name__)

CRASH_WINDOW = 10.0  # a worker dying this soon after it started counts as a crash loop…
CRASH_LIMIT = 5  # …and this many in a row stop the server


class WorkersError(Exception):
    """--workers cannot run with these settings."""


def check_shared(settings: Settings, workers: int) -> None:
    if workers > 1 and settings.store.startswith("memory:"):
        raise WorkersError(
            f"--workers {workers} needs a store the workers share (store: sqlite:///kefu.db or redis://…): with "
            "memory:// each worker would keep its own dedupe and outbox, and a retried push could be answered "
            "twice")


def listen(host: str, port: int, backlog: int = 1024) -> socket.socket:
    sock = socket.create_server((host, port), backlog=backlog, reuse_port=False)
    sock.set_inheritable(True)
    return sock


def run_workers(workers: int, sock: socket.socket, serve: Callable[[socket.socket], None],
                forget: Callable[[int], None] = lambda pid: None) -> int:
    """Fork `workers` processes that each call serve(sock), supervise them, and return the exit status.
    `forget(pid)` is called for each worker that has exited (to drop what it left behind)."""
    children: dict[int, float] = {}  # pid → started at
    stopping = False
    crashes = 0

    def start() -> None:
        _flush_logs()  # buffered lines must not be written by parent and child both
        pid = os.fork()
        if pid == 0:  # the worker
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(signum, signal.SIG_DFL)
            _die_with_parent()
            code = 0
            try:
                serve(sock)
            except (GracefulExit, KeyboardInterrupt):  # SIGTERM while aiohttp was between two steps
                pass
            except BaseException:  # noqa: BLE001 - whatever happens, a forked child must not return
                log.exception("worker %d failed", os.getpid())
                code = 1
            finally:
                _flush_logs()
                os._exit(code)
        children[pid] = time.monotonic()

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
            signum = signal.SIGTERM
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    for _ in range(workers):
        start()
    log.info("serving with %d workers (pids %s)", workers, ", ".join(map(str, children)))
    _flush_logs()
    status = 0
    while children:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        started = children.pop(pid, None)
        if started is None:
            continue
        forget(pid)
        code = os.waitstatus_to_exitcode(wait_status)
        if stopping:
            continue
        crashes = crashes + 1 if time.monotonic() - started < CRASH_WINDOW else 1
        if crashes >= CRASH_LIMIT:
            log.error("workers keep exiting right after they start (last: %d with %s); stopping", pid,
                      _describe(code))
            stopping = True
            status = 1
            forward(signal.SIGTERM, None)
            continue
        log.warning("worker %d exited with %s; starting another", pid, _describe(code))
        _flush_logs()
        start()
    sock.close()
    return status


def _die_with_parent() -> None:
    """Linux: a worker gets SIGTERM when the parent dies (even by kill -9), instead of serving on alone."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's SIGTERM is still forwarded
        pass
    if os.getppid() == 1:  # the parent died before prctl
        os._exit(0)


def _flush_logs() -> None:
    logs.flush()


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:  # pragma: no cover
            return f"signal {-code}"
    return f"status {code}"

