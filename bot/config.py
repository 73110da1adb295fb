"""bot.yaml → frozen Settings.

`${NAME}` and `${NAME:-default}` in any string are replaced from the environment. Relative paths are
relative to the config file's folder. Unknown keys and wrong types are errors with `file:line`.
Secrets are wrapped in `Secret`, which never shows its value in a repr, a str or a log line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from .errors import ConfigError, Problem
from .insights.settings import InsightsSettings, parse_insights
from .platforms import apply_defaults
from .secret import Secret
from .yamlsrc import Checker, YamlList, YamlMap, YamlSyntaxError, load_yaml, type_name

PLATFORMS = ("miniprogram", "official_account")
TIMEZONE = ZoneInfo("Asia/Shanghai")  # the clock rules and templates see


@dataclass(frozen=True, slots=True)
class WeChatSettings:
    platform: str = "miniprogram"
    appid: str = ""
    secret: Secret = Secret("")
    token: Secret = Secret("")
    encoding_aes_key: Secret = Secret("")
    api_base: str = "https://api.weixin.qq.com"
    use_stable_token: bool = False
    proxy: Secret = Secret("")  # http://user:pass@host:3128 (its password is a secret); "": HTTPS_PROXY/NO_PROXY
    ca_file: Path | None = None  # PEM certificates of a private CA, trusted besides the system's

    @property
    def has_credentials(self) -> bool:
        return bool(self.appid and self.secret)


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    path: str = "/wechat"


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    max_body_bytes: int = 65536
    max_timestamp_age: int = 300
    require_encryption: bool = False


@dataclass(frozen=True, slots=True)
class AdminSettings:
    token: Secret = Secret("")


@dataclass(frozen=True, slots=True)
class OutboxSettings:
    concurrency: int = 64  # sends in flight at once, across all users
    max_attempts: int = 8  # tries per reply for transient failures (-1, 5xx, timeouts) before it is failed
    lease: int = 15  # seconds: an instance that dies frees its users' replies for others after this
    per_push: int = 10  # messages one push may send after splitting; the rest are dropped and logged


@dataclass(frozen=True, slots=True)
class QuotaSettings:
    """WeChat's send allowance per user (see bot/allowance.py)."""

    enabled: bool = True
    per_message: int = 5  # sends a user's message allows…
    message_window: int = 48 * 3600  # …within this many seconds
    per_event: int = 2  # sends entering the session (or subscribe/SCAN/CLICK: 3, see platforms.py) allows…
    event_window: int = 60  # …within this many seconds


@dataclass(frozen=True, slots=True)
class HandoffSettings:
    quiet: int = 1800  # seconds the bot stays quiet for a user after handing them to agents (0: never)
    end_on_enter: bool = True  # user_enter_tempsession ends the quiet (official accounts: false, see platforms.py)


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    """What one rule may cost a push (see bot/engine/limits.py)."""

    regex_ms: int = 50  # one regex match gives up after this long: the rule does not match
    render_ms: int = 100  # rendering one reply text stops after this long: a render error
    render_chars: int = 20_000  # …or once it makes more characters than this


@dataclass(frozen=True, slots=True)
class LogSettings:
    keep: int = 30 * 86400  # seconds the conversation log (and finished outbox items) are kept


@dataclass(frozen=True, slots=True)
class Settings:
    wechat: WeChatSettings = WeChatSettings()
    server: ServerSettings = ServerSettings()
    rules: Path = Path("rules")
    templates: Path = Path("templates")
    media: Path = Path("media")  # image files replies can send (templates/ works too)
    store: str = field(default="memory://", repr=False)  # may hold a password: see store_display
    vars: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    security: SecuritySettings = SecuritySettings()
    admin: AdminSettings = AdminSettings()
    outbox: OutboxSettings = OutboxSettings()
    quota: QuotaSettings = QuotaSettings()
    handoff: HandoffSettings = HandoffSettings()
    log: LogSettings = LogSettings()
    insights: InsightsSettings = InsightsSettings()  # bot/insights/settings.py
    limits: LimitsSettings = LimitsSettings()
    allow_empty_rules: bool = False  # true: no rule files is fine (every message gets the fallback)
    timezone: ZoneInfo = TIMEZONE  # the clock of `time:` conditions and of templates' `now`
    hours: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # named windows (hours.py)
    source: str = "<defaults>"

    @property
    def store_display(self) -> str:
        return redact_url(self.store)


