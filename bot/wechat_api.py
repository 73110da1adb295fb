"""The WeChat API client: access-token ownership and the customer-service send. The only outbound HTTP.

- One aiohttp ClientSession for the process, passed in.
- The access_token is cached until shortly before it expires and refreshed by one request at a time, however
  many sends are waiting for it. `wechat.use_stable_token` uses /cgi-bin/stable_token, which does not
  invalidate the tokens other processes hold.
- 40001/40014/42001: the token is dropped, refreshed once, and the call retried once (a wrong secret also
  gives 40001: it is never looped on). -1, timeouts, connection errors and 5xx: retried with exponential
  backoff a bounded number of times. Any other errcode is final.
- Neither the secret nor a token ever reaches a log line or an exception message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

import aiohttp

from .apiclient import ClientError, JsonClient
from .config import WeChatSettings
from .errors import StoreError, WeChatAPIError
from .messages import (
    CardReply,
    ImageReply,
    LinkReply,
    MediaFile,
    MenuReply,
    MiniProgramPageReply,
    MusicReply,
    NewsReply,
    Reply,
    TextReply,
    TypingReply,
    VideoReply,
    VoiceReply,
)
from .store.base import Store

log = logging.getLogger(__name__)

TOKEN_ERRORS = frozenset({40001, 40014, 42001})
RETRYABLE_ERRORS = frozenset({-1})
LOCK_TTL = 15.0  # seconds: the shared refresh lock (a token fetch takes well under that)
SHARED_POLL = 0.1  # seconds between looks for the token another instance is fetching
FAILED_FETCH_PAUSE = 30.0  # seconds to remember that WeChat refused a token (the token API has a quota)
INVALID_MEDIA = 40007
MEDIA_TTL = 3 * 86400 - 3600  # WeChat keeps an upload 3 days
ERRCODE_WORDS: Mapping[int, str] = {
    -1: "WeChat is busy; try again",
    0: "ok",
    40001: "the access_token is invalid (or the appsecret is wrong)",
    40003: "the openid is not a user of this account",
    40013: "the appid is invalid",
    40014: "the access_token is malformed",
    40125: "the appsecret is invalid",
    40164: "this server's IP address is not in the account's IP whitelist",
    61004: "this server's IP address is not in the account's IP whitelist",
    41001: "the access_token is missing",
    42001: "the access_token has expired",
    43004: "the user has not followed the account",
    44002: "the message is empty",
    45002: "the message is too long",
    45009: "the daily API quota is used up",
    45015: "the user last wrote more than 48 hours ago: no more messages may be sent",
    45047: "the send quota for this user is used up until they write again",
    48001: "the account has no permission for this API (unverified official account?)",
}


def describe_errcode(errcode: int | None, errmsg: str = "") -> str:
    if errcode is None:
        return errmsg or "WeChat could not be reached"
    words = ERRCODE_WORDS.get(errcode)
    return f"{errcode}: {words} ({errmsg})" if words else f"{errcode}: {errmsg}"


_QUERY = re.compile(r"\?[^\s'\"<>)]*")


def scrub(text: str) -> str:
    """Remove query strings (they carry access_token and secret) from an exception's text."""
    return _QUERY.sub("?…", text)


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

    @property
    def reason(self) -> str:
        return describe_errcode(self.errcode, self.errmsg)


SENT = SendResult(ok=True)  # a send accepted at the first attempt
OK_RAW = b'{"errcode":0,"errmsg":"ok"}'  # WeChat's answer to an accepted send, byte for byte
OK: Mapping[str, Any] = MappingProxyType({"errcode": 0, "errmsg": "ok"})  # its parse: shared, so read-only


class _Transient(Exception):
    """A failure worth retrying: network, timeout, 5xx, unreadable answer."""


