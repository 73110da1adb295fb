"""The inbound HTTP edge: routes, verifying and reading pushes, and answering them.

Only this module maps errors to HTTP status codes. A push is verified before anything is read or parsed,
then read, deduplicated (WeChat retries), and handed to the conversation turn (bot/turn.py), whose plan this
module seals into the answer's bytes. The answer goes out within WeChat's window without waiting for the
WeChat API (replies are stored in the outbox and sent after), and never as a 500 for anything a client sends.
The app's parts and lifecycle live in bot/runtime.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from . import logs
from .config import Settings
from .engine import RuleSet
from .engine.outcome import AnswerKind, Plan
from .errors import ProtocolError, PushTooLarge, PushTooSlow, StoreError
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .outbox import short_user
from .protocol.push import Push
from .protocol.signature import check_timestamp, verify
from .protocol.wire import passive_fields, transfer_fields
from .runtime import RUNTIME, Runtime, build_runtime, lifecycle, reloading
from .store import Store
from .turn import take_turn, type_label
from .wechat_api import RetryPolicy

log = logging.getLogger(__name__)

RETRY_WAIT = 4.0  # how long a retried push waits for the first delivery's answer


class Answer(NamedTuple):
    """The HTTP answer to a push, kept so that retries of the same push get exactly the same bytes (immutable;
    a NamedTuple for the cost of making one per push: see messages.Decision)."""

    body: bytes
    content_type: str
    kind: AnswerKind

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
        return cls(body, content_type.decode(), AnswerKind(kind.decode().partition(" ")[0]))


_HEADERS: dict[str, dict[str, str]] = {}
_SUCCESS, _TRANSFER, _PASSIVE = AnswerKind.SUCCESS, AnswerKind.TRANSFER, AnswerKind.PASSIVE  # see engine/outcome.py
SUCCESS = Answer(b"success", "text/plain", AnswerKind.SUCCESS)
DEDUPE_TTL = 300.0  # seconds a push's answer is kept for WeChat's retries (it retries within ~15 s)
SHARED_POLL = 0.05  # seconds between looks for another instance's answer


def create_app(settings: Settings, *, ruleset: RuleSet | None = None, store: Store | None = None,
               clock: Callable[[], float] = time.time, retry: RetryPolicy | None = None,
               config: Path | None = None, watch: bool = False, signals: bool = False,
               tune_gc: bool = False, metrics_folder: Path | None = None) -> web.Application:
    """Build the app. Loads the rules now (a RulesError here means the bot cannot start).

    `config` is the bot.yaml that reloads re-read (None: only the rules and templates folders); `watch`
    reloads when files change; `signals` reloads on SIGHUP; `tune_gc` keeps rule sets out of the cycle
    collector's full collections (see Reloader), for a server process that owns its garbage collector."""
    runtime = build_runtime(settings, ruleset=ruleset, store=store, clock=clock, retry=retry, config=config,
                            tune_gc=tune_gc, metrics_folder=metrics_folder)
    app = web.Application(client_max_size=settings.security.max_body_bytes + 1024)
    app[RUNTIME] = runtime
    path = settings.server.path
    app.router.add_get(path, handle_verify)
    app.router.add_post(path, handle_push)
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    app.router.add_get("/metrics", handle_metrics)
    if settings.admin.token:
        from . import admin
        from .console import setup as setup_console  # the web console for operators (bot/console)

        admin.setup(app)
        setup_console(app)
    app.cleanup_ctx.append(lifecycle)
    if watch or signals:
        app.cleanup_ctx.append(reloading(watch, signals))
    return app


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
            earlier: Answer = await asyncio.wait_for(asyncio.shield(future), RETRY_WAIT)
        except TimeoutError:
            earlier = SUCCESS
        rt.metrics.retries += 1
        log.info("push retried: rid=%s user=%s type=%s answer=%s (no second run)",
                 logs.request_id(message.dedupe_key), short_user(message.from_user), type_label(message),
                 earlier.kind)
        return earlier.response()
    answer: Answer | None = None
    try:
        shared = await _shared_answer(rt, message.dedupe_key)
        if shared is not None:  # another instance got this push first
            answer = shared
            rt.metrics.retries += 1
            log.info("push retried to this instance: rid=%s user=%s type=%s answer=%s (decided elsewhere)",
                     logs.request_id(message.dedupe_key), short_user(message.from_user), type_label(message),
                     answer.kind)
        else:
            answer = await _handle_message(rt, push, started)
    except StoreError as exc:
        rt.health.failed(exc)
        answer = _safe_answer(rt, push)
        rt.metrics.safe(type_label(message), answer.kind, time.perf_counter() - started)
    except Exception:
        log.exception("push from %s could not be handled; answering safely", short_user(message.from_user))
        answer = _safe_answer(rt, push)
        rt.metrics.safe(type_label(message), answer.kind, time.perf_counter() - started)
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
    return Answer(body, content_type, _TRANSFER)


def _answer(rt: Runtime, push: Push, plan: Plan) -> Answer:
    """The plan's answer in the push's own format (encrypted for an encrypted push)."""
    if plan.answer is _TRANSFER:
        return _transfer(rt, push, plan.kf_account)
    if plan.passive is not None:  # an official account's answer carries the reply itself
        body, content_type = rt.codec.seal(push, passive_fields(push.message, plan.passive, int(rt.clock())))
        return Answer(body, content_type, _PASSIVE)
    return SUCCESS


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
    api = rt.api
    turn = await take_turn(rt.rules.current, rt.settings, rt.store, message, rt.clock(), outbox=rt.outbox,
                           journal=rt.conversation, media=api.with_media if api is not None else None)
    plan, decision = turn.plan, turn.plan.decision
    if decision.error:
        log.error("rule %s failed to render its reply (%s); %s", decision.label, decision.error,
                  "handing over to agents" if decision.transfer else "nothing sent")
    answer = SUCCESS if plan.answer is _SUCCESS else _answer(rt, push, plan)
    error = turn.store_error
    if rt.store.shared and error is None:
        try:
            await rt.store.put_answer(message.dedupe_key, answer.to_bytes(), DEDUPE_TTL)
        except StoreError as exc:
            error = exc
    if error is None:
        rt.health.ok()
    else:
        rt.health.failed(error)
    label = turn.label
    seconds = time.perf_counter() - started
    rt.metrics.push(label, answer.kind, decision.rule, message.is_event,
                    answer.kind is _TRANSFER, seconds, decision.error is not None)
    if log.isEnabledFor(logging.INFO):
        rid, user = logs.request_id(message.dedupe_key), short_user(message.from_user)
        aes = " (aes)" if push.encrypted else ""
        replies = len(plan.sent)
        logs.info(log, f"push rid={rid} user={user} type={label}{aes} rule={decision.label} "
                       f"version={decision.version} replies={replies} answer={answer.kind} "
                       f"latency={seconds * 1000:.1f}ms",
                  lambda: {"rid": rid, "user": user, "type": label, "aes": push.encrypted, "rule": decision.rule,
                           "version": decision.version, "replies": replies, "answer": answer.kind,
                           "latency_ms": round(seconds * 1000, 2)})
    return answer


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
