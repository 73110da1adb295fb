"""The inbound HTTP edge: routes, the push handler and the app's lifecycle.

Only this module maps errors to HTTP status codes. The push handler verifies the signature before it reads
or parses anything, answers within WeChat's window without waiting for the WeChat API (replies are stored in
the outbox and sent after), and never answers 500 for anything a client sends.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from . import allowance, logs
from .config import Settings
from .convlog import ConversationLog
from .dedupe import Dedupe
from .engine import RuleSet, decide
from .errors import ProtocolError, PushTooLarge, PushTooSlow, StoreError
from .messages import Decision, Message, Reply
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics, SharedMetrics
from .outbox import Outbox, short_user
from .protocol.crypto import WeChatCrypto
from .protocol.push import Push, PushCodec
from .protocol.signature import check_timestamp, verify
from .protocol.wire import passive_fields, transfer_fields
from .reload import Reloader, RulesHolder, load_ruleset
from .store import LogEntry, Store, open_store
from .store.health import StoreHealth
from .store.state import (
    cooldown_key,
    end_handoff,
    handoff_key,
    parse_cooldowns,
    parse_state,
    save_cooldown,
    save_state,
    start_handoff,
    state_key,
)
from .textsplit import split_replies
from .watch import watch
from .wechat_api import RetryPolicy, WeChatAPI

log = logging.getLogger(__name__)

YOUNG_GC_THRESHOLD = 20_000  # allocations between collections of the youngest generation (Python's: 700)
RETRY_WAIT = 4.0  # how long a retried push waits for the first delivery's answer


@dataclass(frozen=True, slots=True)
class Answer:
    """The HTTP answer to a push, kept so that retries of the same push get exactly the same bytes."""

    body: bytes
    content_type: str
    kind: str  # "success" or "transfer"

    def response(self) -> web.Response:
        headers = _HEADERS.get(self.content_type)
        if headers is None:  # text/plain, text/xml, application/json: made once (aiohttp copies them)
            headers = _HEADERS[self.content_type] = {"Content-Type": f"{self.content_type}; charset=utf-8"}
        return web.Response(body=self.body, headers=headers)

    def to_bytes(self) -> bytes:
        return f"{self.kind}\n{self.content_type}\n".encode() + self.body

    @classmethod
    def from_bytes(cls, data: bytes) -> Answer:
        kind, content_type, body = data.split(b"\n", 2)
        return cls(body, content_type.decode(), kind.decode())


_HEADERS: dict[str, dict[str, str]] = {}
SUCCESS = Answer(b"success", "text/plain", "success")
DEDUPE_TTL = 300.0  # seconds a push's answer is kept for WeChat's retries (it retries within ~15 s)
SHARED_POLL = 0.05  # seconds between looks for another instance's answer


@dataclass
class Runtime:
    """Everything the handlers share. Stored once on the app; the lifecycle fills in what needs a loop."""

    settings: Settings
    rules: RulesHolder
    store: Store
    clock: Callable[[], float] = time.time
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    codec: PushCodec | None = None
    dedupe: Dedupe[Answer] = field(default_factory=Dedupe)
    reloader: Reloader | None = None
    watching: asyncio.Event = field(default_factory=asyncio.Event)  # set while the file watcher is armed
    health: StoreHealth = field(default_factory=StoreHealth)
    conversation: ConversationLog | None = None
    outbox: Outbox | None = None
    api: WeChatAPI | None = None
    session: aiohttp.ClientSession | None = None
    metrics: Metrics = field(default_factory=Metrics)
    shared_metrics: SharedMetrics | None = None  # with --workers: the other workers' counts


RUNTIME = web.AppKey("runtime", Runtime)


def create_app(settings: Settings, *, ruleset: RuleSet | None = None, store: Store | None = None,
               clock: Callable[[], float] = time.time, retry: RetryPolicy | None = None,
               config: Path | None = None, watch: bool = False, signals: bool = False,
               tune_gc: bool = False, metrics_folder: Path | None = None) -> web.Application:
    """Build the app. Loads the rules now (a RulesError here means the bot cannot start).

    `config` is the bot.yaml that reloads re-read (None: only the rules and templates folders); `watch`
    reloads when files change; `signals` reloads on SIGHUP; `tune_gc` keeps rule sets out of the cycle
    collector's full collections (see Reloader), for a server process that owns its garbage collector."""
    ruleset = ruleset if ruleset is not None else load_ruleset(settings)
    holder = RulesHolder(ruleset, clock)
    runtime = Runtime(settings=settings, rules=holder, clock=clock,
                      store=store if store is not None else open_store(settings.store, settings.source),
                      retry=retry or RetryPolicy(),
                      reloader=Reloader(holder, settings, config, manage_gc=tune_gc))
    wechat = settings.wechat
    crypto = WeChatCrypto(wechat.encoding_aes_key.reveal(), wechat.appid) if wechat.encoding_aes_key else None
    runtime.codec = PushCodec(wechat.token, crypto, clock=clock,
                              max_timestamp_age=settings.security.max_timestamp_age,
                              require_encryption=settings.security.require_encryption)
    app = web.Application(client_max_size=settings.security.max_body_bytes + 1024)
    app[RUNTIME] = runtime
    path = settings.server.path
    app.router.add_get(path, handle_verify)
    app.router.add_post(path, handle_push)
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    app.router.add_get("/metrics", handle_metrics)
    reloader = runtime.reloader
    runtime.metrics.reloads = lambda: (reloader.builds, reloader.swaps, reloader.refused)
    runtime.metrics.ruleset = lambda: (holder.current.version, len(holder.current.rules), holder.loaded_at)
    if metrics_folder is not None:
        runtime.shared_metrics = SharedMetrics(metrics_folder, runtime.metrics)
    if settings.admin.token:
        app.router.add_get("/admin/status", handle_admin_status)
        app.router.add_post("/admin/reload", handle_admin_reload)
        from .console import setup as setup_console  # the web console for operators (bot/console)

        setup_console(app)
    app.cleanup_ctx.append(_lifecycle)
    if watch or signals:
        app.cleanup_ctx.append(_reloading(watch, signals))
    return app


