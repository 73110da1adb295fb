"""The WeChat API client: token, stable_token, send, typing and media upload. The only outbound HTTP.

- Every call goes through one Transport (bot/transport.py): the app's aiohttp ClientSession, with its proxy
  and CA, or whatever a test puts there (`WeChatAPI(settings, transport=…)`).
- Each outcome is judged once, by errcodes.classify: transient ones are retried here a few times with
  exponential backoff (then the outbox backs off for longer), a token error refreshes the access_token once
  and calls again (a wrong secret also gives 40001: it is never looped on), anything else is final.
- The access_token is owned by tokens.TokenManager; the send bodies are built by sendbody.py.
- Neither the secret, a token nor the proxy's password ever reaches a log line or an exception message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from .config import WeChatSettings
from .errcodes import Verdict, classify, describe_errcode
from .errors import WeChatAPIError
from .messages import MediaFile, Reply, TypingReply
from .sendbody import build_send_body, media_of, typing_body, with_media_id
from .store.base import Store
from .tokens import TokenManager
from .transport import SessionTransport, Transport, explain, explain_status, route

log = logging.getLogger(__name__)

INVALID_MEDIA = 40007
MEDIA_TTL = 3 * 86400 - 3600  # WeChat keeps an upload 3 days
SEND = "/cgi-bin/message/custom/send"
TYPING = "/cgi-bin/message/custom/typing"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 3  # tries for transient failures (-1, 5xx, timeouts, connection errors)
    base_delay: float = 0.5  # seconds; doubled each time, with jitter
    max_delay: float = 8.0
    timeout: float = 10.0  # seconds for one HTTP request

    def delay(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)


@dataclass(frozen=True, slots=True)
class SendResult:
    ok: bool
    errcode: int | None = 0
    errmsg: str = "ok"
    attempts: int = 1
    verdict: Verdict | None = None  # errcodes.classify's word on it; None: judged by the errcode alone

    @property
    def reason(self) -> str:
        return describe_errcode(self.errcode, self.errmsg)

    @property
    def kind(self) -> Verdict:
        return self.verdict if self.verdict is not None else classify(self.errcode)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One call's answer as classify judged it."""

    verdict: Verdict
    data: Mapping[str, Any]  # the answer's JSON object ({} when there was none)
    errcode: int | None = None
    errmsg: str = ""

    def error(self, attempts: int, what: str = "") -> WeChatAPIError:
        errmsg = self.errmsg or what
        return WeChatAPIError(self.errcode if self.errcode else None, errmsg, self.verdict, attempts)

    def result(self, attempts: int) -> SendResult:
        return SendResult(ok=self.verdict is Verdict.OK, errcode=self.errcode, errmsg=self.errmsg,
                          attempts=attempts, verdict=self.verdict)


