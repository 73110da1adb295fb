"""Watching bot.yaml, the rules, templates and media folders, and asking the Reloader to reload.

Directories are watched, not files, so editors' atomic saves (write a temporary file, rename it over the
original) are seen. The rules folder and bot.yaml's folder are watched without recursion (rule files sit
directly in the rules folder, and a bot.yaml folder may hold a whole virtualenv); the templates and media
folders with every subfolder. A folder that does not exist yet is noticed through its parent, and the watch set
is rebuilt when folders appear or disappear, or when a watched folder is replaced by another of the same name
(`rm -rf rules && mv rules.new rules`: the watch on the old one would see nothing more). watchfiles groups a
burst of writes into one batch (`STEP_MS` of quiet), and the Reloader coalesces batches that arrive during a
build.
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
REARM_EVERY = 2.0  # seconds between two looks for replaced folders when nothing changed (it walks the folders)


def _existing(path: Path) -> Path:
    while not path.is_dir() and path.parent != path:
        path = path.parent
    return path


def watch_dirs(reloader: Reloader) -> frozenset[Path]:
    settings = reloader.watched
    trees = (settings.templates.resolve(), settings.media.resolve())
    dirs = {_existing(settings.rules.resolve()), *(_existing(tree) for tree in trees)}
    if reloader.config is not None:
        dirs.add(reloader.config.resolve().parent)
    for tree in trees:
        if tree.is_dir():
            for root, subdirs, _ in os.walk(tree):
                subdirs[:] = [d for d in subdirs if not d.startswith(".")]
                dirs.update(Path(root) / d for d in subdirs)
    return frozenset(dirs)


Identity = tuple[int, int] | None  # (device, inode); None: gone


def _identities(dirs: frozenset[Path]) -> dict[Path, Identity]:
    """Which folder each path is: a folder replaced by another of the same name has another inode."""
    out: dict[Path, Identity] = {}
    for path in dirs:
        try:
            st = path.stat()
        except OSError:
            out[path] = None
        else:
            out[path] = (st.st_dev, st.st_ino)
    return out


def _relevant(reloader: Reloader, path: Path) -> bool:
    settings = reloader.watched
    if reloader.config is not None and path == reloader.config.resolve():
        return True
    for folder in (settings.rules.resolve(), settings.templates.resolve(), settings.media.resolve()):
        if path == folder or folder in path.parents:
            return True
        if path in folder.parents:  # a parent of a missing folder changed: the folder may have appeared
            return True
    return False


async def watch(reloader: Reloader, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
    """Run until `stop` is set. Every relevant batch of changes requests a reload. `ready` is set once
    the directories are being watched, and cleared as soon as the watch set must be rebuilt (before the reload
    that batch asks for), so that once that reload is seen, `ready` tells when the new set is armed."""
    clock = asyncio.get_running_loop().time
    while not stop.is_set():
        dirs = watch_dirs(reloader)
        identities, looked = _identities(dirs), clock()
        log.debug("watching %s", ", ".join(sorted(map(str, dirs))))
        # yield_on_timeout: an empty batch after IDLE_MS of quiet, which tells that the watch is armed
        async for changes in awatch(*dirs, recursive=False, step=STEP_MS, debounce=DEBOUNCE_MS,
                                    stop_event=stop, ignore_permission_denied=True,
                                    rust_timeout=IDLE_MS, yield_on_timeout=True):
            # a change may be a folder replaced: look at once; when nothing changed, now and then (the look walks
            # the templates and media folders, which may hold thousands of files)
            rearm = False
            if changes or clock() - looked >= REARM_EVERY:
                rearm, looked = _rearm(reloader, dirs, identities), clock()
            if rearm and ready is not None:
                ready.clear()
            if ready is not None and not changes and not rearm:
                ready.set()
            paths = sorted({Path(p) for _, p in changes if _relevant(reloader, Path(p))})
            if paths or rearm:  # a replaced folder may have changed before the new watch was armed
                names = ", ".join(p.name for p in paths[:3]) + (" …" if len(paths) > 3 else "")
                try:
                    await reloader.request(f"changed: {names or 'folders'}")
                except Exception:  # the Reloader reports its own failures; whatever else: keep watching
                    log.exception("reload after a change failed; still watching")
            if rearm:
                break  # folders appeared, disappeared or were replaced: watch the new set


def _rearm(reloader: Reloader, dirs: frozenset[Path], identities: dict[Path, Identity]) -> bool:
    """Whether the watch set must be rebuilt: other folders to watch, or a watched folder replaced."""
    now = watch_dirs(reloader)
    return now != dirs or _identities(now) != identities