def _reloading(watch_files: bool, signals: bool):
    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        reloader = app[RUNTIME].reloader
        assert reloader is not None  # create_app always makes one
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        rt = app[RUNTIME]
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
    return lifecycle


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    rt = app[RUNTIME]
    await rt.store.open()
    rt.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
    sender = None
    if rt.settings.wechat.has_credentials:
        rt.api = WeChatAPI(rt.settings.wechat, rt.session, rt.retry, store=rt.store)
        sender = rt.api.send
    else:
        log.warning("no wechat.appid/secret: replies are not sent but kept in the conversation log as '%s' "
                    "(kefu log; --log-level DEBUG prints each)", "not sent: no credentials")
    rt.conversation = ConversationLog(rt.store, rt.settings.timezone)
    rt.conversation.start()
    rt.outbox = Outbox(rt.store, sender, rt.settings.outbox, rt.clock, base_delay=rt.retry.base_delay,
                       conversation=rt.conversation, metrics=rt.metrics)
    await rt.outbox.start()
    housekeeping = asyncio.create_task(_housekeeping(rt), name="kefu-housekeeping")
    log_flusher = asyncio.create_task(_flush_logs(rt), name="kefu-log-flush")
    if rt.reloader is not None and rt.reloader.manage_gc:
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
        if rt.api is not None:
            await rt.api.close()
        await rt.conversation.close()
        await rt.session.close()
        await rt.store.close()


async def _flush_logs(rt: Runtime) -> None:
    """Log lines are written in batches (see logs.py): write a quiet moment's last lines within a moment.
    With --workers, this worker's metrics are written for the others every second too."""
    shared, last = rt.shared_metrics, 0.0
    while True:
        await asyncio.sleep(logs.FLUSH_EVERY)
        logs.tick()
        if shared is not None and time.monotonic() - last >= 1.0:
            last = time.monotonic()
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


# ---- handlers --------------------------------------------------------------------------------------------


