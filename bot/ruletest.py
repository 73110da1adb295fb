"""`kefu test`: conversations operators write next to their rules (`rules/*.test.yaml`), run against the same
rule set the server would load — no server, no network, nothing sent.

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
          transfer: false
          state: awaiting_return_order   # the conversation state after the step (none: no state)
```
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from .config import parse_duration
from .engine import RuleSet, decide
from .errors import Problem, RulesError
from .messages import Decision, Message, State, TextReply
from .protocol.wire import message_from_fields
from .reload import display_name
from .yamlsrc import Checker, YamlList, YamlMap, YamlSyntaxError, load_yaml

TEST_KEYS = ("name", "user", "time", "steps")
INPUT_KEYS = ("say", "event", "image", "page")
STEP_KEYS = (*INPUT_KEYS, "key", "session_from", "after", "expect")
EXPECT_KEYS = ("rule", "reply", "reply_matches", "transfer", "state")


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


def run_case(ruleset: RuleSet, case: Case, now: datetime, handoff_quiet: float = 1800) -> list[Failure]:
    """Play a conversation; every step's expectations are checked. What the store would keep carries from
    step to step as the server keeps it: the state (with its ttl), rules cooling down, the quiet after a
    transfer; `after:` on a step moves the clock."""
    failures: list[Failure] = []
    clock = case.time or now
    state: tuple[State, datetime] | None = None
    cooling: dict[str, datetime] = {}
    quiet_until: datetime | None = None
    for number, step in enumerate(case.steps, 1):
        clock = clock + timedelta(seconds=step.after)
        fields = {**step.message, "FromUserName": case.user, "CreateTime": str(int(clock.timestamp())),
                  "MsgId": str(number)}
        message: Message = message_from_fields(MappingProxyType(fields))
        live_state = state[0] if state is not None and clock < state[1] else None
        in_handoff = quiet_until is not None and clock < quiet_until
        decision = decide(ruleset, message, clock, live_state, handoff=in_handoff,
                          cooling=frozenset(rule for rule, until in cooling.items() if clock < until))
        if decision.state is not None:
            new = decision.state.new
            state = (new, clock + timedelta(seconds=decision.state.ttl)) if new is not None else None
        elif live_state is None:
            state = None
        if decision.transfer and handoff_quiet:
            quiet_until = clock + timedelta(seconds=handoff_quiet)
        elif message.is_event and getattr(message, "event", "") == "kf_close_session":
            quiet_until = None
        rule = ruleset.rule(decision.rule) if decision.rule else None
        if rule is not None and rule.cooldown:
            cooling[rule.name] = clock + timedelta(seconds=rule.cooldown)
        for what in _compare(step.expect, decision, state[0] if state is not None else None):
            failures.append(Failure(case, number, step.line, what))
    return failures


def _compare(expect: Mapping[str, Any], decision: Decision, state: State | None) -> list[str]:
    problems = []
    if "rule" in expect:
        wanted = expect["rule"]
        got = decision.rule if decision.rule is not None else "fallback"
        if str(wanted) != got:
            problems.append(f"expected rule {wanted!r}, got {got!r}")
    texts = [r.content if isinstance(r, TextReply) else f"[{r.kind}]" for r in decision.replies
             if r.kind != "typing"]
    if "reply" in expect:
        wanted = expect["reply"]
        wanted_list = [str(w) for w in wanted] if isinstance(wanted, list) else (
            [] if wanted is None else [str(wanted)])
        if wanted_list != texts:
            diff = "\n".join(difflib.unified_diff(wanted_list, texts, "expected", "got", lineterm=""))
            problems.append(f"replies differ:\n{diff}")
    if "reply_matches" in expect and not re.search(str(expect["reply_matches"]), "\n".join(texts)):
        problems.append(f"no reply matches {expect['reply_matches']!r}; replies were {texts!r}")
    if "transfer" in expect and bool(expect["transfer"]) != decision.transfer:
        problems.append(f"expected transfer {bool(expect['transfer'])}, got {decision.transfer}")
    if "state" in expect:
        got_state = state.name if state is not None else "none"
        if str(expect["state"]) != got_state:
            problems.append(f"expected state {expect['state']!r}, got {got_state!r}")
    if decision.error:
        problems.append(f"a reply failed to render: {decision.error}")
    return problems
