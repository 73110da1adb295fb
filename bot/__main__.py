"""The kefu command line: serve, check, chat, test, send, log, backup, restore. The only place that exits the
process. Exit codes (EXIT_CODES, printed by `kefu --help`): 0 done, 1 a problem was found or the command
failed, 2 bad usage, 130 interrupted, 141 the output was closed early (piped into head)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from . import __version__
from .config import Settings, load_settings
from .errors import SourceError
from .logs import setup_logging
from .storecli import run_backup, run_restore


def _load(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    server = settings.server
    if getattr(args, "host", None):
        server = replace(server, host=args.host)
    if getattr(args, "port", None):
        server = replace(server, port=args.port)
    return replace(settings, server=server)


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from .server import create_app
    from .sources import load_ruleset
    from .workers import WorkersError, check_shared, listen, run_workers

    setup_logging(args.log_format, args.log_level)
    settings = _load(args)
    log = logging.getLogger("bot.serve")
    workers = args.workers
    try:
        check_shared(settings, workers)
    except WorkersError as exc:
        print(f"kefu serve: {exc}", file=sys.stderr)
        return 2
    new_loop = _event_loop(args.loop)
    where = f"http://{settings.server.host}:{settings.server.port}{settings.server.path}"

    metrics_folder: Path | None = None

    def serve(sock: socket.socket | None = None) -> None:
        app = create_app(settings, config=Path(args.config), watch=not args.no_watch, signals=True, tune_gc=True,
                         metrics_folder=metrics_folder)
        web.run_app(app, host=None if sock else settings.server.host, port=None if sock else settings.server.port,
                    sock=sock, access_log=None, shutdown_timeout=5.0, loop=new_loop(),
                    print=lambda _: log.info("listening on %s", where))

    if workers <= 1:
        serve()
        return 0
    load_ruleset(settings)  # a broken rule file stops here once, with file:line, not in every worker
    sock = listen(settings.server.host, settings.server.port)
    log.info("listening on %s with %d workers (%s loop)", where, workers, args.loop)
    metrics_folder = Path(tempfile.mkdtemp(prefix="kefu-metrics-"))  # each worker's counts, for /metrics
    try:
        return run_workers(workers, sock, serve, forget=lambda pid: (metrics_folder / f"{pid}.json").unlink(
            missing_ok=True))
    finally:
        shutil.rmtree(metrics_folder, ignore_errors=True)


def _event_loop(choice: str):
    """A factory of event loops: uvloop's when installed (pip install 'kefu[fast]') unless --loop asyncio."""
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError as exc:
            if choice == "uvloop":
                raise SystemExit("kefu serve: --loop uvloop, but uvloop is not installed (pip install 'kefu[fast]')"
                                 ) from exc
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def cmd_check(args: argparse.Namespace) -> int:
    from datetime import datetime as _datetime

    from .engine.lint import warnings
    from .sources import load_ruleset

    settings = _load(args)
    ruleset = load_ruleset(settings)
    found = warnings(ruleset, Path(settings.source).resolve().parent, _datetime.now(settings.timezone).date(),
                     settings.quota)
    for warning in found:
        print(f"warning: {warning}")
    print(f"ok: {_count(len(ruleset.rules), 'rule')} in {_count(len(ruleset.files), 'file')}, "
          f"{_count(len(ruleset.templates), 'template')} (version {ruleset.version})"
          + (f", {_count(len(found), 'warning')}" if found else ""))
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    """Run the rule tests (rules/*.test.yaml) against the rules as the server would load them."""
    from datetime import datetime as _datetime

    from .ruletest import load_cases, run_case, test_files
    from .sources import load_ruleset

    settings = _load(args)
    ruleset = load_ruleset(settings)
    base = Path(settings.source).resolve().parent
    now = _datetime.now(settings.timezone)
    if args.time:
        try:
            now = _datetime.fromisoformat(args.time)
        except ValueError:
            print(f"--time: a time like 2026-12-01T20:00, not {args.time!r}", file=sys.stderr)
            return 2
        now = now if now.tzinfo else now.replace(tzinfo=settings.timezone)
    files = test_files(settings.rules)
    if not files:
        print(f"no *.test.yaml files in {settings.rules}", file=sys.stderr)
        return 1
    passed = failed = 0
    for path in files:
        for case in load_cases(path, base, settings.timezone):
            if args.time:
                case.time = None  # --time fixes the clock for every test
            failures = asyncio.run(run_case(ruleset, case, now, settings))
            if failures:
                failed += 1
                print(f"FAIL  {case.file}:{case.line}  {case.name}")
                for failure in failures:
                    print("      " + str(failure).replace("\n", "\n      "))
            else:
                passed += 1
                print(f"ok    {case.file}:{case.line}  {case.name}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def cmd_chat(args: argparse.Namespace) -> int:
    from .chat import run_chat
    from .sources import load_ruleset

    settings = _load(args)
    return run_chat(lambda: load_ruleset(settings), settings)


def cmd_send(args: argparse.Namespace) -> int:
    from .messages import TextReply
    from .transport import make_session, route
    from .wechat_api import WeChatAPI

    setup_logging(args.log_format, args.log_level)
    settings = _load(args)
    if not settings.wechat.has_credentials:
        print(f"{settings.source}: wechat.appid and wechat.secret are needed to send", file=sys.stderr)
        return 1
    way = route(settings.wechat).shown()  # "through the proxy http://host:3128" (no password) or "with no proxy"

    async def send() -> int:
        async with make_session(settings.wechat) as session:
            result = await WeChatAPI(settings.wechat, session).send(args.openid, TextReply(args.text))
        if result.ok:
            print(f"sent to {args.openid} {way}")
            return 0
        print(f"not sent: {result.reason} ({way})", file=sys.stderr)
        return 1

    return asyncio.run(send())


def _no_log_kept(settings: Settings) -> bool:
    """True (and says why) when the store keeps no log another process can read."""
    if settings.store.startswith("memory://"):
        print(f"{settings.source}: the memory store keeps no log between processes; use store: "
              "sqlite:///kefu.db or redis://… to keep one", file=sys.stderr)
        return True
    return False


def cmd_log(args: argparse.Namespace) -> int:
    """Print the conversation log from the store."""
    import time as _time

    from .config import parse_duration
    from .store import open_store

    settings = _load(args)
    if _no_log_kept(settings):
        return 1
    since = None
    if args.since:
        seconds = parse_duration(args.since)
        if seconds is None:
            print(f"--since: a duration like 1h, 30m or 7d, not {args.since!r}", file=sys.stderr)
            return 2
        since = _time.time() - seconds

    async def show() -> int:
        store = open_store(settings.store, settings.source)
        await store.open()
        try:
            entries = await store.log_query(user=args.user, since=since, rule=args.rule, limit=args.limit)
        finally:
            await store.close()
        for entry in entries:
            print(format_log_entry(entry))
        if not entries:
            print("(no entries)", file=sys.stderr)
        return 0

    return asyncio.run(show())


def cmd_report(args: argparse.Namespace) -> int:
    """What no rule answers and the figures of a period, as the console's insights show them."""
    from .errors import StoreError
    from .insights.report import run
    from .insights.service import PeriodError
    from .sources import load_ruleset

    settings = _load(args)
    if _no_log_kept(settings):
        return 1
    try:
        sys.stdout.write(run(settings, load_ruleset(settings), args.since, args.format))
    except PeriodError as exc:
        print(f"--since: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"kefu report: {exc}", file=sys.stderr)
        return 1
    return 0


def format_log_entry(entry) -> str:
    import time as _time

    when = _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(entry.ts))
    parts = [when, entry.user, f"{entry.kind:<8}", entry.msg_type or "-"]
    if entry.text:
        parts.append(repr(entry.text) if len(entry.text) <= 60 else repr(entry.text[:60] + "…"))
    if entry.rule:
        parts.append(f"rule={entry.rule}")
    if entry.errcode not in (None, 0):
        parts.append(f"errcode={entry.errcode}")
    if entry.detail:
        parts.append(entry.detail)
    return "  ".join(parts)


# `kefu COMMAND --help` ends with its example (a test checks every command has one).
EXAMPLES = {
    "serve": "kefu serve --config /etc/kefu/bot.yaml --host 0.0.0.0 --workers 2",
    "check": "kefu check --config bot.yaml && systemctl reload kefu",
    "chat": "kefu chat          (then type: 我的快递到哪了, /event user_enter_tempsession, /help)",
    "send": "kefu send o9AgO5Kd5ggOC-bXrbNODIiE3bGY 您好，您的订单已发货",
    "test": "kefu test --time 2026-12-01T20:00",
    "log": "kefu log --since 1h --rule shipping | less",
    "report": "kefu report --since 30d --format csv > insights.csv",
    "backup": "kefu backup /var/backups/kefu/      (a folder: writes kefu-YYYYmmdd-HHMMSS.db in it)",
    "restore": "systemctl stop kefu && kefu restore /var/backups/kefu/kefu-20261201-030000.db && systemctl start kefu",
}
EXIT_CODES = {0: "done", 1: "a problem was found, or the command failed (the message says which)",
              2: "bad usage (an unknown option or a malformed value)", 130: "interrupted (Ctrl-C)",
              141: "the output was closed early (e.g. piped into head)"}


def _add_examples(parser: argparse.ArgumentParser, sub: argparse._SubParsersAction) -> None:
    """Give each command's --help its example and the exit codes, and the top-level --help all examples."""
    codes = "exit codes:\n" + "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES.items())
    for name, command in sub.choices.items():
        example = EXAMPLES.get(name)
        command.epilog = (f"example:\n  {example}\n\n" if example else "") + codes
        command.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES.values()) + "\n\n" + codes
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kefu", description="A customer-service bot for WeChat.")
    parser.add_argument("--version", action="version", version=f"kefu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--config", "-c", default=os.environ.get("KEFU_CONFIG") or "bot.yaml",
                       help="the bot.yaml to use (default: $KEFU_CONFIG, else bot.yaml)")
        p.add_argument("--log-format", choices=("text", "json"), default="text")
        p.add_argument("--log-level", default="INFO", type=str.upper, choices=("DEBUG", "INFO", "WARNING", "ERROR"))
        return p

    serve = command("serve", "run the bot server")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.add_argument("--no-watch", action="store_true",
                       help="do not reload when files change (SIGHUP and POST /admin/reload still do)")
    serve.add_argument("--workers", type=int, default=1, metavar="N",
                       help="run N server processes on the port, sharing the sqlite or redis store (default 1)")
    serve.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                       help="the event loop: uvloop when installed (auto, the default), or asyncio's own")
    serve.set_defaults(func=cmd_serve)
    command("check", "validate bot.yaml, rules and templates").set_defaults(func=cmd_check)
    command("chat", "type messages as a user and see what the bot would do").set_defaults(func=cmd_chat)
    send = command("send", "send one customer-service text message by hand")
    send.add_argument("openid")
    send.add_argument("text")
    send.set_defaults(func=cmd_send)
    test_cmd = command("test", "run the rule tests in rules/*.test.yaml")
    test_cmd.add_argument("--time", help="fix the clock for every test, e.g. 2026-12-01T20:00")
    test_cmd.set_defaults(func=cmd_test)
    log_cmd = command("log", "print the conversation log: pushes, rules, replies, failures, transfers")
    log_cmd.add_argument("--user", help="one user's openid")
    log_cmd.add_argument("--since", help="only the last period: 1h, 30m, 7d")
    log_cmd.add_argument("--rule", help="only what this rule answered")
    log_cmd.add_argument("--limit", type=int, default=200, help="the newest N entries (default 200)")
    log_cmd.set_defaults(func=cmd_log)
    backup_cmd = command("backup", "copy the sqlite store to PATH (a file or a folder), safely while kefu runs")
    backup_cmd.add_argument("path", metavar="PATH", help="a file to write, or a folder to write a dated copy in")
    backup_cmd.set_defaults(func=lambda args: run_backup(_load(args), args.path))
    restore_cmd = command("restore", "put the backup at PATH in place of the sqlite store (stop kefu first)")
    restore_cmd.add_argument("path", metavar="PATH", help="a backup made by kefu backup")
    restore_cmd.set_defaults(func=lambda args: run_restore(_load(args), args.path))
    report = command("report", "what users ask that no rule answers, and the figures of a period")
    report.add_argument("--since", default="7d", help="the period: 24h, 7d, 30d (default 7d; at most log.keep)")
    report.add_argument("--format", choices=("text", "json", "csv"), default="text")
    report.set_defaults(func=cmd_report)
    _add_examples(parser, sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)  # inside: `kefu --help | head -3` too
        code = args.func(args)
        sys.stdout.flush()  # here, where a closed pipe can still be caught
        return code
    except SourceError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `kefu log | head`: the reader has all it wanted
        _quiet_stdout()
        return 141


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so that Python's own flush at exit does not complain about the closed pipe."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
