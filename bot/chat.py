"""`kefu chat`: type as a user, see what the bot would do — the server's own turn. No server, no network,
nothing sent."""

from __future__ import annotations

import asyncio
import shlex
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, TextIO

from .config import Settings
from .engine import RuleSet
from .engine.outcome import AnswerKind, Handoff
from .messages import MediaFile, Message, Reply, TextReply
from .protocol.wire import message_from_fields
from .store import MemoryStore
from .turn import Recorder, Turn, take_turn

HELP = """Type a message as a user would, or a command:
  /event NAME [KEY] [SESSION_FROM]   an event (e.g. /event user_enter_tempsession, /event CLICK menu_1)
  /image                             an image message
  /page PATH [TITLE]                 a mini program page card
  /voice TEXT                        a voice message with this recognition text
  /time 2026-12-01T20:00             pretend it is that time (/time now: the real clock again)
  /user OPENID                       write as another user (each user has their own state)
  /help                              this text
  /quit                              leave (so does Ctrl-D)"""

CHAT_USER = "o_chat_user"
CHAT_ACCOUNT = "gh_kefu_chat"


def message_from_line(line: str, now: float, counter: int, user: str = CHAT_USER) -> Message | None:
    """A chat line → the Message WeChat would push for it; None for an empty line."""
    line = line.strip()
    if not line:
        return None
    fields: dict[str, Any] = {"ToUserName": CHAT_ACCOUNT, "FromUserName": user,
                              "CreateTime": str(int(now))}
    if not line.startswith("/") or line.startswith("//"):
        fields.update(MsgType="text", Content=line[1:] if line.startswith("//") else line,
                      MsgId=str(counter))
        return message_from_fields(fields)
    try:
        words = shlex.split(line[1:])
    except ValueError:
        words = line[1:].split()
    command, args = (words[0].lower(), words[1:]) if words else ("", [])
    if command == "event" and args:
        fields.update(MsgType="event", Event=args[0])
        if len(args) > 1:
            fields["EventKey"] = args[1]
        if len(args) > 2 or args[0].lower() == "user_enter_tempsession":
            fields["SessionFrom"] = args[2] if len(args) > 2 else (args[1] if len(args) > 1 else "")
    elif command == "image":
        fields.update(MsgType="image", PicUrl="https://example.invalid/chat.jpg", MediaId="chat_media",
                      MsgId=str(counter))
    elif command == "page" and args:
        fields.update(MsgType="miniprogrampage", PagePath=args[0], Title=" ".join(args[1:]) or args[0],
                      AppId="wx_chat", ThumbUrl="", ThumbMediaId="", MsgId=str(counter))
    elif command == "voice" and args:
        fields.update(MsgType="voice", MediaId="chat_voice", Format="amr", Recognition=" ".join(args),
                      MsgId=str(counter))
    else:
        raise ValueError(f"unknown command: {line} (type /help)")
    return message_from_fields(MappingProxyType(fields))


def describe_reply(reply: Reply) -> str:
    if isinstance(reply, TextReply):
        return reply.content.replace("\n", "\n         ")
    fields = ", ".join(f"{k}={v!r}" for k, v in vars_of(reply).items())
    return f"[{reply.kind}] {fields}"


def vars_of(reply: Reply) -> dict[str, Any]:
    """The reply's fields worth showing: files by name (uploaded when sent), no empty ids."""
    out: dict[str, Any] = {}
    for name in reply.__dataclass_fields__:
        value = getattr(reply, name)
        if isinstance(value, MediaFile):
            out[name] = Path(value.path).name
        elif value not in ("", None) or name not in ("media_id", "thumb_media_id", "appid"):
            out[name] = value
    return out


