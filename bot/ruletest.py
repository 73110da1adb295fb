"""`kefu test`: conversations operators write next to their rules (`rules/*.test.yaml`), run against the same
rule set the server would load, through the server's own turn — no server, no network, nothing sent.

```yaml
tests:
  - name: 退货流程
    user: o_tester           # optional; the openid the messages come from
    time: 2026-12-01T10:00   # optional; the clock (bot.yaml's timezone); kefu test --time overrides it
    steps:
      - say: 我要退货          # or: event: NAME (with key:, session_from:), image: true, page: PATH
        expect:
          rule: return-start   # the rule that fires (fallback: the fallback)
          reply: 好的，请发送…   # the replies, exactly (one text, or a list); reply_matches: a regex instead
          sent: [好的，请发送…]  # what the user gets: long texts split, within the send allowance
          dropped: []          # what the send allowance (or outbox.per_push) kept from the user
          transfer: false
          state: awaiting_return_order   # the conversation state after the step (none: no state)
```
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from .config import Settings, parse_duration
from .engine import RuleSet
from .engine.outcome import AnswerKind, Plan
from .errors import Problem, RulesError
from .messages import Message, Reply, State, TextReply
from .protocol.wire import message_from_fields
from .sources import display_name
from .store import MemoryStore
from .store.state import load_state
from .turn import Recorder, take_turn
from .yamlsrc import Checker, YamlList, YamlMap, YamlSyntaxError, load_yaml

TEST_KEYS = ("name", "user", "time", "steps")
INPUT_KEYS = ("say", "event", "image", "page")
STEP_KEYS = (*INPUT_KEYS, "key", "session_from", "after", "expect")
EXPECT_KEYS = ("rule", "reply", "reply_matches", "sent", "dropped", "transfer", "state")


@dataclass
class Step:
    line: int
    message: dict[str, Any]
    expect: Mapping[str, Any]
    after: float = 0.0  # seconds that pass before this step


@dataclass
class Case:
    file: str
    line: int
    name: str
    user: str
    time: datetime | None
    steps: list[Step] = field(default_factory=list)


@dataclass
class Failure:
    case: Case
    step: int
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.case.file}:{self.line}: {self.case.name}, step {self.step}: {self.what}"


def test_files(rules_dir: Path) -> list[Path]:
    return sorted(p for p in rules_dir.glob("*.test.y*ml") if p.is_file()) if rules_dir.is_dir() else []


def load_cases(path: Path, base: Path, zone: ZoneInfo) -> list[Case]:
    """Parse one test file; raise RulesError with file:line for every mistake."""
    name = display_name(path, base)
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), name)
    except YamlSyntaxError as exc:
        raise RulesError(exc.problem) from None
    check = Checker(name)
    cases: list[Case] = []
    if not isinstance(data, YamlMap) or not isinstance(data.get("tests"), YamlList):
        raise RulesError(Problem(name, 1, "a test file holds a list under 'tests:'"))
    check.unknown_keys(data, ("tests",))
    tests = data["tests"]
    for i, item in enumerate(tests):
        line = tests.line_of(i)
        if not isinstance(item, YamlMap) or not isinstance(item.get("steps"), YamlList):
            check.add(line, "a test is a mapping with 'name' and a list of 'steps'")
            continue
        check.unknown_keys(item, TEST_KEYS, "test")
        when = None
        if "time" in item:
            when = _parse_time(item["time"], zone)
            if when is None:
                check.add(item.line_of("time"), f"'time' must look like 2026-12-01T10:00, not {item['time']!r}")
        case = Case(name, line, str(item.get("name", f"test {i + 1}")), str(item.get("user", "o_kefu_test")), when)
        steps = item["steps"]
        for j, step in enumerate(steps):
            parsed = _step(check, step, steps.line_of(j))
            if parsed is not None:
                case.steps.append(parsed)
        cases.append(case)
    if check.problems:
        raise RulesError(check.problems)
    return cases


def _parse_time(value: Any, zone: ZoneInfo) -> datetime | None:
    try:
        parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)


def _step(check: Checker, step: Any, line: int) -> Step | None:
    if not isinstance(step, YamlMap):
        check.add(line, f"a step is a mapping with one of {', '.join(INPUT_KEYS)} and 'expect'")
        return None
    check.unknown_keys(step, STEP_KEYS, "step")
    inputs = [k for k in INPUT_KEYS if k in step]
    if len(inputs) != 1:
        check.add(line, f"a step has exactly one of {', '.join(INPUT_KEYS)}")
        return None
    kind, value = inputs[0], step[inputs[0]]
    fields: dict[str, Any] = {"ToUserName": "gh_kefu_test"}
    if kind == "say":
        fields.update(MsgType="text", Content=str(value))
    elif kind == "event":
        fields.update(MsgType="event", Event=str(value))
        if "key" in step:
            fields["EventKey"] = str(step["key"])
        if "session_from" in step:
            fields["SessionFrom"] = str(step["session_from"])
    elif kind == "image":
        fields.update(MsgType="image", PicUrl="https://example.invalid/test.jpg", MediaId="test_media")
    else:
        fields.update(MsgType="miniprogrampage", PagePath=str(value), Title=str(value), AppId="wx_test")
    after = 0.0
    if "after" in step:
        after = float(parse_duration(step["after"]) or 0)
        if not after:
            check.add(step.line_of("after"), "'after' is a duration like 10m, 1h or 31m")
    expect = step.get("expect", YamlMap())
    if not isinstance(expect, YamlMap):
        check.add(step.line_of("expect"), f"'expect' is a mapping with {', '.join(EXPECT_KEYS)}")
        return None
    check.unknown_keys(expect, EXPECT_KEYS, "expect")
    if "reply_matches" in expect:
        try:
            re.compile(str(expect["reply_matches"]))
        except re.error as exc:
            check.add(expect.line_of("reply_matches"), f"bad regex: {exc.msg}")
    return Step(line, fields, expect, after)


async def run_case(ruleset: RuleSet, case: Case, now: datetime, settings: Settings) -> list[Failure]:
    """Play a conversation through the server's own turn (bot/turn.py) on a memory store of its own, with an
    outbox that records instead of sending; every step's expectations are checked. What the store keeps
    carries from step to step as it does on the server — the state (with its ttl), rules cooling down, the
    quiet after a transfer, the send allowance; `after:` on a step moves the clock."""
    failures: list[Failure] = []
    clock = [(case.time or now).timestamp()]
    store = MemoryStore(lambda: clock[0])
    for number, step in enumerate(case.steps, 1):
        clock[0] += step.after
        fields = {**step.message, "FromUserName": case.user, "CreateTime": str(int(clock[0])),
                  "MsgId": str(number)}
        message: Message = message_from_fields(MappingProxyType(fields))
        turn = await take_turn(ruleset, settings, store, message, clock[0], outbox=Recorder())
        state = await load_state(store, case.user)
        for what in _compare(step.expect, turn.plan, state):
            failures.append(Failure(case, number, step.line, what))
    return failures


def _compare(expect: Mapping[str, Any], plan: Plan, state: State | None) -> list[str]:
    decision = plan.decision
    problems = []
    if "rule" in expect:
        wanted = expect["rule"]
        got = decision.rule if decision.rule is not None else "fallback"
        if str(wanted) != got:
            problems.append(f"expected rule {wanted!r}, got {got!r}")
    texts = _texts(r for r in decision.replies if r.kind != "typing")
    for key, got_texts in (("reply", texts), ("sent", _texts(plan.sent)),
                           ("dropped", _texts(d.reply for d in plan.dropped))):
        if key in expect:
            wanted = expect[key]
            wanted_list = [str(w) for w in wanted] if isinstance(wanted, list) else (
                [] if wanted is None else [str(wanted)])
            if wanted_list != got_texts:
                diff = "\n".join(difflib.unified_diff(wanted_list, got_texts, "expected", "got", lineterm=""))
                what = {"reply": "replies", "sent": "sent replies", "dropped": "dropped replies"}[key]
                problems.append(f"{what} differ:\n{diff}")
    if "reply_matches" in expect and not re.search(str(expect["reply_matches"]), "\n".join(texts)):
        problems.append(f"no reply matches {expect['reply_matches']!r}; replies were {texts!r}")
    transfer = plan.answer is AnswerKind.TRANSFER
    if "transfer" in expect and bool(expect["transfer"]) != transfer:
        problems.append(f"expected transfer {bool(expect['transfer'])}, got {transfer}")
    if "state" in expect:
        got_state = state.name if state is not None else "none"
        if str(expect["state"]) != got_state:
            problems.append(f"expected state {expect['state']!r}, got {got_state!r}")
    if decision.error:
        problems.append(f"a reply failed to render: {decision.error}")
    return problems


def _texts(replies: Iterable[Reply]) -> list[str]:
    return [r.content if isinstance(r, TextReply) else f"[{r.kind}]" for r in replies]