async def handle_verify(request: web.Request) -> web.Response:
    """The URL check WeChat makes when the 消息推送 URL is saved: echo `echostr` if the signature holds."""
    rt = request.app[RUNTIME]
    q = request.query
    try:  # the echostr is plaintext on mini programs and official accounts, in every mode
        verify((rt.settings.wechat.token.reveal(), q.get("timestamp", ""), q.get("nonce", "")),
               q.get("signature"))
        check_timestamp(q.get("timestamp"), rt.clock(), rt.settings.security.max_timestamp_age)
    except ProtocolError as exc:
        log.warning("URL verification refused from %s: %s", request.remote, exc)
        return web.Response(status=exc.status, text="forbidden")
    echostr = request.query.get("echostr")
    if echostr is None:
        log.warning("URL verification from %s refused with 400: a valid signature but no echostr", request.remote)
        return web.Response(status=400, text="missing echostr")
    log.info("URL verification passed")
    return web.Response(text=echostr, content_type="text/plain")


BODY_SECONDS = 5.0  # WeChat waits 5 s for an answer: a body still arriving after that is not worth waiting for


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise PushTooLarge(f"body of {request.content_length} bytes is over {limit}")
    content = request.content
    if content.is_eof():  # the usual push: all of it arrived with the headers
        return await _read_all(content, limit)
    try:  # still arriving: a client that stalls must not hold the handler and its connection for ever
        async with asyncio.timeout(BODY_SECONDS):
            return await _read_all(content, limit)
    except TimeoutError:
        raise PushTooSlow(f"body not complete after {BODY_SECONDS:g} s") from None