# Each section: key -> (kind, default). Kinds: str, int, bool, secret, path, platform, store, urlpath, map.
_SECTIONS: dict[str, dict[str, tuple[str, Any]]] = {
    "wechat": {
        "platform": ("platform", "miniprogram"),
        "appid": ("str", ""),
        "secret": ("secret", ""),
        "token": ("secret", ""),
        "encoding_aes_key": ("aeskey", ""),
        "api_base": ("url", "https://api.weixin.qq.com"),
        "use_stable_token": ("bool", False),
        "proxy": ("proxy", ""),
        "ca_file": ("cafile", ""),
    },
    "server": {"host": ("str", "127.0.0.1"), "port": ("port", 8080), "path": ("urlpath", "/wechat")},
    "security": {
        "max_body_bytes": ("int", 65536),
        "max_timestamp_age": ("int", 300),
        "require_encryption": ("bool", False),
    },
    "admin": {"token": ("secret", "")},
    "outbox": {"concurrency": ("positive", 64), "max_attempts": ("positive", 8), "lease": ("positive", 15),
               "per_push": ("positive", 10)},
    "quota": {"enabled": ("bool", True), "per_message": ("positive", 5), "message_window": ("duration", 172800),
              "per_event": ("positive", 2), "event_window": ("duration", 60)},
    "handoff": {"quiet": ("duration", 1800), "end_on_enter": ("bool", True)},
    "log": {"keep": ("duration", 30 * 86400)},
    "limits": {"regex_ms": ("positive", 50), "render_ms": ("positive", 100), "render_chars": ("positive", 20_000)},
}
_TOP: dict[str, tuple[str, Any]] = {
    "rules": ("path", "rules"),
    "templates": ("path", "templates"),
    "media": ("path", "media"),
    "store": ("store", "memory://"),
    "vars": ("map", {}),
    "allow_empty_rules": ("bool", False),
    "timezone": ("zone", "Asia/Shanghai"),
    "hours": ("windows", {}),
    "insights": ("insights", None),
}
STORE_SCHEMES = ("memory://", "sqlite:///", "redis://", "rediss://")
RESERVED_PATHS = ("", "/healthz", "/readyz", "/metrics")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(d|h|m|s)?\s*$")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1, None: 1}


def parse_duration(value: Any) -> int | None:
    """30d, 12h, 10m, 90s or a number of seconds → seconds; None if it is not one."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    match = _DURATION.match(str(value)) if isinstance(value, str) else None
    return int(float(match.group(1)) * _UNITS[match.group(2)]) if match else None


def redact_url(url: str) -> str:
    """A URL without the password of its user part: redis://:secret@host → redis://:***@host."""
    return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(value: Any, env: Mapping[str, str], check: Checker, line: int) -> Any:
    if isinstance(value, str) and "${" in value:
        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if env.get(name):
                return env[name]
            if default is not None:  # as in the shell: the default is for unset *or empty*
                return default
            if name in env:
                return ""
            check.add(line, f"environment variable {name} is not set (write ${{{name}:-default}} "
                            "to give a default)")
            return ""
        return _ENV.sub(sub, value)
    if isinstance(value, YamlMap):
        for key in list(value):
            value[key] = _interpolate(value[key], env, check, value.line_of(key))
    elif isinstance(value, YamlList):
        for i, item in enumerate(value):
            value[i] = _interpolate(item, env, check, value.line_of(i))
    return value


def _convert(kind: str, key: str, value: Any, line: int, check: Checker, base: Path) -> Any:
    def wrong(expected: str) -> None:
        check.add(line, f"'{key}' must be {expected}, not {type_name(value)}")

    if kind in ("str", "secret", "aeskey", "url", "urlpath", "platform", "store", "path", "proxy", "cafile"):
        if value is None:
            value = ""
        if isinstance(value, int | float) and not isinstance(value, bool) and kind in ("str", "secret"):
            value = str(value)  # an appid or token that happens to look like a number
        if not isinstance(value, str):
            wrong("text")
            return None
        if kind == "aeskey" and value:
            from .protocol.crypto import decode_aes_key

            try:
                decode_aes_key(value)
            except ValueError as exc:
                check.add(line, f"'{key}' {exc} (copy the EncodingAESKey from the WeChat console)")
        if kind in ("proxy", "cafile") and value:
            from .transport import ca_file_problem, proxy_problem

            problem = proxy_problem(value) if kind == "proxy" else ca_file_problem(base / value)
            if problem:
                check.add(line, f"'{key}' {problem}")
        if kind in ("secret", "aeskey", "proxy"):
            return Secret(value)
        if kind == "cafile":
            return (base / value).resolve() if value else None
        if kind == "platform" and value not in PLATFORMS:
            check.add(line, f"'platform' must be one of {', '.join(PLATFORMS)}, not '{value}'")
        if kind == "url" and not value.startswith(("http://", "https://")):
            check.add(line, f"'{key}' must start with http:// or https://")
        if kind == "urlpath" and not value.startswith("/"):
            check.add(line, f"'{key}' must start with /")
        if kind == "store" and not value.startswith(STORE_SCHEMES):
            check.add(line, f"'store' must be one of {', '.join(STORE_SCHEMES)}…, not '{redact_url(value)}'")
        if kind == "urlpath" and (value.rstrip("/") in RESERVED_PATHS or value.startswith("/admin")):
            check.add(line, f"'{key}' {value} is kefu's own; choose another path, e.g. /wechat")
        if kind == "path":
            return (base / value).resolve() if value else base
        return value.rstrip("/") if kind == "url" else value
    if kind == "zone":
        try:
            return ZoneInfo(str(value))
        except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
            check.add(line, f"'{key}' must be a time zone name like Asia/Shanghai, not {value!r}")
            return None
    if kind == "windows":
        from .hours import parse_windows

        return parse_windows(value, line, check)
    if kind == "insights":
        return parse_insights(value, line, check)
    if kind == "duration":
        seconds = parse_duration(value)
        if seconds is None:
            check.add(line, f"'{key}' must be a duration like 30d, 12h, 10m or 90s, not {value!r}")
        return seconds
    if kind == "positive":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            check.add(line, f"'{key}' must be a whole number of at least 1, not {value!r}")
            return None
        return value
    if kind in ("int", "port"):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value)  # from ${ENV}
            else:
                wrong("a whole number")
                return None
        if value < 0 or (kind == "port" and not 0 < value < 65536):
            check.add(line, f"'{key}' is out of range: {value}")
        return value
    if kind == "bool":
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"  # from ${ENV}
        if not isinstance(value, bool):
            wrong("true or false")
            return None
        return value
    if kind == "map":
        if value is None:
            return MappingProxyType({})
        if not isinstance(value, dict):
            wrong("a mapping")
            return None
        return MappingProxyType(dict(value))
    raise AssertionError(kind)  # pragma: no cover - a bug in _SECTIONS


