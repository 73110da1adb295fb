"""The app's parts and their lifecycle: the store, the outbox, the WeChat API client, the rules holder, the
reloader and the metrics — built before the app starts, opened and closed by aiohttp's cleanup contexts.

The HTTP edge (server.py) and the console read them from `app[RUNTIME]`; nothing here knows about routes.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from .config import Settings
from .convlog import ConversationLog
from .dedupe import Dedupe
from .engine import RuleSet
from .errors import StoreError
from .metrics import Metrics, SharedMetrics
from .outbox import Outbox
from .protocol.crypto import WeChatCrypto
from .protocol.push import PushCodec
from .reload import Reloader, RulesHolder
from .sources import load_ruleset
from .store import Store, open_store
from .store.health import StoreHealth
from .transport import make_session
from .watch import watch
from .wechat_api import RetryPolicy, WeChatAPI

log = logging.getLogger(__name__)

YOUNG_GC_THRESHOLD = 20_000  # allocations between collections of the youngest generation (Python's: 700)


@dataclass
class Runtime:
    """Everything the handlers share, stored once on the app. `api` and `session` are made when the app
    starts (a ClientSession belongs to a running loop); `api` stays None without WeChat credentials."""

    settings: Settings
    rules: RulesHolder
    store: Store
    codec: PushCodec
    reloader: Reloader
    conversation: ConversationLog
    outbox: Outbox
    clock: Callable[[], float] = time.time
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    dedupe: Dedupe[Any] = field(default_factory=Dedupe)  # push → its Answer, for WeChat's retries
    watching: asyncio.Event = field(default_factory=asyncio.Event)  # set while the file watcher is armed
    health: StoreHealth = field(default_factory=StoreHealth)
    metrics: Metrics = field(default_factory=Metrics)
    shared_metrics: SharedMetrics | None = None  # with --workers: the other workers' counts
    api: WeChatAPI | None = None
    session: aiohttp.ClientSession | None = None


RUNTIME = web.AppKey("runtime", Runtime)


def build_runtime(settings: Settings, *, ruleset: RuleSet | None = None, store: Store | None = None,
                  clock: Callable[[], float] = time.time, retry: RetryPolicy | None = None,
                  config: Path | None = None, tune_gc: bool = False,
                  metrics_folder: Path | None = None) -> Runtime:
    """Every part the app needs, made now (a RulesError here means the bot cannot start)."""
    ruleset = ruleset if ruleset is not None else load_ruleset(settings)
    holder = RulesHolder(ruleset, clock)
    store = store if store is not None else open_store(settings.store, settings.source, clock)
    retry = retry or RetryPolicy()
    wechat = settings.wechat
    crypto = WeChatCrypto(wechat.encoding_aes_key.reveal(), wechat.appid) if wechat.encoding_aes_key else None
    codec = PushCodec(wechat.token, crypto, clock=clock, max_timestamp_age=settings.security.max_timestamp_age,
                      require_encryption=settings.security.require_encryption)
    metrics = Metrics()
    conversation = ConversationLog(store, settings.timezone)
    outbox = Outbox(store, None, settings.outbox, clock, base_delay=retry.base_delay, conversation=conversation,
                    metrics=metrics)
    reloader = Reloader(holder, settings, config, manage_gc=tune_gc)
    metrics.reloads = lambda: (reloader.builds, reloader.swaps, reloader.refused)
    metrics.ruleset = lambda: (holder.current.version, len(holder.current.rules), holder.loaded_at)
    return Runtime(settings=settings, rules=holder, store=store, codec=codec, reloader=reloader,
                   conversation=conversation, outbox=outbox, clock=clock, retry=retry, metrics=metrics,
                   shared_metrics=SharedMetrics(metrics_folder, metrics) if metrics_folder is not None else None)


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    rt = app[RUNTIME]
    await rt.store.open()
    rt.session = make_session(rt.settings.wechat)  # proxy and CA: see transport.py
    if rt.settings.wechat.has_credentials:
        rt.api = WeChatAPI(rt.settings.wechat, rt.session, rt.retry, store=rt.store)
        rt.outbox.sender = rt.api.send
    else:
        log.warning("no wechat.appid/secret: replies are not sent but kept in the conversation log as '%s' "
                    "(kefu log; --log-level DEBUG prints each)", "not sent: no credentials")
    rt.conversation.start()
    await rt.outbox.start()
    housekeeping = asyncio.create_task(_housekeeping(rt), name="kefu-housekeeping")
    log_flusher = asyncio.create_task(_flush_logs(rt), name="kefu-log-flush")
    if rt.reloader.manage_gc:
        gc.collect()
        gc.freeze()  # modules, the app and the first rule set live as long as the process
        # A push allocates a few hundred objects, nearly all freed by reference counting before the next
        # push: with the default 700, the youngest generation was collected every other push or so, and
        # those collections cost a push about 7% of its time. Cycles still go, a little later.
        gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])
    log.info("ready: %d rules (version %s) on %s", len(rt.rules.current.rules), rt.rules.current.version,
             rt.settings.server.path)
    try:
        yield
    finally:
        housekeeping.cancel()
        log_flusher.cancel()
        if rt.shared_metrics is not None:
            rt.shared_metrics.remove()
        await rt.outbox.close()
        await rt.conversation.close()
        await rt.session.close()
        await rt.store.close()


def reloading(watch_files: bool, signals: bool) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context that reloads the rules when their files change and/or on SIGHUP."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        rt = app[RUNTIME]
        reloader = rt.reloader
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        watcher = asyncio.create_task(watch(reloader, stop, rt.watching), name="kefu-watch") \
            if watch_files else None
        if signals and hasattr(signal, "SIGHUP"):
            loop.add_signal_handler(signal.SIGHUP, reloader.request, "SIGHUP")
        try:
            yield
        finally:
            if signals and hasattr(signal, "SIGHUP"):
                loop.remove_signal_handler(signal.SIGHUP)
            stop.set()
            if watcher is not None:
                await watcher
            await reloader.close()
    return context


async def _flush_logs(rt: Runtime) -> None:
    """With --workers, this worker's metrics are written for the others every second."""
    shared = rt.shared_metrics
    while shared is not None:
        await asyncio.sleep(1.0)
        try:  # the counts as of now; the file write off the event loop
            await asyncio.to_thread(shared.write, rt.metrics.snapshot())
        except OSError as exc:  # pragma: no cover - a full or vanished temp folder
            log.debug("metrics: snapshot not written: %s", exc)


async def _housekeeping(rt: Runtime) -> None:
    """Forget conversation log entries and finished outbox items older than `log.keep`, hourly."""
    while True:
        try:
            before = rt.clock() - rt.settings.log.keep
            purged = await rt.store.log_purge(before)
            purge = getattr(rt.store, "outbox_purge", None)
            if purge is not None:
                purged += await purge(before)
            if purged:
                log.info("housekeeping: forgot %d log entries and outbox items older than %d days", purged,
                         rt.settings.log.keep // 86400)
        except StoreError:
            pass
        await asyncio.sleep(3600)