def build_send_body(touser: str, reply: Reply, platform: str = "miniprogram",
                    send_as: str | None = None) -> bytes:
    """The custom/send JSON for one reply: UTF-8, never \\u-escaped, built once."""
    if type(reply) is TextReply and not send_as:  # nearly every send: the JSON written out directly
        return (f'{{"touser":{_json_string(touser)},"msgtype":"text","text":{{"content":'
                f'{_json_string(reply.content)}}}}}').encode("utf-8", "replace")
    body: dict[str, Any] = {"touser": touser, "msgtype": reply.kind}
    if isinstance(reply, TextReply):
        body["text"] = {"content": reply.content}
    elif isinstance(reply, ImageReply | VoiceReply):
        body[reply.kind] = {"media_id": reply.media_id}
    elif isinstance(reply, VideoReply):
        body["video"] = {"media_id": reply.media_id, "thumb_media_id": reply.thumb_media_id,
                         "title": reply.title, "description": reply.description}
    elif isinstance(reply, MusicReply):
        body["music"] = {"title": reply.title, "description": reply.description, "musicurl": reply.music_url,
                         "hqmusicurl": reply.hq_music_url, "thumb_media_id": reply.thumb_media_id}
    elif isinstance(reply, NewsReply):
        body["news"] = {"articles": [{"title": reply.title, "description": reply.description,
                                      "url": reply.url, "picurl": reply.pic_url}]}
    elif isinstance(reply, MenuReply):
        body["msgmenu"] = {"head_content": reply.head_content,
                           "list": [{"id": i, "content": c} for i, c in reply.options],
                           "tail_content": reply.tail_content}
    elif isinstance(reply, CardReply):
        body["wxcard"] = {"card_id": reply.card_id}
    elif isinstance(reply, LinkReply):
        body["link"] = {"title": reply.title, "description": reply.description, "url": reply.url,
                        "thumb_url": reply.thumb_url}
    elif isinstance(reply, MiniProgramPageReply):
        page: dict[str, str] = {"title": reply.title, "pagepath": reply.pagepath,
                                "thumb_media_id": reply.thumb_media_id}
        if platform == "official_account" and reply.appid:
            page["appid"] = reply.appid
        body["miniprogrampage"] = page
    else:  # pragma: no cover - every Reply kind is above
        raise TypeError(f"cannot send {type(reply).__name__}")
    if send_as:
        body["customservice"] = {"kf_account": send_as}
    return _ENCODER.encode(body).encode("utf-8", "replace")


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # json.dumps(…) makes one per call
_json_string = encode_basestring  # a str as a JSON string, non-ASCII kept (the C version)


class TokenManager:
    """Owns the access_token: one refresh at a time, cached until shortly before expiry.

    With a shared store (several instances, one appid), the token lives in the store too: an instance
    first adopts the shared token; only one instance at a time (a lock with expiry in the store) fetches a
    new one, the others wait for it. After a 40001, the shared token is read again before fetching: if
    another instance has refreshed meanwhile, its token is simply taken."""

    def __init__(self, api: WeChatAPI, clock: Callable[[], float] = time.time, store: Store | None = None):
        self._api = api
        self._clock = clock
        self._store = store if store is not None and store.shared else None
        self._key = f"wechat:token:{api.settings.appid}"
        self._token: str | None = None
        self._expires_at = 0.0
        self._bad: str | None = None  # a token WeChat refused: never adopt it again from the store
        self._lock = asyncio.Lock()
        self._failure: tuple[float, WeChatAPIError] | None = None  # (until, error) of a refused fetch
        self.refreshes = 0

    def cached(self) -> str | None:
        """The token while it is fresh (every send but the first after a refresh), without awaiting."""
        token = self._token
        return token if token is not None and self._clock() < self._expires_at else None

    async def get(self) -> str:
        token = self._token
        if token is not None and self._clock() < self._expires_at:
            return token
        async with self._lock:
            if self._token is not None and self._clock() < self._expires_at:
                return self._token  # another waiter refreshed while we queued
            if self._failure is not None and self._clock() < self._failure[0]:
                raise self._failure[1]  # a wrong secret or a missing IP whitelist entry: don't hammer
            if self._store is not None and await self._adopt_shared():
                return self._token  # type: ignore[return-value]
            return await self._refresh()

    async def _refresh(self) -> str:
        owner = f"{id(self):x}-{time.monotonic_ns()}"
        locked = False
        if self._store is not None:
            locked = await self._shared(self._store.set_if_absent(self._key + ":lock", owner, LOCK_TTL), True)
            if not locked:  # another instance is fetching: wait for its token
                deadline = time.monotonic() + LOCK_TTL
                while time.monotonic() < deadline:
                    await asyncio.sleep(SHARED_POLL)
                    if await self._adopt_shared():
                        return self._token  # type: ignore[return-value]
        try:
            try:
                token, expires_in = await self._api.fetch_token()
            except WeChatAPIError as exc:
                if exc.errcode is not None and exc.errcode not in RETRYABLE_ERRORS:
                    self._failure = (self._clock() + FAILED_FETCH_PAUSE, exc)
                raise
            self._failure, self._bad = None, None
            self.refreshes += 1
            margin = min(300.0, expires_in / 2)
            self._token, self._expires_at = token, self._clock() + expires_in - margin
            if self._store is not None:
                await self._shared(self._store.set(self._key, f"{token}\n{self._expires_at}", expires_in), None)
            return token
        finally:
            if locked and self._store is not None:
                await self._shared(self._store.delete_if(self._key + ":lock", owner), None)

    async def _adopt_shared(self) -> bool:
        assert self._store is not None
        value = await self._shared(self._store.get(self._key), None)
        if not value:
            return False
        token, _, expires = value.partition("\n")
        try:
            expires_at = float(expires)
        except ValueError:
            return False
        if token == self._bad or self._clock() >= expires_at:
            return False
        self._token, self._expires_at = token, expires_at
        return True

    async def _shared(self, call: Any, fallback: Any) -> Any:
        """A store call that may fail: without the store, this instance manages its token alone."""
        try:
            return await call
        except StoreError as exc:
            log.warning("WeChat API: the store is unavailable for the shared access_token (%s)", exc)
            return fallback

    def invalidate(self, token: str) -> None:
        """Forget `token` if it is still the cached one (a concurrent refresh may have replaced it), and
        never adopt it from the store again."""
        self._bad = token
        if self._token == token:
            self._token, self._expires_at = None, 0.0


