"""The one exception tree of kefu.

    KefuError
    ├── SourceError              problems in files an operator edits; each problem is `file:line: message`
    │   ├── ConfigError          bot.yaml
    │   └── RulesError           rules/*.yaml and templates/
    ├── ProtocolError            a push WeChat (or an impostor) sent; carries the HTTP status to answer
    │   ├── BadSignature         403
    │   ├── StaleTimestamp       403
    │   ├── EncryptionRequired   403
    │   ├── MalformedPush        400
    │   └── PushTooLarge         413
    ├── StoreError               the store could not be reached or answered nonsense
    └── WeChatAPIError           the WeChat API answered an errcode (or could not be reached)

Errors are raised low and translated high: only the server maps them to HTTP status codes, only the CLI
exits the process.
"""

from __future__ import annotations

from dataclasses import dataclass


class KefuError(Exception):
    """Base of every error kefu raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a file an operator edits."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}: {self.message}"


class SourceError(KefuError):
    """One or more problems in operator-edited files, all reported at once."""

    def __init__(self, problems: list[Problem] | Problem):
        self.problems: tuple[Problem, ...] = (
            (problems,) if isinstance(problems, Problem) else tuple(problems)
        )
        super().__init__("\n".join(str(p) for p in self.problems))


class ConfigError(SourceError):
    """bot.yaml is broken."""


class RulesError(SourceError):
    """The rules or templates are broken."""


class ProtocolError(KefuError):
    """A push that must be refused. `status` is the HTTP status the server answers."""

    status = 400


class BadSignature(ProtocolError):
    status = 403


class StaleTimestamp(ProtocolError):
    status = 403


class EncryptionRequired(ProtocolError):
    status = 403


class MalformedPush(ProtocolError):
    status = 400


class PushTooLarge(ProtocolError):
    status = 413


class PushTooSlow(ProtocolError):
    """The body was still arriving when WeChat would have stopped waiting for the answer."""

    status = 408


class StoreError(KefuError):
    """The store failed."""


class WeChatAPIError(KefuError):
    """The WeChat API answered an error, or could not be reached (errcode None). `verdict` is what
    errcodes.classify made of it (an errcodes.Verdict; None: judge by the errcode), `attempts` the calls made."""

    def __init__(self, errcode: int | None, errmsg: str, verdict: object = None, attempts: int = 1):
        self.errcode = errcode
        self.errmsg = errmsg
        self.verdict = verdict
        self.attempts = attempts
        super().__init__(f"errcode {errcode}: {errmsg}" if errcode is not None else errmsg)
