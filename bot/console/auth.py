"""Who may use the console: a login with `admin.token`, then a signed session cookie; CSRF checks on POSTs.

Sessions are signed cookies, not server-side records, so that every instance of a fleet accepts a session any
of them issued, and a restart logs nobody out:

- The signing key is HMAC-SHA256(salt, admin token). The salt is 32 random bytes kept in the store
  (`console:salt`, made by whichever instance needs it first), so a cookie cannot be checked — or the admin
  token guessed from it offline — without the store; changing the token ends every session.
- The cookie is `SID.EXPIRES.MAC`: a random session id, its absolute expiry (SESSION_TTL after login) and the
  MAC of both. `HttpOnly; SameSite=Strict; Path=/admin`, and `Secure` when the login came over https
  (directly, or through a proxy that says so in X-Forwarded-Proto).
- Logging out marks the session id as ended in the store (`console:ended:SID`, until it would have expired):
  a copy of the cookie is useless after that, on every instance.
- CSRF: every form carries HMAC(key, "csrf:" + SID) in a hidden field, checked with compare_digest on every
  POST; a POST whose Origin header is present must name this host. The login form, before there is a session,
  is a double submit: a random value both in a short-lived cookie and in the form.
- Failed logins are logged (with the client's address, never what was typed) and limited per address:
  after MAX_FAILURES within FAILURE_WINDOW seconds, logins from there are refused until the window passes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from ..config import Secret
from ..errors import StoreError
from ..store import Store

log = logging.getLogger(__name__)

COOKIE = "kefu_console"
LOGIN_COOKIE = "kefu_console_login"
SESSION_TTL = 12 * 3600  # seconds a login lasts
LOGIN_FORM_TTL = 3600  # seconds a login form may be left open
SALT_KEY = "console:salt"
SALT_TTL = 10 * 365 * 86400.0
SALT_RECHECK = 60.0  # seconds between looks at the stored salt (another instance may have replaced it)
MAX_FAILURES = 10
FAILURE_WINDOW = 600.0
MAX_TRACKED = 10_000  # addresses remembered for the failure limit


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    expires: int
    csrf: str  # the form token of this session


def _mac(key: bytes, text: str) -> str:
    digest = hmac.new(key, text.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def is_https(request: web.Request) -> bool:
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


def same_origin(request: web.Request) -> bool:
    """True unless the request says it comes from another site (an Origin header naming another host)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    netloc = urlsplit(origin).netloc.lower()
    hosts = {request.host.lower(), request.headers.get("X-Forwarded-Host", "").split(",")[0].strip().lower()}
    return bool(netloc) and netloc in hosts


class Sessions:
    def __init__(self, token: Secret, store: Store, clock: Callable[[], float] = time.time):
        self._token = token
        self._store = store
        self._clock = clock
        self._key: bytes | None = None
        self._key_checked = 0.0
        self._failures: dict[str, deque[float]] = {}

    def __repr__(self) -> str:
        return "Sessions(token=***)"

    async def _signing_key(self) -> bytes:
        """Raises StoreError when the store cannot be reached."""
        now = time.monotonic()
        if self._key is None or now - self._key_checked > SALT_RECHECK:
            salt = await self._store.get(SALT_KEY)
            if not salt:  # the first console request of this store: make the salt (once, whoever is first)
                await self._store.set_if_absent(SALT_KEY, secrets.token_hex(32), SALT_TTL)
                salt = await self._store.get(SALT_KEY)
            if not salt:
                raise StoreError("the console's salt could not be kept in the store")
            self._key = hmac.new(salt.encode(), self._token.reveal().encode(), hashlib.sha256).digest()
            self._key_checked = now
        return self._key

    # ---- logging in --------------------------------------------------------------------------------

    @staticmethod
    def login_nonce() -> str:
        """A value for the login form, to be set as a cookie too (the double submit the login POST checks)."""
        return secrets.token_urlsafe(18)

    @staticmethod
    def set_login_nonce(request: web.Request, response: web.StreamResponse, nonce: str) -> None:
        response.set_cookie(LOGIN_COOKIE, nonce, max_age=LOGIN_FORM_TTL, path="/admin", httponly=True,
                            samesite="Strict", secure=is_https(request))

    @staticmethod
    def login_form_ok(request: web.Request, given: str) -> bool:
        expected = request.cookies.get(LOGIN_COOKIE, "")
        return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())

    def throttled(self, remote: str) -> bool:
        failures = self._failures.get(remote)
        if not failures:
            return False
        while failures and failures[0] < self._clock() - FAILURE_WINDOW:
            failures.popleft()
        return len(failures) >= MAX_FAILURES

    def token_ok(self, given: str, remote: str) -> bool:
        """Compare a typed token with admin.token; count and log a failure."""
        expected = self._token.reveal()
        if expected and hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8")):
            self._failures.pop(remote, None)
            return True
        if remote not in self._failures and len(self._failures) >= MAX_TRACKED:
            self._failures.pop(next(iter(self._failures)))
        self._failures.setdefault(remote, deque(maxlen=MAX_FAILURES)).append(self._clock())
        log.warning("console login refused from %s: wrong token (%d recent failures from there)", remote,
                    len(self._failures[remote]))
        return False

    async def start(self, request: web.Request, response: web.StreamResponse) -> Session:
        """A new session: its cookie set on `response`."""
        key = await self._signing_key()
        sid, expires = secrets.token_urlsafe(18), int(self._clock()) + SESSION_TTL
        value = f"{sid}.{expires}.{_mac(key, f'session:{sid}.{expires}')}"
        response.set_cookie(COOKIE, value, max_age=SESSION_TTL, path="/admin", httponly=True, samesite="Strict",
                            secure=is_https(request))
        response.del_cookie(LOGIN_COOKIE, path="/admin")
        return Session(sid, expires, _mac(key, f"csrf:{sid}"))

    # ---- checking --------------------------------------------------------------------------------

    async def current(self, request: web.Request) -> Session | None:
        """The request's session, or None (no cookie, a forged or expired one, or logged out)."""
        sid, _, rest = request.cookies.get(COOKIE, "").partition(".")
        expires, _, mac = rest.partition(".")
        if not sid or not expires.isdigit() or not mac:
            return None
        key = await self._signing_key()
        if not hmac.compare_digest(mac.encode(), _mac(key, f"session:{sid}.{expires}").encode()):
            return None
        if int(expires) <= self._clock() or await self._store.get(f"console:ended:{sid}") is not None:
            return None
        return Session(sid, int(expires), _mac(key, f"csrf:{sid}"))

    @staticmethod
    def csrf_ok(session: Session, given: str) -> bool:
        return bool(given) and hmac.compare_digest(given.encode("utf-8", "replace"), session.csrf.encode())

    async def end(self, session: Session, response: web.StreamResponse) -> None:
        ttl = session.expires - self._clock()
        if ttl > 0:
            await self._store.set(f"console:ended:{session.sid}", "1", ttl)
        response.del_cookie(COOKIE, path="/admin")