class WeChatAPI:
    def __init__(self, settings: WeChatSettings, session: aiohttp.ClientSession,
                 retry: RetryPolicy | None = None, clock: Callable[[], float] = time.time,
                 store: Store | None = None):
        if not settings.has_credentials:
            raise ValueError("WeChatAPI needs wechat.appid and wechat.secret")
        self.settings = settings
        self.session = session
        self.retry = retry or RetryPolicy()
        self.base = settings.api_base.rstrip("/")
        self.tokens = TokenManager(self, clock, store)
        self.store = store if store is not None and store.shared else None
        self._media: dict[str, str] = {}  # media cache in this process (the store's is shared)
        self._media_locks: dict[str, asyncio.Lock] = {}
        self._timeout = aiohttp.ClientTimeout(total=self.retry.timeout)
        self._query_of = ("", "")  # (token, its ?access_token= query)
        # JSON POSTs (every send) go through the lean client; the token GET and uploads through aiohttp
        self.client = JsonClient(self.base, limit=session.connector.limit if session.connector else 100)

    def __repr__(self) -> str:
        return f"WeChatAPI(appid={self.settings.appid!r}, base={self.base!r})"

    async def close(self) -> None:
        await self.client.close()

    async def _request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                       body: bytes | aiohttp.FormData | None = None) -> Mapping[str, Any]:
        if method == "POST" and isinstance(body, bytes):  # a JSON POST (every send): the lean client
            return await self._post_json(path + _query(params), body)
        try:
            async with self.session.request(method, self.base + path, params=params, data=body,
                                            timeout=self._timeout) as resp:
                status, raw = resp.status, await resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _Transient(scrub(f"{type(exc).__name__}: {exc}".rstrip(": "))) from None
        return _answer(status, raw)

    async def _post_json(self, path: str, body: bytes) -> Mapping[str, Any]:
        try:
            status, raw = await self.client.post(path, body, self.retry.timeout)
        except (TimeoutError, ClientError) as exc:
            raise _Transient(scrub(f"{type(exc).__name__}: {exc}".rstrip(": "))) from None
        return _answer(status, raw)

    async def _with_retries(self, call: Callable[[], Any]) -> tuple[Mapping[str, Any], int]:
        """Run `call` until it gives a non-transient answer or the attempts run out."""
        attempt = 0
        while True:
            attempt += 1
            try:
                data = await call()
            except _Transient as exc:
                if attempt >= self.retry.attempts:
                    raise WeChatAPIError(None, str(exc)) from None
                log.warning("WeChat API: %s; retrying (attempt %d of %d)", exc, attempt, self.retry.attempts)
                await asyncio.sleep(self.retry.delay(attempt))
                continue
            errcode = _errcode(data)
            if errcode in RETRYABLE_ERRORS and attempt < self.retry.attempts:
                log.warning("WeChat API: errcode %s; retrying (attempt %d of %d)", errcode, attempt,
                            self.retry.attempts)
                await asyncio.sleep(self.retry.delay(attempt))
                continue
            return data, attempt

    async def fetch_token(self) -> tuple[str, float]:
        """A fresh access_token and its lifetime in seconds. Raises WeChatAPIError."""
        s = self.settings
        if s.use_stable_token:
            body = json.dumps({"grant_type": "client_credential", "appid": s.appid,
                               "secret": s.secret.reveal(), "force_refresh": False}).encode()
            data, _ = await self._with_retries(lambda: self._request("POST", "/cgi-bin/stable_token",
                                                                     body=body))
        else:
            params = {"grant_type": "client_credential", "appid": s.appid, "secret": s.secret.reveal()}
            data, _ = await self._with_retries(lambda: self._request("GET", "/cgi-bin/token",
                                                                     params=params))
        token = data.get("access_token")
        if _errcode(data) != 0 or not isinstance(token, str) or not token:
            raise WeChatAPIError(_errcode(data) or None, str(data.get("errmsg", "no access_token")))
        try:
            expires_in = float(data.get("expires_in", 7200))
        except (TypeError, ValueError):
            expires_in = 7200.0
        log.info("WeChat API: new access_token (expires in %d s)", expires_in)
        return token, max(expires_in, 60.0)

    async def call(self, path: str, body: bytes) -> tuple[Mapping[str, Any], int]:
        """POST a JSON body to an access_token API; one token refresh on a token error."""
        attempts = 0
        refreshed = False
        while True:
            token = self.tokens.cached() or await self.tokens.get()
            url = path + self._token_query(token)
            data, used = await self._with_retries(lambda u=url: self._post_json(u, body))
            attempts += used
            errcode = _errcode(data)
            if errcode in TOKEN_ERRORS and not refreshed:
                log.warning("WeChat API: errcode %s on %s; refreshing the access_token once", errcode, path)
                self.tokens.invalidate(token)
                refreshed = True
                continue
            return data, attempts

    def _token_query(self, token: str) -> str:
        """`?access_token=…`, encoded once per token rather than once per send."""
        if self._query_of[0] != token:
            self._query_of = (token, _query({"access_token": token}))
        return self._query_of[1]

    async def send(self, touser: str, reply: Reply, send_as: str | None = None) -> SendResult:
        """Send one customer-service message. Never raises for WeChat's or the network's failures. An image
        file is uploaded first (once: its media_id is cached); a 40007 (WeChat forgot the media) uploads it
        again and sends once more."""
        if isinstance(reply, TypingReply):
            return await self.typing(touser)
        media = _media_of(reply)
        if media is None:  # the usual reply: one body, one send
            return await self.send_body(build_send_body(touser, reply, self.settings.platform, send_as))
        for attempt in (1, 2):
            try:
                reply = _with_media_id(reply, await self.media_id(media, fresh=attempt == 2))
            except WeChatAPIError as exc:
                return SendResult(ok=False, errcode=exc.errcode, errmsg=f"upload failed: {exc.errmsg}")
            result = await self.send_body(build_send_body(touser, reply, self.settings.platform, send_as))
            if result.errcode != INVALID_MEDIA:
                return result
            log.warning("WeChat API: media of %s expired (40007); uploading it again", Path(media.path).name)
        return result

    async def typing(self, touser: str) -> SendResult:
        """Show "typing…" (WeChat allows it within 30 s of the user's last message; it lasts 15 s)."""
        body = json.dumps({"touser": touser, "command": "Typing"}).encode()
        try:
            data, attempts = await self.call("/cgi-bin/message/custom/typing", body)
        except WeChatAPIError as exc:
            return SendResult(ok=False, errcode=exc.errcode, errmsg=exc.errmsg)
        return SendResult(ok=_errcode(data) == 0, errcode=_errcode(data), errmsg=str(data.get("errmsg", "")),
                          attempts=attempts)

    async def media_id(self, media: MediaFile, fresh: bool = False) -> str:
        """The media_id of an image file: from the cache (the store, shared by every instance), else uploaded.
        WeChat keeps uploads 3 days; the cache forgets them an hour earlier."""
        key = f"media:{media.digest}"
        lock = self._media_locks.setdefault(media.digest, asyncio.Lock())
        async with lock:  # many sends of one new image: one upload
            if not fresh:
                cached = self._media.get(key)
                if cached is None and self.store is not None:
                    cached = await self.tokens._shared(self.store.get(key), None)
                if cached:
                    self._media[key] = cached
                    return cached
            media_id = await self.upload_image(media)
            self._media[key] = media_id
            if self.store is not None:
                await self.tokens._shared(self.store.set(key, media_id, MEDIA_TTL), None)
            return media_id

    async def with_media(self, reply: Reply) -> Reply:
        """The reply with its file's media_id (cached, else uploaded): for a passive answer, which cannot
        upload after the fact. Raises WeChatAPIError."""
        media = _media_of(reply)
        return reply if media is None else _with_media_id(reply, await self.media_id(media))

    async def upload_image(self, media: MediaFile) -> str:
        """Upload an image through /cgi-bin/media/upload; raises WeChatAPIError."""
        data = await asyncio.to_thread(Path(media.path).read_bytes)
        name = Path(media.path).name
        refreshed = False
        while True:
            token = await self.tokens.get()

            def form() -> aiohttp.FormData:  # a FormData is spent by one request: a new one per attempt
                f = aiohttp.FormData()
                f.add_field("media", data, filename=name, content_type="application/octet-stream")
                return f

            answer, _ = await self._with_retries(lambda t=token: self._request(
                "POST", "/cgi-bin/media/upload", params={"access_token": t, "type": "image"}, body=form()))
            errcode = _errcode(answer)
            if errcode in TOKEN_ERRORS and not refreshed:
                self.tokens.invalidate(token)
                refreshed = True
                continue
            media_id = answer.get("media_id")
            if errcode != 0 or not isinstance(media_id, str) or not media_id:
                raise WeChatAPIError(errcode or None, str(answer.get("errmsg", "no media_id")))
            log.info("WeChat API: uploaded %s (%d KB)", name, media.size // 1024)
            return media_id

    async def send_body(self, body: bytes) -> SendResult:
        try:
            data, attempts = await self.call("/cgi-bin/message/custom/send", body)
        except WeChatAPIError as exc:
            return SendResult(ok=False, errcode=exc.errcode, errmsg=exc.errmsg, attempts=self.retry.attempts)
        if data is OK and attempts == 1:
            return SENT
        errcode = _errcode(data)
        return SendResult(ok=errcode == 0, errcode=errcode, errmsg=str(data.get("errmsg", "")),
                          attempts=attempts)


def _media_of(reply: Reply) -> MediaFile | None:
    if isinstance(reply, ImageReply) and reply.file is not None:
        return reply.file
    if isinstance(reply, MiniProgramPageReply) and reply.thumb_file is not None:
        return reply.thumb_file
    return None


def _with_media_id(reply: Reply, media_id: str) -> Reply:
    if isinstance(reply, ImageReply):
        return dataclasses.replace(reply, media_id=media_id)
    return dataclasses.replace(reply, thumb_media_id=media_id)


def _query(params: Mapping[str, str] | None) -> str:
    """`?a=1&b=2`, percent-encoded (urlencode costs a send several times this)."""
    if not params:
        return ""
    return "?" + "&".join(f"{quote(key, safe='')}={quote(value, safe='')}" for key, value in params.items())


def _answer(status: int, raw: bytes) -> Mapping[str, Any]:
    """The JSON object of an answer; 5xx and answers that are not JSON objects are transient."""
    if raw == OK_RAW and status == 200:  # nearly every send's answer: no JSON to parse
        return OK
    if status >= 500:
        raise _Transient(f"HTTP {status}")
    if status != 200:
        raise WeChatAPIError(None, f"HTTP {status}")
    try:
        data = json.loads(raw)
    except ValueError:
        raise _Transient("the answer is not JSON") from None
    if not isinstance(data, dict):
        raise _Transient("the answer is not a JSON object")
    return data


def _errcode(data: Mapping[str, Any]) -> int:
    try:
        return int(data.get("errcode", 0))
    except (TypeError, ValueError):
        return -1
