"""One command, one table: kefu's throughput as ratios to its peers — wechatpy and WeRoBot doing the same job —
and to a bare aiohttp app, all measured in the same run.

    python -m bench.suite                 # the full run (~10 min): every row, 5 s each, the 60 s runs
    python -m bench.suite --quick         # the smoke run (~1–2 min) to repeat while optimising
    python -m bench.suite --quick --only answer --stores memory --rules 10
    python -m bench.suite --json out.json --py-spy /tmp/prof

Every server — the references and each kefu row — is its own process, started fresh for its row, pinned to
core 0 and warmed up before it is measured. The load generator (wrk, else bench/load.py) and the fake WeChat
API (bench/fakeapi.py) run on core 1. Pushes are pre-signed, each with its own user and MsgId (so no push
is ever a retry the dedupe would answer from memory), in plaintext XML, plaintext JSON or safe mode.

The rows (one line each; see docs/performance.md):

- wechatpy+send / werobot (bench/peers.py): the peers kefu's targets are set against. wechatpy+send is aiohttp
  with wechatpy's check_signature/parse_message, a dict lookup, `success`, and the reply sent by aiohttp's
  ClientSession in a background task (no dedupe, store, retries or log): measured like a sustained row (if its
  sends fell more than 5% behind its pushes, its rate is the send rate) and next to every sustained row.
  werobot is WeRoBot on gunicorn (one sync worker) answering passively: measured first and last. Both need
  `pip install -e '.[bench]'`; without them their rows and targets are left out, and the run says so.

- bare / bare+send: bench/bare.py answering `success` to any POST; bare+send also makes one POST per push to
  the fake API, after the answer is flushed and before the connection's next push is read (see its
  docstring). Measured first, between the kefu rows and, in the full run, last. A kefu row's ratios use the
  references measured just before and just after it (its note says them: "bare near B/A"), because a shared
  VM's speed drifts by 20–35% over a run while two measures a few seconds apart agree to a few percent; the
  10,000-rule rows are compared with their 10-rule rows as ratios to their own references for the same reason.
  `--no-adjacent` measures them only first and last (the table's reference rows show every measure).
- answer: the answer rate — pushes answered per second while replies wait in the outbox. kefu has
  credentials and its api_base is a fake API that holds every send (outbox.concurrency 1): each reply is
  stored pending, its user's lane started, and nothing is ever sent during the row. That is the push path
  exactly as in production during a burst the sends cannot keep up with — which is what WeChat's 5-second
  window depends on. (`--answer-outbox unsent` instead runs kefu without credentials: replies are stored
  and marked "not sent" at once — a path production never takes, with an extra write and log line.)
- sustained: pushes per second with every reply also sent to the fake API (answering at once) on core 1.
  The fake API's send count is read right after the load stops: if the outbox fell behind by more than 5%
  of the pushes, the row reports the send rate (what was really done end to end) and says so.
- 10 / 1,000 / 10,000 keyword rules: the rule the bench text hits is the *last* one, and no-match text
  passes every rule before the fallback transfers — the worst case for a rule scan.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bot.protocol.crypto import WeChatCrypto
from bot.protocol.signature import sign

from .load import NONCE, TIMESTAMP, push_body, safe_push
from .outbox import redis_reachable

TOKEN = "bench-token"
APPID = "wxbench0000000000"
AES_KEY = "kefuBenchKey0123456789abcdefghijklmnopqrstu"  # 43 characters: an EncodingAESKey
ADMIN = "bench-admin"
REFS = ("bare", "minimal", "bare+send", "wechatpy+send", "werobot")  # the reference servers, in the order they run
PEERS = ("wechatpy+send", "werobot")  # bench/peers.py: what the targets are set against
HIT_REPLY = "您的快递已发出。"
# sustained xml hit 10-rule rows, by store: the least ratio to each peer (measured in the same run)
TARGETS = {"memory": {"wechatpy+send": 1.0, "werobot": 1.5}, "sqlite": {"wechatpy+send": 0.8},
           "redis": {"wechatpy+send": 0.7}}
TEXT = {"hit": "我的快递到哪了", "miss": "随便问问"}
EXPECT = {("hit", "plain"): "success", ("miss", "plain"): "transfer", ("hit", "safe"): "success",
          ("miss", "safe"): "encrypted"}
WARM_FIRST = 10**12  # warm-up pushes are numbered from here, measured ones from 0: never the same MsgId
REDIS_URL = "redis://127.0.0.1:6379/15"  # the machine's Redis; replaced by the suite's own when it can start one
STORES = ("memory", "sqlite", "redis")
FORMATS = ("xml", "json", "safe")
EXTRAS = ("matcher", "reload", "rss", "p99", "long", "workers")
SECTIONS = ("answer", "sustained", *EXTRAS)

SETTLE = 100.0  # seconds of the long run before RSS is judged: past the retry window (75–94 s)
LONG_USERS = 20_000  # users the long run's pushes come from

LUA = r"""-- written by bench/suite.py: pushes with distinct users and MsgIds; answers counted by kind
local threads = {}