class WeChatAPI:
    def __init__(self, settings: WeChatSettings, session: aiohttp.ClientSession | None = None,
                 retry: RetryPolicy | None = None, clock: Callable[[], float] = time.time,
                 store: Store | None = None, transport: Transport | None = None):
        if not settings.has_credentials:
            raise ValueError("WeChatAPI needs wechat.appid and wechat.secret")
        if transport is None:
            if session is None:
                raise ValueError("WeChatAPI needs an aiohttp session or a transport")
            transport = SessionTransport(session, route(settings))
        self.settings = settings
        self.transport = transport
        self.retry = retry or RetryPolicy()
        self.base = settings.api_base.rstrip("/")
        self.tokens = TokenManager(self, settings.appid, clock, store)
        self.store = store if store is not None and store.shared else None
        self._media: dict[str, str] = {}  # media cache in this process (the store's is shared)
        self._media_locks: dict[str, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"WeChatAPI(appid={self.settings.appid!r}, base={self.base!r})"

    async def _once(self, method: str, path: str, params: Mapping[str, str] | None,
                    body: bytes | aiohttp.FormData | None) -> Outcome:
        try:
            status, raw = await self.transport.request(method, self.base + path, params=params, data=body,
                                                       timeout=self.retry.timeout)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return Outcome(classify(failure=exc), {}, None, explain(exc, self.retry.timeout))
        if status != 200:
            return Outcome(classify(status=status), {}, None, explain_status(status))
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return Outcome(classify(errcode=None), {}, None, "the answer is not a JSON object")
        errcode = _errcode(data)
        return Outcome(classify(errcode), data, errcode, str(data.get("errmsg", "")))

    async def _with_retries(self, call: Callable[[], Awaitable[Outcome]]) -> tuple[Outcome, int]:
        """Run `call` until it gives a non-transient outcome or the attempts run out."""
        attempt = 0
        while True:
            attempt += 1
            outcome = await call()
            if outcome.verdict is not Verdict.TRANSIENT or attempt >= self.retry.attempts:
                return outcome, attempt
            log.warning("WeChat API: %s; retrying (attempt %d of %d)", describe_errcode(
                outcome.errcode, outcome.errmsg), attempt, self.retry.attempts)
            await asyncio.sleep(self.retry.delay(attempt))

    async def fetch_token(self) -> tuple[str, float]:
        """A fresh access_token and its lifetime in seconds. Raises WeChatAPIError."""
        s = self.settings
        if s.use_stable_token:
            body = json.dumps({"grant_type": "client_credential", "appid": s.appid,
                               "secret": s.secret.reveal(), "force_refresh": False}).encode()
            outcome, attempts = await self._with_retries(lambda: self._once("POST", "/cgi-bin/stable_token",
                                                                            None, body))
        else:
            params = {"grant_type": "client_credential", "appid": s.appid, "secret": s.secret.reveal()}
            outcome, attempts = await self._with_retries(lambda: self._once("GET", "/cgi-bin/token",
                                                                            params, None))
        token = outcome.data.get("access_token")
        if outcome.verdict is not Verdict.OK or not isinstance(token, str) or not token:
            raise outcome.error(attempts, "no access_token")
        try:
            expires_in = float(outcome.data.get("expires_in", 7200))
        except (TypeError, ValueError):
            expires_in = 7200.0
        log.info("WeChat API: new access_token (expires in %d s)", expires_in)
        return token, max(expires_in, 60.0)

    async def call(self, path: str, body: Callable[[], bytes | aiohttp.FormData],
                   params: Mapping[str, str] | None = None) -> tuple[Outcome, int]:
        """Call an access_token API (`body` makes the request body: a FormData is spent by one request); one
        token refresh on a token error. Raises WeChatAPIError when no token can be had."""
        attempts = 0
        refreshed = False
        while True:
            try:
                token = await self.tokens.get()
            except WeChatAPIError as exc:
                exc.attempts += attempts
                raise
            query = {"access_token": token, **(params or {})}

            def attempt(q: Mapping[str, str] = query) -> Awaitable[Outcome]:
                return self._once("POST", path, q, body())

            outcome, used = await self._with_retries(attempt)
            attempts += used
            if outcome.verdict is Verdict.TOKEN and not refreshed:
                log.warning("WeChat API: errcode %s on %s; refreshing the access_token once", outcome.errcode,
                            path)
                self.tokens.invalidate(token)
                refreshed = True
                continue
            return outcome, attempts

    async def send(self, touser: str, reply: Reply, send_as: str | None = None) -> SendResult:
        """Send one customer-service message. Never raises for WeChat's or the network's failures. An image
        file is uploaded first (once: its media_id is cached); a 40007 (WeChat forgot the media) uploads it
        again and sends once more."""
        if isinstance(reply, TypingReply):
            return await self.typing(touser)
        media = media_of(reply)
        if media is None:  # the usual reply: one body, one send
            return await self.send_body(build_send_body(touser, reply, self.settings.platform, send_as))
        for attempt in (1, 2):
            try:
                reply = with_media_id(reply, await self.media_id(media, fresh=attempt == 2))
            except WeChatAPIError as exc:
                return SendResult(ok=False, errcode=exc.errcode, errmsg=f"upload failed: {exc.errmsg}",
                                  attempts=exc.attempts, verdict=_verdict(exc))
            result = await self.send_body(build_send_body(touser, reply, self.settings.platform, send_as))
            if result.errcode != INVALID_MEDIA:
                return result
            log.warning("WeChat API: media of %s expired (40007); uploading it again", Path(media.path).name)
        return result

    async def typing(self, touser: str) -> SendResult:
        """Show "typing…" (WeChat allows it within 30 s of the user's last message; it lasts 15 s)."""
        return await self.send_body(typing_body(touser), TYPING)

    async def send_body(self, body: bytes, path: str = SEND) -> SendResult:
        try:
            outcome, attempts = await self.call(path, lambda: body)
        except WeChatAPIError as exc:
            return SendResult(ok=False, errcode=exc.errcode, errmsg=exc.errmsg, attempts=exc.attempts,
                              verdict=_verdict(exc))
        return outcome.result(attempts)

    async def media_id(self, media: MediaFile, fresh: bool = False) -> str:
        """The media_id of an image file: from the cache (the store, shared by every instance), else uploaded.
        WeChat keeps uploads 3 days; the cache forgets them an hour earlier."""
        key = f"media:{media.digest}"
        lock = self._media_locks.setdefault(media.digest, asyncio.Lock())
        async with lock:  # many sends of one new image: one upload
            if not fresh:
                cached = self._media.get(key)
                if cached is None and self.store is not None:
                    cached = await self.tokens.shared(self.store.get(key), None)
                if cached:
                    self._media[key] = cached
                    return cached
            media_id = await self.upload_image(media)
            self._media[key] = media_id
            if self.store is not None:
                await self.tokens.shared(self.store.set(key, media_id, MEDIA_TTL), None)
            return media_id

    async def with_media(self, reply: Reply) -> Reply:
        """The reply with its file's media_id (cached, else uploaded): for a passive answer, which cannot
        upload after the fact. Raises WeChatAPIError."""
        media = media_of(reply)
        return reply if media is None else with_media_id(reply, await self.media_id(media))

    async def upload_image(self, media: MediaFile) -> str:
        """Upload an image through /cgi-bin/media/upload; raises WeChatAPIError."""
        data = await asyncio.to_thread(Path(media.path).read_bytes)
        name = Path(media.path).name

        def form() -> aiohttp.FormData:
            f = aiohttp.FormData()
            f.add_field("media", data, filename=name, content_type="application/octet-stream")
            return f

        outcome, attempts = await self.call("/cgi-bin/media/upload", form, {"type": "image"})
        media_id = outcome.data.get("media_id")
        if outcome.verdict is not Verdict.OK or not isinstance(media_id, str) or not media_id:
            raise outcome.error(attempts, "no media_id")
        log.info("WeChat API: uploaded %s (%d KB)", name, media.size // 1024)
        return media_id


def _verdict(exc: WeChatAPIError) -> Verdict:
    return exc.verdict if isinstance(exc.verdict, Verdict) else classify(exc.errcode)


def _errcode(data: Mapping[str, Any]) -> int:
    try:
        return int(data.get("errcode", 0))
    except (TypeError, ValueError):
        return -1