async def _read_all(content: aiohttp.StreamReader, limit: int) -> bytes:
    first = await content.read(65536)
    size = len(first)
    if size > limit:
        raise PushTooLarge(f"body is over {limit} bytes")
    if content.at_eof():  # the whole push in one read (pushes are a few hundred bytes)
        return first
    chunks: list[bytes] = [first]
    while True:
        chunk = await content.read(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise PushTooLarge(f"body is over {limit} bytes")
        chunks.append(chunk)


async def handle_push(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    codec = rt.codec
    if codec is None:  # pragma: no cover - create_app always sets it
        raise RuntimeError("no codec")
    started = time.perf_counter()
    try:
        codec.verify_query(request.query)
        body = await _read_body(request, rt.settings.security.max_body_bytes)
        push = codec.read(request.query, body, request.headers.get("Content-Type"))
    except ProtocolError as exc:
        rt.metrics.refuse(exc.status)
        log.warning("push refused with %d from %s: %s", exc.status, request.remote, exc)
        return web.Response(status=exc.status, text=type(exc).__name__)
    except (aiohttp.ClientPayloadError, RequestPayloadError, HttpProcessingError, ConnectionError) as exc:
        # the client went away mid-body, or sent a Content-Encoding its body does not have
        rt.metrics.refuse(400)
        log.warning("push body could not be read from %s: %s", request.remote, type(exc).__name__)
        return web.Response(status=400, text="unreadable body")
    except Exception:  # kefu's own parser failed on it: still a 4xx (a 500 only makes WeChat send it again)
        rt.metrics.refuse(400)
        log.exception("push from %s could not be read (a kefu bug: please report it); refused with 400",
                      request.remote)
        return web.Response(status=400, text="unreadable push")

    message = push.message
    first, future = rt.dedupe.claim(message.dedupe_key)
    if not first:
        try:
            answer = await asyncio.wait_for(asyncio.shield(future), RETRY_WAIT)
        except TimeoutError:
            answer = SUCCESS
        rt.metrics.retries += 1
        log.info("push retried: rid=%s user=%s type=%s answer=%s (no second run)",
                 logs.request_id(message.dedupe_key), short_user(message.from_user), _type_label(message),
                 answer.kind)
        return answer.response()
    answer: Answer | None = None
    try:
        shared = await _shared_answer(rt, message.dedupe_key)
        if shared is not None:  # another instance got this push first
            answer = shared
            rt.metrics.retries += 1
            log.info("push retried to this instance: rid=%s user=%s type=%s answer=%s (decided elsewhere)",
                     logs.request_id(message.dedupe_key), short_user(message.from_user), _type_label(message),
                     answer.kind)
        else:
            answer = await _handle_message(rt, push, started)
    except StoreError as exc:
        rt.health.failed(exc)
        answer = _safe_answer(rt, push)
        rt.metrics.safe(_type_label(message), answer.kind, time.perf_counter() - started)
    except Exception:
        log.exception("push from %s could not be handled; answering safely", short_user(message.from_user))
        answer = _safe_answer(rt, push)
        rt.metrics.safe(_type_label(message), answer.kind, time.perf_counter() - started)
    finally:  # retries waiting on this push get the same answer, even if this handler was cancelled
        rt.dedupe.settle(message.dedupe_key, future, answer if answer is not None else _safe_answer(rt, push))
    return answer.response()


async def _shared_answer(rt: Runtime, key: str) -> Answer | None:
    """Claim the push in the store. None if this instance is the first to see it (it decides); else the
    answer the first instance gave — waited for up to RETRY_WAIT seconds, then `success`. A store only this
    process uses has nothing to add to the process's own dedupe."""
    if not rt.store.shared:
        return None
    if await rt.store.claim(key, DEDUPE_TTL):
        return None
    deadline = time.monotonic() + RETRY_WAIT
    while time.monotonic() < deadline:
        stored = await rt.store.get_answer(key)
        if stored is not None:
            return Answer.from_bytes(stored)
        await asyncio.sleep(SHARED_POLL)  # the other instance is still deciding: a rare case
    return SUCCESS


def _transfer(rt: Runtime, push: Push, kf_account: str | None = None) -> Answer:
    body, content_type = rt.codec.seal(push, transfer_fields(push.message, int(rt.clock()), kf_account))
    return Answer(body, content_type, "transfer")


def _passive(rt: Runtime, push: Push, reply: Reply) -> Answer:
    body, content_type = rt.codec.seal(push, passive_fields(push.message, reply, int(rt.clock())))
    return Answer(body, content_type, f"passive {reply.kind}")


def _safe_answer(rt: Runtime, push: Push) -> Answer:
    """When kefu itself fails: hand a user's message to human agents; acknowledge an event. Never raises:
    whatever else fails, `success` still answers."""
    if push.message.is_event:
        return SUCCESS
    try:
        return _transfer(rt, push)
    except Exception:
        log.exception("could not even build a transfer for %s; answering success",
                      short_user(push.message.from_user))
        return SUCCESS


async def _handle_message(rt: Runtime, push: Push, started: float) -> Answer:
    message = push.message
    ruleset = rt.rules.current  # one snapshot for the whole push
    now = datetime.fromtimestamp(rt.clock(), rt.settings.timezone)
    user = await _load_user(rt, ruleset, message)
    state, cooling, handoff = user.state, user.cooling, user.handoff
    decision = decide(ruleset, message, now, state, cooling=frozenset(cooling), handoff=handoff)
    if decision.error:
        log.error("rule %s failed to render its reply (%s); %s", decision.label, decision.error,
                  "handing over to agents" if decision.transfer else "nothing sent")
    if rt.outbox is None:
        raise RuntimeError("the app's lifecycle has not started")
    replies = split_replies(decision.replies)  # texts over ~2,000 bytes become several messages
    passive = decision.passive and len(replies) == 1
    if rt.settings.quota.enabled and rt.api is not None:  # every push may open WeChat's send allowance
        sends = await _within_allowance(rt, message, () if passive else replies, user.allowance)
        replies = replies if passive else sends
    if passive:
        answer = _passive(rt, push, replies[0])  # an official account's answer in the HTTP reply
    else:
        await rt.outbox.submit(message.from_user, replies, message.dedupe_key, decision.send_as)
        answer = _transfer(rt, push, decision.kf_account) if decision.transfer else SUCCESS
    try:  # the replies are stored: from here on, a store failure must not change the answer
        if decision.state is not None:
            await save_state(rt.store, message.from_user, decision.state)
        await _after(rt, ruleset, message, decision, answer, cooling)
        if rt.store.shared:
            await rt.store.put_answer(message.dedupe_key, answer.to_bytes(), DEDUPE_TTL)
        rt.health.ok()
    except StoreError as exc:
        rt.health.failed(exc)  # the state or cooldown of this step is lost; the answer and replies stand
    label = _type_label(message)
    _log_push(rt, message, label, decision, answer, replies)
    seconds = time.perf_counter() - started
    rt.metrics.push(label, answer.kind.partition(" ")[0], decision.rule, message.is_event,
                    answer.kind == "transfer", seconds, decision.error is not None)
    if log.isEnabledFor(logging.INFO):
        rid, user = logs.request_id(message.dedupe_key), short_user(message.from_user)
        aes = " (aes)" if push.encrypted else ""
        logs.info(log, f"push rid={rid} user={user} type={label}{aes} rule={decision.label} "
                       f"version={decision.version} replies={len(replies)} answer={answer.kind} "
                       f"latency={seconds * 1000:.1f}ms",
                  lambda: {"rid": rid, "user": user, "type": label, "aes": push.encrypted, "rule": decision.rule,
                           "version": decision.version, "replies": len(replies), "answer": answer.kind,
                           "latency_ms": round(seconds * 1000, 2)})
    return answer


@dataclass(slots=True)  # not frozen, made per push: see VALUES_NOT_FROZEN in store/base.py
class UserRecords:
    """What the store holds about the user that this push needs."""

    state: Any = None
    cooling: dict[str, float] = field(default_factory=dict)
    handoff: bool = False
    allowance: allowance.Allowance | None = None


NOBODY = UserRecords()  # nothing to read: rules without state or cooldowns, no quota, no handoff quiet


async def _load_user(rt: Runtime, ruleset: RuleSet, message: Message) -> UserRecords:
    """What decide and the send allowance need to know about the user — only what the rules and settings use
    — in one read (one MGET on Redis, one SELECT on SQLite)."""
    user = message.from_user
    state, cooling = ruleset.uses_state, ruleset.uses_cooldown
    handoff = bool(rt.settings.handoff.quiet) and not message.is_event
    quota = rt.settings.quota.enabled and rt.api is not None
    keys = []
    if state:
        keys.append(state_key(user))
    if cooling:
        keys.append(cooldown_key(user))
    if handoff:
        keys.append(handoff_key(user))
    if quota:
        keys.append(allowance.key(user))
    if not keys:
        return NOBODY
    values = iter(await rt.store.get_many(keys))  # in the order of `keys`; arguments are evaluated in order
    return UserRecords(state=parse_state(next(values)) if state else None,
                       cooling=parse_cooldowns(next(values), rt.clock()) if cooling else {},
                       handoff=bool(next(values)) if handoff else False,
                       allowance=allowance.parse(next(values)) if quota else None)


async def _after(rt: Runtime, ruleset: RuleSet, message: Message, decision: Decision, answer: Answer,
                 cooling: dict[str, float]) -> None:
    """Remember what this answer means for the user's next messages."""
    user, now = message.from_user, rt.clock()
    if answer.kind == "transfer" and rt.settings.handoff.quiet:
        await start_handoff(rt.store, user, rt.settings.handoff.quiet)
    elif message.is_event and getattr(message, "event", "") == "kf_close_session" and rt.settings.handoff.quiet:
        await end_handoff(rt.store, user)  # the agent closed the session: the bot answers again
    rule = ruleset.rule(decision.rule) if decision.rule and ruleset.uses_cooldown else None
    if rule is not None and rule.cooldown:
        await save_cooldown(rt.store, user, cooling, rule.name, now + rule.cooldown, now)


async def _within_allowance(rt: Runtime, message: Message, replies: tuple[Reply, ...],
                            current: allowance.Allowance | None) -> tuple[Reply, ...]:
    """The replies WeChat's send allowance still lets through; the rest are dropped and logged. `current` is
    the user's allowance as read with the user's other records."""
    now = rt.clock()
    window = allowance.opened(current, message, now, rt.settings.quota, rt.settings.wechat.platform)
    messages = [r for r in replies if r.kind != "typing"]  # "typing…" is not a message: it costs nothing
    granted, after = allowance.take(window, len(messages), now)
    if allowance.changed(current, after):
        await allowance.save(rt.store, message.from_user, after, now)
    if granted == len(messages) == len(replies):
        return replies  # the usual case: every reply may go
    if granted < len(messages):
        dropped = tuple(messages[granted:])
        log.warning("send allowance of %s used up: %d repl%s dropped (they would fail with 45047)",
                    short_user(message.from_user), len(dropped), "y" if len(dropped) == 1 else "ies")
        rt.conversation.add(*(LogEntry(now, message.from_user, "failed", r.kind, getattr(r, "content", ""),
                                       errcode=45047, detail="dropped: send allowance used up")
                              for r in dropped))
    kept = set(map(id, messages[:granted]))
    return tuple(r for r in replies if r.kind == "typing" and granted or id(r) in kept)


def _log_push(rt: Runtime, message: Message, label: str, decision: Decision, answer: Answer,
              replies: tuple[Reply, ...]) -> None:
    """The conversation log: what the user sent, the rule, and a transfer or a passive answer (API sends
    are logged by the outbox when they are sent or fail)."""
    now = rt.clock()
    rule = decision.rule or ""
    entries = [LogEntry(now, message.from_user, "push", label, message.text or "", rule,
                        detail=decision.error or "")]
    if answer.kind == "transfer":
        entries.append(LogEntry(now, message.from_user, "transfer", label, "", rule,
                                detail=decision.kf_account or ""))
    elif answer.kind.startswith("passive"):
        entries.append(LogEntry(now, message.from_user, "sent", replies[0].kind,
                                getattr(replies[0], "content", ""), rule, 0, "passive"))
    rt.conversation.add(*entries)


def _type_label(message: Message) -> str:
    event = getattr(message, "event", None)
    raw = f"event/{event}" if event is not None else message.msg_type
    label = _LABELS.get(raw)
    if label is None:
        label = loggable(raw)
        if len(_LABELS) < 1000:  # the message types and events WeChat sends: a few dozen
            _LABELS[raw] = label
    return label


_LABELS: dict[str, str] = {}


def loggable(value: str, limit: int = 48) -> str:
    """A value from a push, safe for a log line: no line breaks or control characters, bounded length."""
    value = logs.printable(value)
    return value if len(value) <= limit else value[:limit] + "…"


async def handle_metrics(request: web.Request) -> web.Response:
    """Prometheus text. The outbox figures are read from the store now (skipped if it does not answer)."""
    rt = request.app[RUNTIME]
    try:
        counts, oldest = await asyncio.wait_for(
            asyncio.gather(rt.store.outbox_counts(), rt.store.outbox_oldest_pending()), 2.0)
        rt.metrics.outbox = {**counts, "oldest_age": max(rt.clock() - oldest, 0.0) if oldest else 0.0}
    except (StoreError, TimeoutError) as exc:
        log.debug("metrics: outbox figures not read: %s", exc)
    metrics = rt.metrics
    if rt.shared_metrics is not None:  # --workers: the whole server, whichever worker answers
        metrics = metrics.combined(await asyncio.to_thread(rt.shared_metrics.others))
    return web.Response(body=metrics.exposition(), headers={"Content-Type": METRICS_CONTENT_TYPE})


async def handle_healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def handle_readyz(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    try:
        store_ok = await asyncio.wait_for(rt.store.ping(), 2.0)
    except Exception:
        store_ok = False
    ruleset = rt.rules.current
    ready = store_ok and rt.outbox is not None
    body = {"ready": ready, "pid": os.getpid(), "store": "ok" if store_ok else "unreachable",
            "rules": {"version": ruleset.version, "count": len(ruleset.rules)}}
    return web.Response(status=200 if ready else 503, text=json.dumps(body), content_type="application/json")


# ---- admin -----------------------------------------------------------------------------------------------


def _authorized(rt: Runtime, request: web.Request) -> bool:
    expected = rt.settings.admin.token.reveal()
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8"), expected.encode("utf-8"))


def _unauthorized(request: web.Request) -> web.Response:
    log.warning("admin request refused from %s: missing or wrong token", request.remote)
    return web.json_response({"error": "unauthorized"}, status=401,
                             headers={"WWW-Authenticate": 'Bearer realm="kefu"'})


async def handle_admin_status(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    if not _authorized(rt, request):
        return _unauthorized(request)
    return web.json_response(rt.rules.status(), dumps=_dumps)


async def handle_admin_reload(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    if not _authorized(rt, request):
        return _unauthorized(request)
    assert rt.reloader is not None
    outcome = await rt.reloader.reload("POST /admin/reload")
    status = rt.rules.status()
    status["reloaded"] = outcome.swapped
    return web.json_response(status, dumps=_dumps)


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)