function setup(thread)
   thread:set("tid", #threads)
   table.insert(threads, thread)
end

function init(args)
   mode, target, first, text, file, nthreads = args[1], args[2], tonumber(args[3]), args[4], args[5],
      tonumber(args[6])
   n, success, transfer, encrypted, passive, other, repeats = 0, 0, 0, 0, 0, 0, 0
   headers = {["Content-Type"] = mode == "json" and "application/json" or "text/xml"}
   if mode == "file" then
      targets, bodies = {}, {}
      for line in io.lines(file) do
         local t, b = line:match("^([^\t]*)\t(.*)$")
         targets[#targets + 1] = t
         bodies[#bodies + 1] = b
      end
   end
end

function request()
   local i = first + tid + n * nthreads
   n = n + 1
   if mode == "file" then
      if i >= #bodies then
         repeats = repeats + 1
         i = i % #bodies
      end
      return wrk.format("POST", targets[i + 1], headers, bodies[i + 1])
   end
   local user = string.format("oBench%022d", i)
   local msgid = string.format("1%017d", i)  -- 10**17 + i, as bench/load.py numbers them
   local body
   if mode == "json" then
      body = '{"ToUserName": "gh_bench", "FromUserName": "' .. user .. '", "CreateTime": 1714112445, '
         .. '"MsgType": "text", "Content": "' .. text .. '", "MsgId": ' .. msgid .. '}'
   else
      body = "<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><FromUserName><![CDATA[" .. user
         .. "]]></FromUserName><CreateTime>1714112445</CreateTime><MsgType><![CDATA[text]]></MsgType>"
         .. "<Content><![CDATA[" .. text .. "]]></Content><MsgId>" .. msgid .. "</MsgId></xml>"
   end
   return wrk.format("POST", target, headers, body)
end

function response(status, headers, body)
   if status ~= 200 then return end
   if body == "success" then success = success + 1
   elseif body:find("transfer_customer_service", 1, true) then transfer = transfer + 1
   elseif body:find("Encrypt", 1, true) then encrypted = encrypted + 1
   elseif body:find("<MsgType><![CDATA[text]]></MsgType>", 1, true) then passive = passive + 1
   else other = other + 1 end
end

function done(summary, latency, requests)
   local c = {success = 0, transfer = 0, encrypted = 0, passive = 0, other = 0, repeats = 0}
   for _, t in ipairs(threads) do
      for k, v in pairs(c) do c[k] = v + t:get(k) end
   end
   local e = summary.errors
   io.write(string.format('KEFU_BENCH {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, '
      .. '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, '
      .. '"success": %d, "transfer": %d, "encrypted": %d, "passive": %d, "other": %d, "repeats": %d}\n',
      summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(99), latency.max,
      c.success, c.transfer, c.encrypted, c.passive, c.other, c.repeats))
end
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- processes -------------------------------------------------------------------------------------------


class Cores:
    """Core 0 for the server under test; core 1 for the load and the fake API (and this process)."""

    def __init__(self) -> None:
        cores = sorted(os.sched_getaffinity(0))
        self.pinned = len(cores) >= 2
        self.server = {cores[0]} if self.pinned else set(cores)
        self.load = set(cores[1:]) if self.pinned else set(cores)
        self.all = set(cores)


class Procs:
    """The processes this run started; every one is stopped by its pid when the run ends."""

    def __init__(self) -> None:
        self.live: list[subprocess.Popen] = []

    def start(self, args: list[str], cores: set[int] | None, *, stdout=subprocess.DEVNULL,
              stderr=subprocess.DEVNULL) -> subprocess.Popen:
        preexec = (lambda: os.sched_setaffinity(0, cores)) if cores else None
        proc = subprocess.Popen(args, stdout=stdout, stderr=stderr, preexec_fn=preexec,  # noqa: PLW1509
                                cwd=Path(__file__).resolve().parent.parent)
        self.live.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, grace: float = 3.0) -> None:
        if proc.poll() is None:
            if grace > 0:
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(grace)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc in self.live:
            self.live.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.live):
            self.stop(proc, 1.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


HZ = os.sysconf("SC_CLK_TCK")


def core_times() -> dict[int, tuple[int, int]]:
    """Per core: (all jiffies, idle jiffies) since boot."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3].isdigit():
            name, *values = line.split()
            v = [int(x) for x in values]
            out[int(name[3:])] = (sum(v[:8]), v[3] + v[4])
    return out


def busy(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], cores: set[int]) -> float:
    """How busy the cores were between two core_times(), 0..1 (the mean over the cores)."""
    total = sum(after[c][0] - before[c][0] for c in cores)
    idle = sum(after[c][1] - before[c][1] for c in cores)
    return 1 - idle / total if total else 0.0


def process_jiffies(pid: int) -> int:
    """CPU time of a process and its children (gunicorn's worker under its master), all threads."""
    total = 0
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = int(fields[11]) + int(fields[12])  # utime + stime
        for children in Path(f"/proc/{pid}/task").glob("*/children"):
            total += sum(process_jiffies(int(child)) for child in children.read_text().split())
    return total


class CpuWatch:
    """While a row is measured: the server's share of its core, the rest of that core's use (other processes:
    the measurement is not clean when that is more than a few percent), and how busy the load's core was."""

    def __init__(self, pid: int, cores: Cores):
        self.pid, self.cores = pid, cores
        self.t0, self.c0, self.p0 = time.monotonic(), core_times(), process_jiffies(pid)

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        after = core_times()
        server = (process_jiffies(self.pid) - self.p0) / HZ / wall / len(self.cores.server)
        core = busy(self.c0, after, self.cores.server)
        return {"server": server, "others": max(0.0, core - server), "load_core": busy(self.c0, after, self.cores.load)}


class ServerGone(RuntimeError):
    """The server under test exited during its row (something outside the run stopped it)."""


class Contended(RuntimeError):
    """Other processes used the server's core during the row: its figures are not kefu's alone."""


class Server:
    """A server process under test on the server core, ready once /readyz answers 200."""

    def __init__(self, procs: Procs, args: list[str], port: int, cores: set[int], logfile: Path,
                 grace: float = 3.0):
        self.procs, self.port, self.grace, self.logfile = procs, port, grace, logfile
        self._log = logfile.open("wb")
        self.proc = procs.start(args, cores, stderr=self._log, stdout=self._log)
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                self._log.close()
                error = ServerGone if self.proc.returncode in (0, -signal.SIGTERM, -signal.SIGKILL) else RuntimeError
                raise error(f"server exited with {self.proc.returncode}: "
                            + logfile.read_text(errors="replace")[-800:])
            with contextlib.suppress(OSError):
                status, _ = http_get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                if status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready after 90 s")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss(self) -> float:
        return rss_mb(self.pid)

    def stop(self) -> None:
        self.procs.stop(self.proc, self.grace)
        self._log.close()

    def problems(self) -> int:
        """Log lines at WARNING or above (a clean row has none, bar the held sends of an answer row)."""
        text = self.logfile.read_text(errors="replace")
        return sum(1 for line in text.splitlines() if " WARNING " in line or " ERROR " in line)


class FakeAPI:
    def __init__(self, procs: Procs, cores: set[int], latency: float):
        self.proc = procs.start([sys.executable, "-m", "bench.fakeapi", "--latency", str(latency)], cores,
                                stdout=subprocess.PIPE)
        line = self.proc.stdout.readline().decode()
        self.base = f"http://127.0.0.1:{int(line.split()[1])}"

    def sends(self) -> int:
        return json.loads(http_get(self.base + "/stats")[1])["sends"]

    def settle(self, timeout: float = 20.0, quiet: float = 0.5) -> tuple[int, float]:
        """Wait until the send count stops moving (no change for `quiet` seconds); the count and the wait."""
        started = time.monotonic()
        last, since = self.sends(), time.monotonic()
        while time.monotonic() - started < timeout:
            time.sleep(0.1)
            now = self.sends()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
        return last, max(0.0, since - started)


# ---- load ------------------------------------------------------------------------------------------------


@dataclass
class Load:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors, timeouts and non-2xx answers
    answers: dict[str, int]
    repeats: int  # pushes sent twice because a pre-made table ran out (their MsgIds repeat)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass
class Push:
    """What one row sends: format, text, and where."""

    fmt: str  # xml, json or safe
    match: str  # hit or miss
    path: str = "/wechat"
    answer: str | None = None  # the answer expected, when not kefu's (werobot answers passively)

    @property
    def text(self) -> str:
        return TEXT[self.match]

    @property
    def expect(self) -> str:
        return self.answer or EXPECT[(self.match, "safe" if self.fmt == "safe" else "plain")]

    def target(self) -> str:
        return f"{self.path}?signature={sign(TOKEN, TIMESTAMP, NONCE)}&timestamp={TIMESTAMP}&nonce={NONCE}"


class LoadGen:
    """wrk on the load core (its Lua script makes every push); bench/load.py when wrk is not installed."""

    def __init__(self, procs: Procs, cores: Cores, work: Path, args: argparse.Namespace):
        self.procs, self.cores, self.work = procs, cores, work
        self.connections, self.warmup, self.seconds = args.connections, args.warmup, args.seconds
        self.wrk = None if args.no_wrk else shutil.which("wrk")
        self.lua = work / "pushes.lua"
        self.lua.write_text(LUA, encoding="utf-8")
        self.tables: dict[str, tuple[Path, int]] = {}  # safe mode: match → (file, first measured line)
        self.expected_rate = 20_000.0  # pushes/s no row exceeds; the bare reference's, once measured

    @property
    def name(self) -> str:
        return f"wrk -t1 -c{self.connections}" if self.wrk else f"bench/load.py -c{self.connections}"

    def _safe_table(self, match: str) -> tuple[Path, int]:
        """Safe-mode pushes carry a msg_signature over their Encrypt, so wrk cannot make them: they are made
        here, once per text, enough for a warm-up and a measured run at the bare reference's rate."""
        if match not in self.tables:
            warm = int(self.expected_rate * max(self.warmup, 1)) + 2000
            measured = int(self.expected_rate * self.seconds) + 2000
            crypto = WeChatCrypto(AES_KEY, APPID)
            path = self.work / f"safe-{match}.tsv"
            started = time.perf_counter()
            with path.open("w", encoding="utf-8") as out:
                for first, count in ((WARM_FIRST, warm), (0, measured)):
                    for i in range(first, first + count):
                        query, body = safe_push(TOKEN, crypto, push_body("xml", i, TEXT[match], 0))
                        target = "/wechat?" + "&".join(f"{k}={v}" for k, v in query.items())
                        out.write(f"{target}\t{body.decode()}\n")
            log(f"  (made {warm + measured:,} safe-mode pushes in {time.perf_counter() - started:.1f} s)")
            self.tables[match] = (path, warm)
        return self.tables[match]

    def run(self, port: int, push: Push, seconds: float, warm: bool = False) -> Load:
        url = f"http://127.0.0.1:{port}{push.path}"
        if not self.wrk:
            return self._python(url, push, seconds, warm)
        if push.fmt == "safe":
            table, measured_from = self._safe_table(push.match)
            args = ["file", "-", str(0 if warm else measured_from), push.text, str(table), "1"]
        else:
            args = [push.fmt, push.target(), str(WARM_FIRST if warm else 0), push.text, "-", "1"]
        cmd = [self.wrk, "-t1", f"-c{self.connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
               "-s", str(self.lua), url, "--", *args]
        out, err = self._communicate(cmd)
        line = next((ln for ln in out.splitlines() if ln.startswith("KEFU_BENCH ")), None)
        if line is None:
            raise RuntimeError(f"wrk said: {out[-400:]} {err[-400:]}")
        r = json.loads(line.split(" ", 1)[1])
        errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
        return Load(r["requests"], r["duration_us"] / 1e6, r["p50_us"] / 1000, r["p99_us"] / 1000, errors,
                    {k: r[k] for k in ("success", "transfer", "encrypted", "passive", "other")}, r["repeats"])

    def _communicate(self, cmd: list[str]) -> tuple[str, str]:
        proc = self.procs.start(cmd, self.cores.load, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate()
        self.procs.live.remove(proc)
        return out.decode(errors="replace"), err.decode(errors="replace")

    def _python_cmd(self, url: str, push: Push, seconds: float, first: int, rps: float | None,
                    users: int = 0) -> list[str]:
        cmd = [sys.executable, "-m", "bench.load", url, "--token", TOKEN, "--seconds", str(seconds),
               "--connections", str(self.connections), "--body", "json" if push.fmt == "json" else "xml",
               "--text", push.text, "--first", str(first), "--users", str(users),
               "--pool", str(int((rps or self.expected_rate) * seconds * 1.1) + 1000)]
        if push.fmt == "safe":
            cmd += ["--aes-key", AES_KEY, "--appid", APPID]
        return cmd + (["--rps", f"{rps:.0f}"] if rps else [])

    def _python(self, url: str, push: Push, seconds: float, warm: bool) -> Load:
        out, err = self._communicate(self._python_cmd(url, push, seconds, WARM_FIRST if warm else 0, None))
        if not out:
            raise RuntimeError(f"bench/load.py said: {err[-400:]}")
        return python_load(json.loads(out))

    def paced(self, port: int, push: Push, seconds: float, rps: float, users: int = 0) -> subprocess.Popen:
        """A paced run (bench/load.py --rps: wrk cannot pace); read it with python_load(json.loads(out))."""
        url = f"http://127.0.0.1:{port}{push.path}"
        return self.procs.start(self._python_cmd(url, push, seconds, 0, rps, users), self.cores.load,
                                stdout=subprocess.PIPE)


def python_load(result: dict) -> Load:
    samples = result["samples"]
    latencies = sorted(lat for _, lat, status in samples if status == 200)
    errors = sum(1 for _, _, status in samples if status != 200)
    return Load(len(samples) - errors, result["elapsed"], pct(latencies, 50) * 1000, pct(latencies, 99) * 1000,
                errors, result.get("answers", {}), result.get("repeats", 0))


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(len(values) * p / 100))]


# ---- kefu's configuration --------------------------------------------------------------------------------


def installed_peers() -> list[str]:
    """The peers whose libraries are installed (`pip install -e '.[bench]'`)."""
    import importlib.util

    need = {"wechatpy+send": ("wechatpy",), "werobot": ("werobot", "gunicorn")}
    return [peer for peer in PEERS if all(importlib.util.find_spec(m) is not None for m in need[peer])]


def write_rules(rules_dir: Path, n: int) -> None:
    """n keyword rules in files of 100; the last one is the rule the hit text (快递) fires; no-match transfers."""
    rules_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"  - name: kw-{i}\n    when: {{keywords: [商品{i:05d}号, 货号{i:05d}]}}\n"
             f"    reply: 第{i}条规则的固定回复。\n" for i in range(n - 1)]
    lines.append("  - name: hit\n    when: {keywords: [快递]}\n"
                 "    reply: 您的快递已发出，单号 {{ message.msg_id }}。\n")
    for f, start in enumerate(range(0, n, 100)):
        head = "fallback:\n  transfer: true\n" if f == 0 else ""
        (rules_dir / f"{f:05d}.yaml").write_text(head + "rules:\n" + "".join(lines[start:start + 100]),
                                                 encoding="utf-8")


def store_url(store: str, root: Path) -> str:
    return {"memory": "memory://", "sqlite": f"sqlite:///{root}/kefu.db", "redis": REDIS_URL}[store]


def write_kefu(root: Path, rules: int, store: str, *, api_base: str, concurrency: int, safe: bool,
               credentials: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_rules(root / "rules", rules)
    wechat = [f"  appid: {APPID}", f"  token: {TOKEN}", f"  api_base: {api_base}"]
    if credentials:
        wechat.append("  secret: bench-secret")
    if safe:
        wechat.append(f"  encoding_aes_key: {AES_KEY}")
    config = root / "bot.yaml"
    config.write_text("wechat:\n" + "\n".join(wechat) + f"\nstore: '{store_url(store, root)}'\n"
                      "security:\n  max_timestamp_age: 0\n"
                      f"admin:\n  token: {ADMIN}\noutbox:\n  concurrency: {concurrency}\n", encoding="utf-8")
    return config


def own_redis(procs: Procs, cores: set[int], work: Path) -> str | None:
    """A Redis of this run's own, pinned to the load's core (as if on another host), so that the Redis rows do
    not depend on where the system's Redis happens to run. None when redis-server is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = free_port()
    procs.start([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(work)], cores)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    return None


def flush_redis() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.flushdb()
    finally:
        client.close()


# ---- rows ------------------------------------------------------------------------------------------------


@dataclass
class Row:
    kind: str  # bare, bare+send, answer, sustained
    fmt: str = "xml"
    match: str = "hit"
    rules: int = 0
    store: str = "-"
    rate: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    requests: int = 0
    errors: int = 0
    wrong: int = 0  # answers of another kind than expected (hit: success; no-match: transfer)
    x_bare: float | None = None
    x_peer: float | None = None  # × wechatpy+send
    x_werobot: float | None = None
    check: str = ""
    result: str = ""
    note: str = ""
    push_rate: float | None = None  # sustained: pushes answered per second…
    send_rate: float | None = None  # …and sends made per second, during the measured seconds
    rss_warm_mb: float | None = None
    rss_end_mb: float | None = None
    measures: list[float] = field(default_factory=list)  # references: each measurement's rate
    # kefu rows, with adjacent references (the default): the reference rates measured just before and just after
    # this row, by reference kind; its ratios use their mean instead of the run's first and last
    near: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # see CpuWatch: server, others, load_core
    answers: dict[str, int] = field(default_factory=dict)  # answer bodies by kind: success, transfer, …

    @property
    def key(self) -> tuple:
        return (self.kind, self.fmt, self.match, self.rules, self.store)

    def label(self) -> str:
        return f"{self.kind} {self.fmt} {self.match} {self.rules} {self.store}"


def plan(args: argparse.Namespace) -> list[Row]:
    sel = args.only
    rows: list[Row] = []
    if args.matrix:
        for kind in ("answer", "sustained"):
            for fmt in FORMATS:
                for match in ("hit",) if kind == "sustained" else ("hit", "miss"):
                    for rules in (10, 1000, 10000):
                        for store in STORES:
                            rows.append(Row(kind, fmt, match, rules, store))
    elif args.quick:
        rows += [Row("answer", f, m, 10, "memory") for f, m in (("xml", "hit"), ("xml", "miss"), ("json", "hit"),
                                                                  ("safe", "hit"))]
        rows += [Row("answer", "xml", "hit", 10000, "memory"), Row("answer", "xml", "hit", 10, "sqlite"),
                 Row("answer", "xml", "hit", 10, "redis")]
        rows += [Row("sustained", "xml", "hit", 10, "memory"), Row("sustained", "xml", "hit", 10, "sqlite")]
    else:
        rows += [Row("answer", f, m, 10, "memory") for m in ("hit", "miss") for f in ("xml", "json", "safe")]
        rows += [Row("answer", "xml", m, r, "memory") for m in ("hit", "miss") for r in (1000, 10000)]
        rows += [Row("answer", "xml", m, r, s) for s in ("sqlite", "redis") for m, r in
                 (("hit", 10), ("miss", 10), ("hit", 10000))]
        rows += [Row("sustained", f, "hit", 10, "memory") for f in FORMATS]
        rows += [Row("sustained", "xml", "hit", 10000, "memory")]
        rows += [Row("sustained", "xml", "hit", 10, s) for s in ("sqlite", "redis")]
    rows = [r for r in rows if r.kind in sel and r.fmt in args.formats and r.match in args.match
            and r.rules in args.rules and r.store in args.stores]
    # the rows the extra checks are measured against, when those are wanted
    needed = []
    if "p99" in sel:
        needed.append(Row("answer", "xml", "hit", 10, "memory"))
    if "long" in sel:
        needed += [Row("sustained", "xml", "hit", 10, s) for s in ("memory", "sqlite") if s in args.stores]
    if "rss" in sel:
        needed.append(Row("answer", "xml", "hit", 10000, "memory"))
    keys = {r.key for r in rows}
    rows += [r for r in needed if r.key not in keys]
    return rows


class Suite:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.cores = Cores()
        self.procs = Procs()
        self.work = Path(tempfile.mkdtemp(prefix="kefu-suite-"))
        self.load = LoadGen(self.procs, self.cores, self.work, args)
        self.loop = args.loop
        self.workers = False
        self.redis = "-"
        self.hold: FakeAPI | None = None
        self.fast: FakeAPI | None = None
        self.refs: dict[str, Row] = {}
        self.rows: list[Row] = []
        self.checks: list[dict] = []
        self.counter = 0
        self.last_try = True  # see retrying()
        self.peers = installed_peers()

    # ---- infrastructure ----

    def start(self) -> None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, self.cores.load)  # this process stays off the server's core
        if "redis" in self.args.stores:
            global REDIS_URL
            url = own_redis(self.procs, self.cores.load, self.work)
            if url is not None:
                REDIS_URL = url
            self.redis = "own, pinned to the load's core" if url else "the machine's (not pinned)"
        self.hold = FakeAPI(self.procs, self.cores.load, 86400)  # answer rows: every send held
        self.fast = FakeAPI(self.procs, self.cores.load, 0)  # sustained rows: every send answered at once
        help_text = subprocess.run([sys.executable, "-m", "bot", "serve", "--help"], capture_output=True,
                                   text=True, cwd=Path(__file__).resolve().parent.parent).stdout
        self.workers = "--workers" in help_text
        if self.loop == "auto":
            self.loop = self._kefu_loop()

    def close(self) -> None:
        self.procs.stop_all()
        if "redis" in self.args.stores and REDIS_URL.startswith("redis://127.0.0.1:6379/"):
            with contextlib.suppress(Exception):
                flush_redis()
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)

    def _kefu_loop(self) -> str:
        """Which event loop `python -m bot serve` runs: uvloop's if its module is mapped into the process."""
        server = self.kefu(Row("answer", rules=10, store="memory"), "probe", grace=0)
        try:
            maps = Path(f"/proc/{server.pid}/maps").read_text()
        finally:
            server.stop()
        return "uvloop" if "uvloop" in maps else "asyncio"

    def kefu(self, row: Row, name: str, *, sustained: bool = False, grace: float = 0.0,
             workers: int | None = None, cores: set[int] | None = None) -> Server:
        root = self.work / name
        if row.store == "redis":
            flush_redis()
        api = self.fast if sustained else self.hold
        concurrency = self.args.outbox_concurrency if sustained else 1
        config = write_kefu(root, row.rules, row.store, api_base=api.base, concurrency=concurrency,
                            safe=row.fmt == "safe", credentials=sustained or self.args.answer_outbox == "held")
        self.quiet()
        port = free_port()
        cmd = [sys.executable, "-m", "bot", "serve", "-c", str(config), "--port", str(port), "--no-watch",
               "--log-level", self.args.log_level]
        if workers is not None:
            cmd += ["--workers", str(workers)]
        server = Server(self.procs, cmd, port, cores or self.cores.server, root / "kefu.log", grace)
        status, body = http_get(f"http://127.0.0.1:{port}/readyz")
        count = json.loads(body)["rules"]["count"]
        if count != row.rules:
            server.stop()
            raise RuntimeError(f"kefu loaded {count} rules, not {row.rules}")
        return server

    def measure(self, server: Server, row: Row, push: Push, name: str, warm: bool = True,
                shared_core: bool = False) -> Load:
        """Warm up (unless done already), then the measured load, with py-spy recording alongside if asked.
        `shared_core`: the row runs its servers beside the load on purpose (--workers): no re-measuring."""
        a = self.args
        if warm:
            self.warm(server, push)
        row.rss_warm_mb = server.rss()
        spy = None
        if a.py_spy:
            ext = {"flamegraph": "svg", "raw": "txt", "speedscope": "json"}[a.py_spy_format]
            out = Path(a.py_spy) / f"{name}.{ext}"
            out.parent.mkdir(parents=True, exist_ok=True)
            spy = self.procs.start(["py-spy", "record", "--pid", str(server.pid), "-d", str(round(a.seconds)),
                                    "-r", str(a.py_spy_rate), "-f", a.py_spy_format, "-o", str(out)], self.cores.load)
            row.note = (row.note + f" profiled (py-spy pauses the server {a.py_spy_rate}×/s)").strip()
        watch = CpuWatch(server.pid, self.cores)
        try:
            result = self.run_load(server, push, a.seconds)
            row.cpu = watch.stop()
        finally:
            if spy is not None:
                if server.proc.poll() is None:
                    spy.wait()  # py-spy writes its file once its seconds are over
                self.procs.stop(spy)
        if server.proc.poll() is not None:
            raise ServerGone(f"the server exited with {server.proc.returncode} during the row")
        if row.cpu["others"] > self.args.max_others and not shared_core:
            if not self.last_try:
                raise Contended(f"other processes used {row.cpu['others']:.0%} of the server's core")
            row.note = (row.note + f" core shared: {row.cpu['others']:.0%} other processes").strip()
        if row.cpu["load_core"] > 0.95 and row.cpu["server"] < 0.9:
            row.note = (row.note + f" load core full ({row.cpu['load_core']:.0%}): the load may be the limit").strip()
        row.rss_end_mb = server.rss()
        row.rate, row.p50_ms, row.p99_ms = result.rate, result.p50_ms, result.p99_ms
        row.requests, row.errors = result.requests, result.errors
        if result.answers:
            row.answers = result.answers
            row.wrong = sum(n for kind, n in result.answers.items() if kind != push.expect)
        if result.repeats:
            row.errors += result.repeats
            row.note = (row.note + f" {result.repeats} pushes repeated (table too small)").strip()
        return result

    # ---- rows ----

    def run_load(self, server: Server, push: Push, seconds: float, warm: bool = False) -> Load:
        try:
            return self.load.run(server.port, push, seconds, warm)
        except RuntimeError:
            if server.proc.poll() is not None:
                raise ServerGone(f"the server exited with {server.proc.returncode} during the row") from None
            raise

    def warm(self, server: Server, push: Push) -> None:
        self.run_load(server, push, self.args.warmup, warm=True)

    def reference_cmd(self, kind: str, port: int) -> list[str]:
        hit = f"{TEXT['hit']}={HIT_REPLY}"
        if kind == "wechatpy+send":
            return [sys.executable, "-m", "bench.peers", "wechatpy", "--port", str(port), "--loop", self.loop,
                    "--token", TOKEN, "--send", self.fast.base, "--hit", hit]
        if kind == "werobot":
            return [sys.executable, "-m", "gunicorn", "--workers", "1", "--worker-class", "sync", "--bind",
                    f"127.0.0.1:{port}", "--log-level", "warning", f"bench.peers:werobot_app({TOKEN!r}, {hit!r})"]
        cmd = [sys.executable, "-m", "bench.bare", "--port", str(port), "--loop", self.loop]
        if kind == "bare+send":
            cmd += ["--send", self.fast.base]
        elif kind == "minimal":
            cmd += ["--minimal", TOKEN, "--hit", hit]
        return cmd

    def reference(self, kind: str) -> Row:
        name = f"{self.next()}-{kind}"
        self.quiet()
        port = free_port()
        server = Server(self.procs, self.reference_cmd(kind, port), port, self.cores.server,
                        self.work / f"{name}.log")
        row = self.refs.get(kind) or Row(kind, rules=0)
        try:
            probe = Row(kind)
            push = Push("xml", "hit", answer="passive" if kind == "werobot" else None)
            if kind == "wechatpy+send":  # a sustained row: its replies sent, counted from after the warm-up
                self.warm(server, push)
                self.fast.settle()
            before = self.fast.sends()
            result = self.measure(server, probe, push, name, warm=kind != "wechatpy+send")
            during = self.fast.sends() - before
            if kind == "wechatpy+send" and result.requests - during > 0.05 * result.requests:
                probe.rate = during / result.seconds  # its background sends fell behind: the send rate
                probe.note = f"sends fell behind: {result.rate:,.0f} pushes/s, {probe.rate:,.0f} sends/s"
            row.measures.append(probe.rate)
            row.rate = statistics.fmean(row.measures)
            row.p50_ms, row.p99_ms, row.cpu, row.answers = probe.p50_ms, probe.p99_ms, probe.cpu, probe.answers
            if probe.note and probe.note not in row.note:  # once, not once per measure
                row.note = (row.note + " " + probe.note).strip()
            row.requests += probe.requests
            row.errors += probe.errors
            row.wrong += probe.wrong
            if kind in ("bare+send", "wechatpy+send"):
                sent, _ = self.fast.settle()
                if sent - before < probe.requests:
                    row.note = f"only {sent - before} sends for {probe.requests} pushes"
        finally:
            server.stop()
        self.refs[kind] = row
        if kind == "bare" and len(row.measures) == 1:
            self.load.expected_rate = row.rate * 1.1  # no kefu row answers faster than the bare app
        return row

    def near_kinds(self, row: Row) -> list[str]:
        """The references a row's ratios are taken against, measured next to it."""
        peer = "wechatpy+send" in self.peers
        return ["bare", "wechatpy+send"] if row.kind == "sustained" and peer else ["bare"]

    def near_reference(self, kind: str, waiting: dict[str, list[Row]]) -> None:
        """Measure a reference between two kefu rows: the "after" of the rows waiting for it, and the "before"
        of the next row."""
        r = self.retrying(lambda: self.reference(kind))
        log(f"[ref] {kind:<10} {r.measures[-1]:>9,.0f}/s")
        for row in waiting.get(kind, []):
            row.near[kind].append(r.measures[-1])
        waiting[kind] = []

    def answer(self, row: Row) -> None:
        row.note = ""
        name = f"{self.next()}-{row.label().replace(' ', '-')}"
        server = self.kefu(row, name, grace=0)  # nothing to keep: the held replies may die with it
        try:
            self.measure(server, row, Push(row.fmt, row.match), name)
            problems = server.problems()
        finally:
            server.stop()
        if problems and self.args.answer_outbox == "unsent":
            row.note = (row.note + f" {problems} log warnings").strip()

    def sustained(self, row: Row) -> None:
        row.note = ""
        name = f"{self.next()}-{row.label().replace(' ', '-')}"
        server = self.kefu(row, name, sustained=True, grace=3.0)
        try:
            push = Push(row.fmt, row.match)
            self.warm(server, push)
            self.fast.settle()  # the warm-up's replies are all sent before the measured seconds
            before = self.fast.sends()
            result = self.measure(server, row, push, name, warm=False)
            during = self.fast.sends() - before
            total, drain = self.fast.settle()
            total -= before
            problems = server.problems()
        finally:
            server.stop()
        row.push_rate = result.rate
        row.send_rate = during / result.seconds if result.seconds else 0
        behind = result.requests - during
        if behind > 0.05 * result.requests:  # the outbox grew: the pushes/s were not sustained
            row.rate = min(result.rate, row.send_rate)
            row.note = f"outbox grew: {result.rate:,.0f} pushes/s, {row.send_rate:,.0f} sends/s"
        else:
            row.note = f"outbox kept up ({max(behind, 0)} behind at the end)"
        if total < result.requests:
            row.errors += result.requests - total
            row.note += f"; {result.requests - total} replies never sent"
        elif drain > 0.5:
            row.note += f"; drained in {drain:.1f} s"
        if problems:
            row.note += f"; {problems} log warnings"

    def quiet(self) -> None:
        """Wait (up to --quiet-wait seconds) until the machine is idle: other processes on the server's core
        would be measured as kefu's slowness, on the load's core as a slower load."""
        started = time.monotonic()
        while True:
            before = core_times()
            time.sleep(0.5)
            if busy(before, core_times(), self.cores.all) < 0.10:
                break
            if time.monotonic() - started > self.args.quiet_wait:
                log("  (the cores are still busy: measuring anyway)")
                break
        waited = time.monotonic() - started - 0.5
        if waited > 1:
            log(f"  (waited {waited:.0f} s for the cores to be quiet)")

    def retrying(self, fn, tries: int = 5):
        """A row again when other processes shared its core, or its server was stopped from outside (another
        benchmark's `pkill`); the last try's figures are kept, with a note."""
        try:
            for attempt in range(1, tries + 1):
                self.last_try = attempt == tries
                try:
                    return fn()
                except (ServerGone, Contended) as exc:
                    if attempt == tries:
                        raise
                    log(f"  ({exc}; again)")
        finally:
            self.last_try = True

    def next(self) -> int:
        self.counter += 1
        return self.counter

    # ---- the extra rows ----

    def find(self, kind: str, fmt: str, match: str, rules: int, store: str) -> Row | None:
        return next((r for r in self.rows if r.key == (kind, fmt, match, rules, store) and r.rate), None)

    def matcher(self) -> None:
        counts = [10, 1000, 10000]
        with self.on_server_core():
            try:
                from .match import measure  # bench/match.py, when it exists
                rows, source = measure(counts), "bench.match.measure"
            except ImportError:
                rows, source = self._find_rule_times(counts), "find_rule over a compiled RuleSet"
        if source.startswith("find_rule"):
            value = "; ".join(f"{r['rules']:,} rules: hit {r['hit_us']:,.1f} µs, no match {r['miss_us']:,.1f} µs"
                              for r in rows)
        else:
            value = "; ".join(", ".join(f"{k} {_fmt_value(v)}" for k, v in r.items()) for r in rows)
        self.checks.append({"check": f"matcher time per message ({source})", "value": value, "target": "",
                            "result": "", "data": rows})

    def _find_rule_times(self, counts: list[int]) -> list[dict]:
        from bot.config import load_settings
        from bot.engine.decide import find_rule
        from bot.protocol.wire import message_from_fields, parse_fields
        from bot.sources import load_ruleset

        out = []
        for n in counts:
            root = self.work / f"matcher-{n}"
            settings = load_settings(write_kefu(root, n, "memory", api_base="http://127.0.0.1:9", concurrency=1,
                                                safe=False))
            ruleset = load_ruleset(settings)
            now = dt.datetime.now(settings.timezone)
            row: dict = {"rules": n}
            for match in ("hit", "miss"):
                message = message_from_fields(parse_fields(push_body("xml", 0, TEXT[match], 0), "xml"))
                rule, _, _ = find_rule(ruleset, message, now)
                assert (rule is not None and rule.name == "hit") if match == "hit" else rule is None
                loops, elapsed = 1, 0.0
                while elapsed < 0.2:
                    loops *= 2
                    started = time.perf_counter()
                    for _ in range(loops):
                        find_rule(ruleset, message, now)
                    elapsed = time.perf_counter() - started
                row[f"{match}_us"] = elapsed / loops * 1e6
            out.append(row)
        return out

    def reload(self) -> None:
        from .reload import reload_times

        with self.on_server_core():
            r = reload_times([10000])[0]
        worst = max(r["one_file_s"], r["all_files_s"])
        self.checks.append({
            "check": "reload, 10,000 rules (bench/reload.py corpus)",
            "value": f"cold load {r['cold_s']:.2f} s; median of {len(r['all_files_runs'])}: 1 file changed "
                     f"{r['one_file_s']:.2f} s, all files changed {r['all_files_s']:.2f} s "
                     f"({' '.join(f'{t:.2f}' for t in r['all_files_runs'])})",
            "target": "< 1 s", "result": "PASS" if worst < 1 else "FAIL", "data": r})

    def rss(self) -> None:
        row = self.find("answer", "xml", "hit", 10000, "memory")
        if row is None or row.rss_warm_mb is None:
            self.checks.append({"check": "RSS, 10,000 rules", "value": "n/a (row not run)", "target": "< 150 MB",
                                "result": ""})
            return
        self.checks.append({
            "check": "RSS of kefu, 10,000 rules (answer xml hit memory)",
            "value": f"{row.rss_warm_mb:.0f} MB after warm-up, {row.rss_end_mb:.0f} MB after the "
                     f"{self.args.seconds:.0f} s row ({row.requests:,} replies held)",
            "target": "< 150 MB", "result": "PASS" if row.rss_warm_mb < 150 else "FAIL",
            "data": {"warm_mb": row.rss_warm_mb, "end_mb": row.rss_end_mb}})

    def p99_half_peak(self) -> None:
        peak = self.find("answer", "xml", "hit", 10, "memory")
        if peak is None:
            self.checks.append({"check": "p99 at half the peak answer rate", "value": "n/a (no peak)",
                                "target": "< 20 ms", "result": ""})
            return
        row = Row("answer", "xml", "hit", 10, "memory")
        name = f"{self.next()}-half-peak"
        server = self.kefu(row, name, grace=0)
        push = Push("xml", "hit")
        try:
            self.warm(server, push)
            watch = CpuWatch(server.pid, self.cores)
            proc = self.load.paced(server.port, push, self.args.seconds, peak.rate / 2)
            out, _ = proc.communicate()
            self.procs.live.remove(proc)
            cpu = watch.stop()
            gone = server.proc.poll()
        finally:
            server.stop()
        if gone is not None:
            raise ServerGone(f"the server exited with {gone} during the row")
        if cpu["others"] > self.args.max_others and not self.last_try:
            raise Contended(f"other processes used {cpu['others']:.0%} of the server's core")
        r = python_load(json.loads(out))
        ok = r.p99_ms < 20 and r.errors == 0
        self.checks.append({
            "check": "p99 at half the peak answer rate (xml hit memory, bench/load.py --rps)",
            "value": f"{r.rate:,.0f}/s asked {peak.rate / 2:,.0f}: p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, "
                     f"{r.errors} errors, server cpu {cpu['server']:.0%}"
                     + (f", core shared: {cpu['others']:.0%} other processes" if cpu["others"] > 0.05 else ""),
            "target": "p99 < 20 ms", "result": "PASS" if ok else "FAIL",
            "data": asdict(r) | {"asked": peak.rate / 2, "cpu": cpu}})

    def long_run(self, store: str) -> None:
        base = self.find("sustained", "xml", "hit", 10, store) or self.find("sustained", "xml", "hit", 10, "memory")
        label = f"{self.args.long_seconds:.0f} s at the sustained rate, {store}"
        if base is None:
            self.checks.append({"check": label, "value": "n/a (no sustained rate)", "target": "", "result": ""})
            return
        row = Row("sustained", "xml", "hit", 10, store)
        name = f"{self.next()}-long-{store}"
        server = self.kefu(row, name, sustained=True, grace=3.0)
        push = Push("xml", "hit")
        samples: list[float] = []
        try:
            self.warm(server, push)
            self.fast.settle()
            before = self.fast.sends()
            watch = CpuWatch(server.pid, self.cores)
            # First SETTLE seconds at the same rate, so that what kefu keeps for a fixed time (WeChat's retry
            # window, the store's finished items) reaches its steady size; then the measured seconds. The
            # pushes come from a population of LONG_USERS users, as a real bot's do: per-user records (send
            # allowances, 48 h) grow with the number of users, not with time.
            proc = self.load.paced(server.port, push, SETTLE + self.args.long_seconds, base.rate, LONG_USERS)
            started = time.monotonic()
            samples.append(server.rss())
            while True:  # RSS every 5 s, while reading the load's output (a full pipe would stop it)
                try:
                    out, _ = proc.communicate(timeout=started + 5 * len(samples) - time.monotonic())
                    break
                except subprocess.TimeoutExpired:
                    samples.append(server.rss())
            self.procs.live.remove(proc)
            samples.append(server.rss())
            cpu = watch.stop()
            during = self.fast.sends() - before
            total, _ = self.fast.settle()
            total -= before
        finally:
            server.stop()
        r = python_load(json.loads(out))
        # flat: over the measured seconds, against the first sample after SETTLE
        base_i = min(int(SETTLE // 5), len(samples) - 1)
        growth = max(samples[base_i:]) / samples[base_i] - 1 if samples[base_i] else 0
        errors = r.errors + max(0, r.requests - total)
        ok = errors == 0 and growth <= 0.10 and r.requests - during <= 0.05 * r.requests
        self.checks.append({
            "check": f"{label} (bench/load.py --rps)",
            "value": f"{r.rate:,.0f}/s asked {base.rate:,.0f}, p99 {r.p99_ms:.1f} ms, {errors} errors, "
                     f"{r.requests - during} replies behind at the end; RSS {samples[0]:.0f} MB after warm-up, "
                     f"{samples[base_i]:.0f} at {5 * base_i} s, {samples[-1]:.0f} at the end "
                     f"(max +{growth:.0%} over the last {self.args.long_seconds:.0f} s; {LONG_USERS:,} users); "
                     f"server cpu {cpu['server']:.0%}"
                     + (f", core shared: {cpu['others']:.0%} other processes" if cpu["others"] > 0.05 else ""),
            "target": "0 errors, RSS within 10%", "result": "PASS" if ok else "FAIL",
            "data": asdict(r) | {"rss_mb": samples, "sent_during": during, "sent_total": total, "cpu": cpu}})

    def workers_scaling(self) -> None:
        if not self.workers:
            self.checks.append({"check": "kefu serve --workers 1 → 2", "value": "n/a (--workers not built)",
                                "target": "", "result": ""})
            return
        store = "sqlite" if "sqlite" in self.args.stores else self.args.stores[0]
        rates = {}
        for n in (1, 2):
            row = Row("answer", "xml", "hit", 10, store)
            name = f"{self.next()}-workers-{n}"
            server = self.kefu(row, name, grace=0, workers=n, cores=self.cores.all)
            try:
                self.measure(server, row, Push("xml", "hit"), name, shared_core=True)
            finally:
                server.stop()
            rates[n] = row
        r1, r2 = rates[1], rates[2]
        self.checks.append({
            "check": f"kefu serve --workers 1 → 2 (answer xml hit, {store}; server on every core, load shares)",
            "value": f"{r1.rate:,.0f}/s → {r2.rate:,.0f}/s (×{r2.rate / r1.rate:.2f}), errors {r1.errors}+{r2.errors}",
            "target": "", "result": "", "data": {"1": asdict(r1), "2": asdict(r2)}})

    @contextlib.contextmanager
    def on_server_core(self) -> Iterator[None]:
        """Time in-process work (matcher, reload) on the server's core, as a server would run it."""
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, self.cores.server)
        try:
            yield
        finally:
            os.sched_setaffinity(0, before)

    # ---- targets ----

    def judge(self) -> None:
        bare = self.refs.get("bare")
        for row in [*self.refs.values(), *self.rows]:
            if row.kind in REFS:
                row.x_bare = row.rate / bare.rate if bare and bare.rate else None
                if len(row.measures) > 1:
                    drift = (row.measures[-1] - row.measures[0]) / row.measures[0]
                    row.note = (row.note + f" first/last {row.measures[0]:,.0f}/{row.measures[-1]:,.0f} "
                                           f"({drift:+.0%})").strip()
                if len(row.measures) > 2:
                    row.note += f", {len(row.measures)} measures {min(row.measures):,.0f}–{max(row.measures):,.0f}"
                row.result = "FAIL" if row.errors or row.wrong else ""
                continue
            row.x_bare = self.ratio(row, "bare")
            if row.near.get("bare"):
                row.note = (row.note + " bare near " + "/".join(f"{r:,.0f}" for r in row.near["bare"])).strip()
            checks = []
            if row.kind == "sustained":
                row.x_peer, row.x_werobot = self.ratio(row, "wechatpy+send"), self.ratio(row, "werobot")
                if row.near.get("wechatpy+send"):
                    row.note = (row.note + " wechatpy+send near "
                                + "/".join(f"{r:,.0f}" for r in row.near["wechatpy+send"])).strip()
                if row.fmt == "xml" and row.match == "hit" and row.rules == 10:
                    for peer, least in TARGETS.get(row.store, {}).items():
                        value = row.x_peer if peer == "wechatpy+send" else row.x_werobot
                        checks.append((f"≥{least:g}× {peer}", value, least))
            if row.rules > 10:
                ten = self.find(row.kind, row.fmt, row.match, 10, row.store)
                if ten is not None:
                    # with adjacent references, each row against its own bare: drift between the two rows cancels
                    both = row.near.get("bare") and ten.near.get("bare")
                    ratio = (row.rate / statistics.fmean(row.near["bare"])) / (ten.rate / statistics.fmean(
                        ten.near["bare"])) if both else row.rate / ten.rate
                    if row.rules == 10000:
                        checks.append((f"{ratio:.2f}× r10 ≥0.9", ratio, 0.9))
                    else:
                        row.check = f"{ratio:.2f}× r10"
            if checks:
                row.check = " ".join(c[0] for c in checks)
                missing = [name for name, value, _ in checks if value is None]
                if missing:
                    row.note = (row.note + " not judged: " + ", ".join(missing) + " not measured").strip()
                row.result = "PASS" if all(v is not None and v >= t for _, v, t in checks) else "FAIL"
            if row.errors or row.wrong:
                row.result = "FAIL"
                row.note = (row.note + f" {row.errors} errors, {row.wrong} wrong answers").strip()

    def ratio(self, row: Row, kind: str) -> float | None:
        """row's rate over the reference's: the measures next to it when there are, else the run's mean."""
        near = row.near.get(kind)
        ref = statistics.fmean(near) if near else (self.refs[kind].rate if kind in self.refs else 0.0)
        return row.rate / ref if ref else None

    # ---- the run ----

    def run(self) -> None:
        a = self.args
        rows = plan(a)
        sel = a.only
        kinds = {r.kind for r in rows}
        refs = ["bare"] if kinds or "p99" in sel else []
        if "answer" in kinds:
            refs.append("minimal")
        if "sustained" in kinds:
            refs += ["bare+send", *self.peers]
            missing = [peer for peer in PEERS if peer not in self.peers]
            if missing:
                log(f"peers not installed (pip install -e '.[bench]'): {', '.join(missing)}: their rows and "
                    "targets are left out")
        started = time.monotonic()
        for kind in refs:
            r = self.retrying(lambda kind=kind: self.reference(kind))
            log(f"[ref] {kind:<10} {r.measures[-1]:>9,.0f}/s  p99 {r.p99_ms:.1f} ms")
        fresh = set(refs)  # references measured since the last kefu row: they may serve as the next row's "before"
        waiting: dict[str, list[Row]] = {}  # reference kind → rows that still need their "after" measure of it
        for i, row in enumerate(rows, 1):
            if a.adjacent:
                for kind in dict.fromkeys([*self.near_kinds(row), *(k for k, w in waiting.items() if w)]):
                    if kind not in fresh:
                        self.near_reference(kind, waiting)
                        fresh.add(kind)
                    if kind in self.near_kinds(row):
                        row.near[kind] = [self.refs[kind].measures[-1]]
            try:
                self.retrying(lambda row=row: (self.answer if row.kind == "answer" else self.sustained)(row))
            except Exception as exc:  # one broken row must not lose the others
                row.result, row.note = "ERROR", f"{type(exc).__name__}: {exc}"[:300]
            fresh.clear()
            for kind in row.near:
                waiting.setdefault(kind, []).append(row)
            self.rows.append(row)
            log(f"[{i}/{len(rows)}] {row.label():<32} {row.rate:>9,.0f}/s  p50 {row.p50_ms:.1f} ms  "
                f"p99 {row.p99_ms:.1f} ms  {row.note}")
        for name, fn in (("matcher", self.matcher), ("reload", self.reload), ("rss", self.rss),
                         ("p99", self.p99_half_peak), ("workers", self.workers_scaling)):
            if name in sel:
                log(f"[{name}] …")
                try:
                    self.retrying(fn)
                except Exception as exc:
                    self.checks.append({"check": name, "value": f"{type(exc).__name__}: {exc}"[:300],
                                        "target": "", "result": "ERROR"})
        if "long" in sel and a.long_seconds > 0:
            for store in [s for s in ("memory", "sqlite") if s in a.stores]:
                log(f"[long] {a.long_seconds:.0f} s, {store} …")
                try:
                    self.long_run(store)
                except Exception as exc:
                    self.checks.append({"check": f"long run {store}", "value": f"{type(exc).__name__}: {exc}"[:300],
                                        "target": "", "result": "ERROR"})
        for kind, w in waiting.items():  # the last rows' "after"
            if w:
                self.near_reference(kind, waiting)
        if not a.quick and refs:  # the references again, last: the ratios use the mean of both
            for kind in refs:
                if kind in waiting:
                    continue  # just measured: the last rows' "after"
                r = self.retrying(lambda kind=kind: self.reference(kind))
                log(f"[ref] {kind:<10} {r.measures[-1]:>9,.0f}/s  (again)")
        self.elapsed = time.monotonic() - started
        self.judge()


def _fmt_value(v: object) -> str:
    if isinstance(v, float):
        return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


# ---- output ----------------------------------------------------------------------------------------------


def machine(suite: Suite) -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import aiohttp

    try:
        import uvloop

        uv = f"installed {uvloop.__version__}"
    except ImportError:
        uv = "not installed"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent.parent).stdout.strip()
    wrk = subprocess.run([suite.load.wrk, "-v"], capture_output=True, text=True).stdout.split("\n")[0] \
        if suite.load.wrk else "not used"
    return {"cpu": cpu, "cores": os.cpu_count(), "pinned": suite.cores.pinned, "python": platform.python_version(),
            "aiohttp": aiohttp.__version__, "uvloop": uv, "loop": suite.loop, "wrk": wrk.split(" [")[0],
            "redis": suite.redis,
            "commit": commit, "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "elapsed_s": round(getattr(suite, "elapsed", 0))}


def table(suite: Suite) -> str:
    a = suite.args
    head = ["scenario", "fmt", "match", "rules", "store", "rate/s", "p50 ms", "p99 ms", "err", "cpu", "×bare",
            "×wechatpy+send", "×werobot", "target", "result", "note"]
    lines = []
    for row in [*suite.refs.values(), *suite.rows]:
        ref = row.kind in REFS
        lines.append([row.kind, row.fmt, "-" if ref else row.match, "-" if ref else f"{row.rules:,}",
                      row.store, f"{row.rate:,.0f}", f"{row.p50_ms:.1f}", f"{row.p99_ms:.1f}",
                      str(row.errors + row.wrong), f"{row.cpu['server']:.0%}" if row.cpu else "-",
                      f"{row.x_bare:.2f}" if row.x_bare is not None else "-",
                      f"{row.x_peer:.2f}" if row.x_peer is not None else "-",
                      f"{row.x_werobot:.2f}" if row.x_werobot is not None else "-", row.check or "-",
                      row.result or "-", row.note])
    widths = [max(len(h), *(len(ln[i]) for ln in lines)) if lines else len(h) for i, h in enumerate(head)]
    right = {5, 6, 7, 8, 9, 10, 11, 12}

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                              strict=True))).rstrip()

    m = machine(suite)
    out = [f"kefu bench ({'quick' if a.quick else 'full'}): {a.seconds:g} s per row after {a.warmup:g} s warm-up; "
           f"{suite.load.name} on core{'s' if len(suite.cores.load) > 1 else ''} "
           f"{','.join(map(str, sorted(suite.cores.load)))}, each server on core "
           f"{','.join(map(str, sorted(suite.cores.server)))} (cpu: the server's share of it); answer rows: replies "
           f"{'held in the outbox' if a.answer_outbox == 'held' else 'kept unsent'}, sustained rows: each reply sent "
           f"to a fake API",
           "", fmt(head), fmt(["-" * w for w in widths])]
    out += [fmt(ln) for ln in lines]
    if suite.checks:
        out += ["", "more checks"]
        cw = max(len(c["check"]) for c in suite.checks)
        vw = max(len(c["value"]) for c in suite.checks)
        tw = max(len(c["target"]) for c in suite.checks)
        for c in suite.checks:
            out.append(f"  {c['check']:<{cw}}  {c['value']:<{vw}}  {c['target']:<{tw}}  {c['result']}".rstrip())
    results = [r.result for r in [*suite.refs.values(), *suite.rows]] + [c["result"] for c in suite.checks]
    out += ["", f"{results.count('PASS')} PASS, {results.count('FAIL')} FAIL"
                + (f", {results.count('ERROR')} ERROR" if "ERROR" in results else ""),
            "", f"machine: {m['cpu']}, {m['cores']} cores{'' if m['pinned'] else ' (not pinned: fewer than 2)'}; "
                f"Python {m['python']}, aiohttp {m['aiohttp']}, uvloop {m['uvloop']} (servers run {m['loop']}); "
                f"{m['wrk']}; redis: {m['redis']}; kefu {m['commit']}; {m['date']}; {m['elapsed_s']} s"]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.suite", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the smoke run: fewer rows, 2 s each, no 60 s run")
    p.add_argument("--only", help=f"comma-separated sections: {', '.join(SECTIONS)} (default: all)")
    p.add_argument("--stores", help="comma-separated: memory,sqlite,redis (redis only when reachable)")
    p.add_argument("--formats", help="comma-separated: xml,json,safe")
    p.add_argument("--match", help="comma-separated: hit,miss")
    p.add_argument("--rules", help="comma-separated rule counts: 10,1000,10000")
    p.add_argument("--matrix", action="store_true", help="every combination of the selected dimensions")
    p.add_argument("--seconds", type=float, help="measured seconds per row (default 5, quick 2)")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per row")
    p.add_argument("--no-adjacent", dest="adjacent", action="store_false",
                   help="measure the references only first and last, not also between the kefu rows (faster, but "
                        "the VM's drift then goes into the ratios)")
    p.add_argument("--long-seconds", type=float, help="the run at the sustained rate (default 60; quick 0: off)")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--outbox-concurrency", type=int, default=64, help="kefu's outbox.concurrency, sustained rows")
    p.add_argument("--answer-outbox", choices=("held", "unsent"), default="held",
                   help="answer rows: sends held by the fake API (default), or no credentials (kept unsent)")
    p.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                   help="the references' event loop (auto: the one `python -m bot serve` runs)")
    p.add_argument("--log-level", default="INFO", help="kefu serve --log-level (default: kefu's own, INFO)")
    p.add_argument("--no-wrk", action="store_true", help="use bench/load.py even when wrk is installed")
    p.add_argument("--py-spy", metavar="DIR",
                   help="record each measured row with py-spy into DIR (the rows run a little slower)")
    p.add_argument("--py-spy-format", choices=("flamegraph", "raw", "speedscope"), default="flamegraph")
    p.add_argument("--py-spy-rate", type=int, default=100, metavar="N", help="py-spy samples per second")
    p.add_argument("--quiet-wait", type=float, default=30.0,
                   help="seconds to wait before a row for the server's core to be idle (other processes)")
    p.add_argument("--max-others", type=float, default=0.05,
                   help="measure a row again when other processes used more of the server's core than this")
    p.add_argument("--json", metavar="PATH", help="also write every row as JSON")
    p.add_argument("--keep", action="store_true", help="keep the work folder (configs, server logs)")
    a = p.parse_args(argv)

    def parse_list(value: str | None, allowed: tuple, default: tuple) -> list:
        items = [v.strip() for v in value.split(",")] if value else list(default)
        bad = [v for v in items if v not in allowed]
        if bad:
            p.error(f"unknown {bad}: choose from {', '.join(map(str, allowed))}")
        return items

    a.only = parse_list(a.only, SECTIONS, SECTIONS)
    a.stores = parse_list(a.stores, STORES, STORES)
    a.formats = parse_list(a.formats, FORMATS, FORMATS)
    a.match = parse_list(a.match, ("hit", "miss"), ("hit", "miss"))
    try:
        a.rules = [int(v) for v in a.rules.split(",")] if a.rules else [10, 1000, 10000]
    except ValueError:
        p.error("--rules: whole numbers, e.g. 10,1000,10000 (or 10_000)")
    if a.seconds is None:
        a.seconds = 2.0 if a.quick else 5.0
    if a.long_seconds is None:
        a.long_seconds = 0.0 if a.quick else 60.0
    if "redis" in a.stores and not redis_reachable() and shutil.which("redis-server") is None:
        log("redis: no redis-server to start and none on 127.0.0.1:6379, its rows are left out")
        a.stores.remove("redis")

    suite = Suite(a)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a `kill` still stops every process this run started
    try:
        suite.start()
        log(f"kefu bench: servers run {suite.loop}; {suite.load.name}; redis: {suite.redis}; work folder {suite.work}")
        suite.run()
    finally:
        suite.close()
    text = table(suite)
    print(text)
    if a.json:
        Path(a.json).write_text(json.dumps({
            "machine": machine(suite), "settings": {k: v for k, v in vars(a).items()},
            "rows": [asdict(r) for r in [*suite.refs.values(), *suite.rows]], "checks": suite.checks,
            "table": text}, ensure_ascii=False, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