def run_chat(ruleset_source: Callable[[], RuleSet], settings: Settings, stdin: TextIO | None = None,
             stdout: TextIO | None = None, clock: Callable[[], float] = time.time,
             store: MemoryStore | None = None) -> int:
    """Chat with the rules as the server answers: the same turn (bot/turn.py), on a memory store of its own
    whose clock is the chat's (so state ttls, cooldowns and the quiet after a transfer hold as they would),
    with an outbox that records instead of sending."""
    stdin = stdin if stdin is not None else sys.stdin  # looked up per call: tests and shells swap them
    stdout = stdout if stdout is not None else sys.stdout
    interactive = stdin.isatty()
    ruleset = ruleset_source()
    print(f"kefu chat: {len(ruleset.rules)} rules (version {ruleset.version}). /help for commands.",
          file=stdout)
    counter = 0
    user = CHAT_USER
    fixed: datetime | None = None  # /time
    offset = 0.0  # how far /time moved the clock: the store's records age with it

    def now() -> float:
        return clock() + offset

    store = store if store is not None else MemoryStore(now)
    loop = asyncio.new_event_loop()
    try:
        while True:
            if interactive:
                print("you> ", end="", file=stdout, flush=True)
            line = stdin.readline()
            if not line:
                return 0
            if line.strip() in ("/quit", "/exit", "/q"):
                return 0
            if line.strip() == "/help":
                print(HELP, file=stdout)
                continue
            command, _, argument = line.strip().partition(" ")
            if command == "/time":
                try:
                    fixed = None if argument.strip() in ("", "now") else datetime.fromisoformat(argument.strip())
                except ValueError:
                    print(f"  ! /time takes a time like 2026-12-01T20:00, not {argument.strip()!r}", file=stdout)
                    continue
                if fixed is not None and fixed.tzinfo is None:
                    fixed = fixed.replace(tzinfo=settings.timezone)
                offset = fixed.timestamp() - clock() if fixed is not None else 0.0
                print(f"  (the time is now {fixed.isoformat() if fixed else 'the real clock'})", file=stdout)
                continue
            if command == "/user":
                user = argument.strip() or CHAT_USER
                print(f"  (writing as {user})", file=stdout)
                continue
            counter += 1
            try:
                message = message_from_line(line, now(), counter, user)
            except ValueError as exc:
                print(f"  ! {exc}", file=stdout)
                continue
            if message is None:
                continue
            turn = loop.run_until_complete(take_turn(ruleset, settings, store, message, now(), outbox=Recorder()))
            show_turn(turn, stdout)
    finally:
        loop.close()


def show_turn(turn: Turn, stdout: TextIO) -> None:
    """What one message did, as the server would do it."""
    plan, decision = turn.plan, turn.plan.decision
    where = f" ({decision.where})" if decision.where else ""
    print(f"  rule:  {decision.label}{where}", file=stdout)
    for reply in plan.sent:
        print(f"  reply: {describe_reply(reply)}", file=stdout)
    for dropped in plan.dropped:
        print(f"  dropped ({dropped.reason.value}): {describe_reply(dropped.reply)}", file=stdout)
    if decision.error:
        print(f"  error: {decision.error}", file=stdout)
    if decision.quiet:
        print("  → the user is with human agents: the bot stays quiet (answers success, sends nothing)",
              file=stdout)
    elif plan.answer is AnswerKind.TRANSFER:
        agent = f", agent {plan.kf_account}" if plan.kf_account else ""
        print(f"  → transfer to human agents (transfer_customer_service{agent})", file=stdout)
    elif plan.answer is AnswerKind.PASSIVE:
        print("  → answered passively, in the HTTP answer", file=stdout)
    elif not plan.sent:
        print("  → answers success, sends nothing", file=stdout)
    if decision.send_as and plan.sends:
        print(f"  → sent as agent {decision.send_as}", file=stdout)
    if plan.handoff is Handoff.START:
        print("  → the bot stays quiet for this user while agents answer (handoff.quiet)", file=stdout)
    elif plan.handoff is Handoff.END:
        print("  → the agent's session ended: the bot answers again", file=stdout)
    if plan.cooling is not None:
        print(f"  → {decision.rule} cools down for this user for {decision.cooldown / 60:.0f} min", file=stdout)
    if plan.state is not None:
        state = plan.state.new
        if state is None:
            print("  → state cleared", file=stdout)
        else:
            remembered = ", ".join(f"{k}={v!r}" for k, v in state.values.items())
            print(f"  → state: {state.name} for {plan.state.ttl / 60:.0f} min"
                  + (f" (remembered {remembered})" if remembered else ""), file=stdout)
