"""What the bot did, for Prometheus: `GET /metrics`.

The push and send paths only add to plain dictionaries and lists (no locks, no label lookups: tens of
nanoseconds); prometheus-client turns them into its text format when /metrics is read. Values that live in
the store (the outbox's depth and the age of its oldest pending reply) are read at that moment, so with a
shared store every instance reports the fleet's outbox.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from .engine.limits import TIMEOUTS

# seconds; WeChat's window is 5 s
PUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SEND_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    """Cumulative buckets kept as plain counts."""

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def add(self, counts: list[int], total: float) -> None:
        if len(counts) == len(self.counts):
            self.counts = [a + b for a, b in zip(self.counts, counts, strict=True)]
            self.total += total

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        buckets, running = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=self.total)


class Metrics:
    def __init__(self) -> None:
        self.started = time.time()
        self.pushes: dict[tuple[str, str], int] = defaultdict(int)  # (type, answer) → count
        self.refused: dict[int, int] = defaultdict(int)  # HTTP status → count
        self.retries = 0  # deliveries of a push already answered (WeChat's retries)
        self.hits: dict[str, int] = defaultdict(int)  # rule → count
        self.fallbacks = 0
        self.transfers = 0
        self.render_errors = 0
        self.safe_answers = 0  # pushes answered safely (transfer / success) because the store or kefu failed
        self.sends: dict[tuple[str, str], int] = defaultdict(int)  # (result, errcode) → count
        self.push_latency = Histogram(PUSH_BUCKETS)
        self.send_latency = Histogram(SEND_BUCKETS)
        # read when /metrics is: set by the server
        self.reloads = lambda: (0, 0, 0)  # (builds, swaps, refused)
        self.ruleset = lambda: ("", 0, 0.0)  # (version, rule count, loaded at)
        self.outbox: dict[str, float] = {}  # status → count, and "oldest_age" (filled in before each scrape)
        self.regex_timeouts: dict[str, int] = TIMEOUTS.counts  # rule → regex matches that gave up (engine/limits.py)

    # ---- the push and send paths -----------------------------------------------------------------

    def push(self, label: str, answer: str, rule: str | None, is_event: bool, transfer: bool,
             seconds: float, error: bool = False) -> None:
        self.pushes[label, answer] += 1
        if rule is not None:
            self.hits[rule] += 1
        elif not is_event:
            self.fallbacks += 1
        if transfer:
            self.transfers += 1
        if error:
            self.render_errors += 1
        self.push_latency.observe(seconds)

    def safe(self, label: str, answer: str, seconds: float) -> None:
        self.pushes[label, answer] += 1
        self.safe_answers += 1
        self.push_latency.observe(seconds)

    def refuse(self, status: int) -> None:
        self.refused[status] += 1

    def send(self, result: str, errcode: int | None, seconds: float) -> None:
        self.sends[result, "" if errcode is None else str(errcode)] += 1
        self.send_latency.observe(seconds)

    # ---- several workers (kefu serve --workers N) ------------------------------------------------------

    def snapshot(self) -> dict:
        """This process's counts, as JSON, for the other workers to add to theirs."""
        builds, swaps, refused = self.reloads()
        return {"pushes": [[*key, n] for key, n in self.pushes.items()], "refused": list(self.refused.items()),
                "retries": self.retries, "hits": self.hits, "fallbacks": self.fallbacks,
                "transfers": self.transfers, "render_errors": self.render_errors,
                "safe_answers": self.safe_answers, "sends": [[*key, n] for key, n in self.sends.items()],
                "push_latency": [self.push_latency.counts, self.push_latency.total],
                "send_latency": [self.send_latency.counts, self.send_latency.total],
                "reloads": [builds, swaps, refused], "regex_timeouts": self.regex_timeouts}

    def combined(self, others: list[dict]) -> Metrics:
        """These counts plus the other workers' snapshots (the store-read figures are this process's)."""
        total = Metrics()
        total.started, total.ruleset, total.outbox = self.started, self.ruleset, self.outbox
        total.regex_timeouts = {}
        reloads = list(self.reloads())
        for snap in [self.snapshot(), *others]:
            for label, answer, n in snap["pushes"]:
                total.pushes[label, answer] += n
            for status, n in snap["refused"]:
                total.refused[int(status)] += n
            for rule, n in snap["hits"].items():
                total.hits[rule] += n
            for result, errcode, n in snap["sends"]:
                total.sends[result, errcode] += n
            for rule, n in snap.get("regex_timeouts", {}).items():
                total.regex_timeouts[rule] = total.regex_timeouts.get(rule, 0) + n
            for name in ("retries", "fallbacks", "transfers", "render_errors", "safe_answers"):
                setattr(total, name, getattr(total, name) + snap[name])
            total.push_latency.add(*snap["push_latency"])
            total.send_latency.add(*snap["send_latency"])
        for snap in others:
            reloads = [a + b for a, b in zip(reloads, snap["reloads"], strict=True)]
        builds, swaps, refused = reloads
        total.reloads = lambda: (builds, swaps, refused)
        return total

    # ---- exposition --------------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("kefu_pushes", "Pushes answered, by message type and answer",
                                     labels=("type", "answer"))
        for (label, answer), count in sorted(self.pushes.items()):
            family.add_metric((label, answer), count)
        yield family
        family = CounterMetricFamily("kefu_pushes_refused", "Pushes refused (bad signature, body, size), by "
                                     "HTTP status", labels=("status",))
        for code, count in sorted(self.refused.items()):
            family.add_metric((str(code),), count)
        yield family
        yield CounterMetricFamily("kefu_push_retries", "Deliveries of a push already being or been answered "
                                  "(WeChat's retries): answered the same, rules not run again", value=self.retries)
        family = CounterMetricFamily("kefu_rule_hits", "Messages and events a rule answered", labels=("rule",))
        for rule, count in sorted(self.hits.items()):
            family.add_metric((rule,), count)
        yield family
        yield CounterMetricFamily("kefu_fallbacks", "User messages no rule answered", value=self.fallbacks)
        yield CounterMetricFamily("kefu_transfers", "Pushes handed to human agents", value=self.transfers)
        yield CounterMetricFamily("kefu_safe_answers", "Pushes answered safely (transfer, or success for "
                                  "events) because the store or kefu itself failed", value=self.safe_answers)
        yield CounterMetricFamily("kefu_render_errors", "Replies that failed to render", value=self.render_errors)
        family = CounterMetricFamily("kefu_regex_timeouts", "Regex matches that gave up at limits.regex_ms (the "
                                     "rule was treated as not matching), by rule", labels=("rule",))
        for rule, count in sorted(self.regex_timeouts.items()):
            family.add_metric((rule,), count)
        yield family
        family = CounterMetricFamily("kefu_sends", "Replies sent through the customer-service API, by result "
                                     "(sent, failed, retry, unsent) and WeChat errcode",
                                     labels=("result", "errcode"))
        for (result, errcode), count in sorted(self.sends.items()):
            family.add_metric((result, errcode), count)
        yield family
        yield self.push_latency.family("kefu_push_latency_seconds", "Time from a push's arrival to its answer")
        yield self.send_latency.family("kefu_send_latency_seconds", "Time of one send, retries of it included")
        builds, swaps, refused = self.reloads()
        family = CounterMetricFamily("kefu_reloads", "Rule reloads, by result", labels=("result",))
        family.add_metric(("loaded",), swaps)
        family.add_metric(("refused",), refused)
        family.add_metric(("unchanged",), max(builds - swaps - refused, 0))
        yield family
        version, count, loaded_at = self.ruleset()
        gauge = GaugeMetricFamily("kefu_rules", "Rules live now, by rule set version", labels=("version",))
        gauge.add_metric((version,), count)
        yield gauge
        yield GaugeMetricFamily("kefu_rules_loaded_at_seconds", "When the live rules were loaded (epoch)",
                                value=loaded_at)
        gauge = GaugeMetricFamily("kefu_outbox_replies", "Replies in the outbox, by status", labels=("status",))
        for status, value in sorted(self.outbox.items()):
            if status != "oldest_age":
                gauge.add_metric((status,), value)
        yield gauge
        yield GaugeMetricFamily("kefu_outbox_oldest_pending_age_seconds", "Age of the oldest reply not sent yet "
                                "(0 when none waits)", value=self.outbox.get("oldest_age", 0.0))
        yield GaugeMetricFamily("kefu_start_time_seconds", "When this process started (epoch)", value=self.started)

    def exposition(self) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)  # a collector: anything with collect()
        return generate_latest(registry)


class SharedMetrics:
    """Workers of one `kefu serve --workers N` share a folder (made by the parent): each writes its snapshot
    there every second, and /metrics — whichever worker answers it — adds the others' to its own, so a
    scrape through the shared port sees the whole server. A worker that exits takes its counts with it (its
    file is removed), which Prometheus reads as a counter reset, as after a restart."""

    def __init__(self, folder: Path, metrics: Metrics):
        self.folder = folder
        self.metrics = metrics
        self.own = folder / f"{os.getpid()}.json"

    def write(self, snapshot: dict) -> None:
        """Write this worker's `snapshot` (Metrics.snapshot, taken on the event loop) for the others."""
        tmp = self.own.with_suffix(".tmp")
        tmp.write_text(json.dumps(snapshot, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, self.own)

    def others(self) -> list[dict]:
        out = []
        for path in self.folder.glob("*.json"):
            if path != self.own:
                with contextlib.suppress(OSError, ValueError):
                    out.append(json.loads(path.read_text(encoding="utf-8")))
        return out

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.own.unlink()