def _read(mapping: YamlMap, fields: dict[str, tuple[str, Any]], check: Checker, base: Path,
          where: str) -> dict[str, Any]:
    check.unknown_keys(mapping, fields, where)
    out: dict[str, Any] = {}
    for key, (kind, default) in fields.items():
        if key in mapping:
            converted = _convert(kind, key, mapping[key], mapping.line_of(key), check, base)
            if converted is not None:
                out[key] = converted
        elif kind == "path":
            out[key] = (base / default).resolve()
    return out


def parse_settings(text: str, filename: str, base: Path,
                   env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from bot.yaml text. Raises ConfigError listing every problem."""
    env = os.environ if env is None else env
    try:
        data = load_yaml(text, filename)
    except YamlSyntaxError as exc:
        raise ConfigError(exc.problem) from None
    if data is None:
        data = YamlMap()
    check = Checker(filename)
    if not isinstance(data, YamlMap):
        raise ConfigError(Problem(filename, 1, f"bot.yaml must be a mapping, not {type_name(data)}"))
    _interpolate(data, env, check, data.line)
    check.unknown_keys(data, [*_SECTIONS, *_TOP])
    values = _read(_only(data, _TOP), _TOP, check, base, "")
    sections: dict[str, Any] = {}
    for name, fields in _SECTIONS.items():
        section = data.get(name)
        if section is None:
            section = YamlMap()
        if not isinstance(section, YamlMap):
            check.add(data.line_of(name), f"'{name}' must be a mapping, not {type_name(section)}")
            section = YamlMap()
        sections[name] = _read(section, fields, check, base, name)
    _cross_check(data, sections, check)
    apply_defaults(sections["wechat"].get("platform", "miniprogram"), sections)
    if check.problems:
        raise ConfigError(check.problems)
    return Settings(
        wechat=WeChatSettings(**sections["wechat"]),
        server=ServerSettings(**sections["server"]),
        security=SecuritySettings(**sections["security"]),
        admin=AdminSettings(**sections["admin"]),
        outbox=OutboxSettings(**sections["outbox"]),
        quota=QuotaSettings(**sections["quota"]),
        handoff=HandoffSettings(**sections["handoff"]),
        log=LogSettings(**sections["log"]),
        limits=LimitsSettings(**sections["limits"]),
        source=filename,
        **values,
    )


def _section(data: YamlMap, name: str) -> YamlMap:
    found = data.get(name)
    return found if isinstance(found, YamlMap) else YamlMap()


def _cross_check(data: YamlMap, sections: dict[str, Any], check: Checker) -> None:
    """Settings that only make sense together."""
    wechat = _section(data, "wechat")
    security = _section(data, "security")
    if sections["wechat"].get("encoding_aes_key") and not sections["wechat"].get("appid"):
        check.add(wechat.line_of("encoding_aes_key"),
                  "'encoding_aes_key' needs 'appid' too: safe mode checks that each message is for it")
    if sections["security"].get("require_encryption") and not sections["wechat"].get("encoding_aes_key"):
        check.add(security.line_of("require_encryption"),
                  "'require_encryption' needs wechat.encoding_aes_key to decrypt the pushes")


def _only(data: YamlMap, keys: Mapping[str, Any]) -> YamlMap:
    sub = YamlMap()
    sub.line = data.line
    for key in keys:
        if key in data:
            sub[key] = data[key]
            sub.key_lines[key] = data.line_of(key)
    return sub


def load_settings(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Settings:
    """Read and parse a bot.yaml file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(Problem(str(path), None, "config file not found")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(Problem(str(path), None, f"cannot read: {exc}")) from None
    return parse_settings(text, str(path), path.resolve().parent, env)
