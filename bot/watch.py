"""Watching bot.yaml, the rules folder and the templates folder, and asking the Reloader to reload.

Directories are watched, not files, so editors' atomic saves (write a temporary file, rename it over the
original) are seen. The rules folder and bot.yaml's folder are watched without recursion (rule files sit
directly in the rules folder, and a bot.yaml folder may hold a whole virtualenv); the templates folder with
every subfolder. A folder that does not exist yet is noticed through its parent, and the watch set is
rebuilt when folders appear or disappear. watchfiles groups a burst of writes into one batch (`STEP_MS` of
quiet), and the Reloader coalesces batches that arrive during a build.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from watchfiles import awatch

from .reload import Reloader

log = logging.getLogger(__name__)

STEP_MS = 50  # a batch ends after this much quiet…
DEBOUNCE_MS = 400  # …or after this long, whichever comes first
IDLE_MS = 200  # with no change, the watcher wakes this often (cheap: a thread hop)


def _existing(path: Path) -> Path:
    while not path.is_dir() and path.parent != path:
        path = path.parent
    return path


def watch_dirs(reloader: Reloader) -> frozenset[Path]:
    settings = reloader.watched
    dirs = {_existing(settings.rules.resolve()), _existing(settings.templates.resolve())}
    if reloader.config is not None:
        dirs.add(reloader.config.resolve().parent)
    templates = settings.templates.resolve()
    if templates.is_dir():
        for root, subdirs, _ in os.walk(templates):
            subdirs[:] = [d for d in subdirs if not d.startswith(".")]
            dirs.update(Path(root) / d for d in subdirs)
    return frozenset(dirs)


def _relevant(reloader: Reloader, path: Path) -> bool:
    settings = reloader.watched
    rules, templates = settings.rules.resolve(), settings.templates.resolve()
    if reloader.config is not None and path == reloader.config.resolve():
        return True
    for folder in (rules, templates):
        if path == folder or folder in path.parents:
            return True
        if path in folder.parents:  # a parent of a missing folder changed: the folder may have appeared
            return True
    return False


async def watch(reloader: Reloader, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
    """Run until `stop` is set. Every relevant batch of changes requests a reload. `ready` is set once
    the directories are being watched (and cleared while the watch set is rebuilt)."""
    while not stop.is_set():
        dirs = watch_dirs(reloader)
        log.debug("watching %s", ", ".join(sorted(map(str, dirs))))
        # yield_on_timeout: an empty batch after IDLE_MS of quiet, which tells that the watch is armed
        async for changes in awatch(*dirs, recursive=False, step=STEP_MS, debounce=DEBOUNCE_MS,
                                    stop_event=stop, ignore_permission_denied=True,
                                    rust_timeout=IDLE_MS, yield_on_timeout=True):
            if ready is not None and not changes:
                ready.set()
            paths = sorted({Path(p) for _, p in changes if _relevant(reloader, Path(p))})
            if paths:
                names = ", ".join(p.name for p in paths[:3]) + (" …" if len(paths) > 3 else "")
                await reloader.request(f"changed: {names}")
            if watch_dirs(reloader) != dirs:
                if ready is not None:
                    ready.clear()
                break  # folders appeared or disappeared: watch the new set
