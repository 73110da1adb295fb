"""The bounds one rule cannot pass, and what hit them.

Operators write the rules and hot reload puts them live within a second, so no regex and no template may hold
the event loop (everyone's pushes, /healthz, the console) for long, whatever it is given:

- a regex match stops after `regex_ms` (engine/patterns.py) and the rule is treated as not matching;
- a template render stops after `render_ms`, or once it has made more than `render_chars` characters
  (engine/budget.py): a render error, which for a user's message is a transfer to agents.

The numbers come from bot.yaml's `limits:` section (config.py); `configure` sets them for the process when the
settings are loaded (reload.load_steps), since every rule set of one process runs under the same bot.yaml.

What hit a bound is counted here, by rule, for `/metrics` (kefu_regex_timeouts_total) and the console.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

LOG_EVERY = 60.0  # seconds: a pattern that keeps timing out is logged at most this often (and counted always)


@dataclass(slots=True)
class Limits:
    regex_ms: float = 50.0  # one regex match, on any text WeChat can deliver
    render_ms: float = 100.0  # rendering one text of a reply (with its includes and macros)
    render_chars: int = 20_000  # characters one text may come to, before splitting into messages

    @property
    def regex_seconds(self) -> float:
        return self.regex_ms / 1000

    @property
    def render_seconds(self) -> float:
        return self.render_ms / 1000


LIMITS = Limits()  # read at match and render time: change it through configure()


def configure(regex_ms: float | None = None, render_ms: float | None = None,
              render_chars: int | None = None) -> None:
    """Set the process's limits (None keeps a value as it is)."""
    if regex_ms is not None:
        LIMITS.regex_ms = float(regex_ms)
    if render_ms is not None:
        LIMITS.render_ms = float(render_ms)
    if render_chars is not None:
        LIMITS.render_chars = int(render_chars)


class Timeouts:
    """Regex matches that hit the bound, counted by rule name since the process started."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.last: dict[str, float] = {}  # rule → when it last hit the bound (epoch)
        self._logged: dict[str, float] = {}  # (rule, pattern) → when last logged (monotonic)

    def report(self, rule: str, where: str, source: str, length: int) -> None:
        """A pattern of `rule` (at `where`, file:line) gave up on a text of `length` characters."""
        self.counts[rule] = self.counts.get(rule, 0) + 1
        self.last[rule] = time.time()
        key = f"{where}\0{source}"
        now = time.monotonic()
        if now - self._logged.get(key, -LOG_EVERY) >= LOG_EVERY:
            if len(self._logged) >= 10_000:  # patterns of rule sets long gone
                self._logged.clear()
            self._logged[key] = now
            log.warning("%s: regex %r gave up after %g ms on a text of %d characters: treated as not matching "
                        "(%d times so far; `kefu check` names nested quantifiers, the usual cause)",
                        where, source, LIMITS.regex_ms, length, self.counts[rule])

    def clear(self) -> None:
        self.counts.clear()
        self.last.clear()
        self._logged.clear()


TIMEOUTS = Timeouts()
