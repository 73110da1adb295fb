"""Rule files and templates → one immutable RuleSet, or a RulesError that lists every problem as
`file:line: message`. Pure: the caller reads the files (see bot/sources.py) and passes their text in."""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..config import parse_duration
from ..errors import RulesError
from ..messages import PASSIVE_KINDS
from ..yamlsrc import Checker, YamlList, YamlMap, YamlSyntaxError, load_yaml, type_name
from .conditions import Condition, Not, StateIs
from .index import index_steps
from .render import Text
from .replies import ReplyCompiler
from .ruleset import Fallback, Rule, RuleSet, StateSpec
from .when import NORMALIZE, compile_when

FILE_KEYS = ("rules", "fallback")
ACTION_KEYS = ("reply", "transfer", "via", "kf_account", "send_as", "set_state", "ttl", "remember", "clear_state")
RULE_KEYS = ("name", "when", "priority", "normalize", "cooldown", "during_handoff", "end_handoff", "typing",
             *ACTION_KEYS)
FALLBACK_KEYS = ACTION_KEYS
DEFAULT_STATE_TTL = 600  # seconds: a conversation state lasts 10 minutes unless the rule says otherwise
VIA = ("passive", "api")


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A file's text and the name it is shown by in errors (`rules/faq.yaml`).
    For templates, `key` is the name rules and `{% include %}` use (`shipping.j2`, `faq/refund.j2`)."""

    name: str
    text: str
    key: str = ""


class _Compiler(ReplyCompiler):
    # ---- rules -----------------------------------------------------------------------------------

    def when(self, check: Checker, when: Any, line: int, where: str, mode: bool | str = True) -> Condition | None:
        return compile_when(check, when, line, where, mode, self.windows)

    def rule(self, check: Checker, item: Any, line: int, file: str) -> Rule | None:
        if not isinstance(item, YamlMap):
            check.add(line, f"a rule must be a mapping, not {type_name(item)}")
            return None
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            check.add(line, "a rule needs a 'name' (text, unique across the rules folder)")
            return None
        where = f"rule '{name}'"
        check.unknown_keys(item, RULE_KEYS, where)
        mode = item.get("normalize", True)
        if mode not in NORMALIZE or isinstance(mode, int) and not isinstance(mode, bool):
            check.add(item.line_of("normalize"), f"{where}: 'normalize' is true (keywords, equals and prefix "
                                                 "ignore width, case and surrounding punctuation), false, or all "
                                                 "(regexes too)")
            mode = True
        if "when" not in item:
            check.add(line, f"{where}: needs 'when' (use 'fallback:' for the default answer)")
            when = None
        else:
            when = self.when(check, item["when"], item.line_of("when"), where, mode)
        action = self.action(check, item, line, where, default_transfer=False)
        priority = item.get("priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int):
            check.add(item.line_of("priority"), f"{where}: 'priority' must be a whole number")
            priority = 0
        cooldown = 0.0
        if "cooldown" in item:
            cooldown = float(parse_duration(item["cooldown"]) or 0)
            if not cooldown:
                check.add(item.line_of("cooldown"), f"{where}: 'cooldown' must be a duration like 10m, 1h or 1d")
        end_handoff = self.flag(check, item, "end_handoff", False, where)
        # a rule that ends the quiet after a transfer must be heard during it
        during_handoff = self.flag(check, item, "during_handoff", end_handoff, where)
        if end_handoff and not during_handoff:
            check.add(item.line_of("during_handoff"), f"{where}: 'end_handoff: true' answers during the quiet after "
                                                      "a transfer; drop 'during_handoff: false'")
        if end_handoff and action is not None and action["transfer"]:
            check.add(item.line_of("end_handoff"), f"{where}: 'end_handoff' brings the user back to the bot; it "
                                                   "cannot go with 'transfer: true'")
            return None
        if when is None or action is None:
            return None
        typing = self.flag(check, item, "typing", False, where)
        return Rule(name=name, file=file, line=line, priority=priority, when=when, cooldown=cooldown,
                    during_handoff=during_handoff, end_handoff=end_handoff, typing=typing, **action)

    def fallbacks(self, check: Checker, value: Any, line: int, file: str) -> tuple[Fallback, ...] | None:
        """`fallback:` is one mapping, or a list of them tried in order, each with an optional `when:`
        (e.g. outside business hours: a reply instead of a transfer)."""
        items = value if isinstance(value, YamlList) else [value]
        out = []
        for i, item in enumerate(items):
            item_line = items.line_of(i) if isinstance(items, YamlList) else line
            where = f"fallback[{i + 1}]" if isinstance(value, YamlList) else "fallback"
            if not isinstance(item, YamlMap):
                check.add(item_line, f"'{where}' must be a mapping with 'reply' and/or 'transfer' (and maybe "
                                     "'when')")
                return None
            check.unknown_keys(item, (*FALLBACK_KEYS, "when"), where)
            when = self.when(check, item["when"], item.line_of("when"), where) if "when" in item else None
            action = self.action(check, item, item_line, where, default_transfer="reply" not in item)
            if action is None or ("when" in item and when is None):
                return None
            out.append(Fallback(file=file, line=item_line, when=when, **action))
        if isinstance(value, YamlList) and not out:
            check.add(line, "'fallback' is an empty list")
            return None
        return tuple(out)

    def action(self, check: Checker, item: YamlMap, line: int, where: str,
               default_transfer: bool) -> dict[str, Any] | None:
        """What a rule (or the fallback) does: replies, transfer, and how the replies are delivered."""
        before = len(check.problems)
        replies, kinds = self.replies(check, item["reply"], item.value_line_of("reply"), where) \
            if "reply" in item else ((), ())
        transfer = self.flag(check, item, "transfer", default_transfer, where)
        state = self.state_change(check, item, where)
        if "reply" not in item and not transfer and state is None:
            check.add(line, f"{where}: does nothing; give it a 'reply', 'transfer: true' or a state change")
        names = {}
        for key in ("via", "kf_account", "send_as"):
            value = item.get(key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                check.add(item.line_of(key), f"{where}: '{key}' must be text")
                value = None
            names[key] = value.strip() if value else None
        via = names["via"]
        official = self.platform == "official_account"
        if via is not None and via not in VIA:
            check.add(item.line_of("via"), f"{where}: 'via' is passive or api, not '{via}'")
        elif via == "passive" and not official:
            check.add(item.line_of("via"), f"{where}: mini programs answer only through the API; "
                                           "'via: passive' is for official accounts")
        elif via == "passive" and transfer:
            check.add(item.line_of("via"), f"{where}: one answer cannot carry both a passive reply and "
                                           "a transfer; use 'via: api' or drop the transfer")
        elif via == "passive" and len(replies) != 1:
            check.add(item.line_of("via"), f"{where}: a passive answer carries exactly one reply, "
                                           f"not {len(replies)}")
        elif via == "passive" and kinds[0] not in PASSIVE_KINDS and kinds[0] != "template":
            check.add(item.line_of("via"), f"{where}: a '{kinds[0]}' reply cannot be passive; passive "
                                           f"answers are {', '.join(sorted(PASSIVE_KINDS))}")
        if via == "passive" and names["send_as"]:
            check.add(item.line_of("send_as"), f"{where}: 'send_as' needs the API; it cannot go with "
                                               "'via: passive'")
        for key in ("kf_account", "send_as"):
            if names[key] and not official:
                check.add(item.line_of(key), f"{where}: '{key}' is for official accounts only")
        if names["kf_account"] and not transfer:
            check.add(item.line_of("kf_account"), f"{where}: 'kf_account' names the agent of a transfer; "
                                                  "add 'transfer: true'")
        if len(check.problems) > before:
            return None
        # Official accounts: one passive-capable reply without a transfer goes in the HTTP answer, unless
        # the rule says 'via: api' (unverified accounts have no send API; a passive answer always works).
        passive = official and not transfer and len(replies) == 1 and via != "api" and not names["send_as"] \
            and (kinds[0] in PASSIVE_KINDS or kinds[0] == "template")
        return {"replies": replies, "transfer": transfer, "passive": passive,
                "kf_account": names["kf_account"], "send_as": names["send_as"], "state": state}

    def state_change(self, check: Checker, item: YamlMap, where: str) -> StateSpec | None:
        """set_state (with ttl and remember) or clear_state."""
        clear = self.flag(check, item, "clear_state", False, where)
        name = item.get("set_state")
        if name is None:
            for key in ("ttl", "remember"):
                if key in item:
                    check.add(item.line_of(key), f"{where}: '{key}' goes with 'set_state'")
            return StateSpec(None, 0, ()) if clear else None
        if clear:
            check.add(item.line_of("clear_state"), f"{where}: 'set_state' and 'clear_state' cannot go together")
            return None
        if not isinstance(name, str) or not name.strip() or name.strip() == "none":
            check.add(item.line_of("set_state"), f"{where}: 'set_state' is a name (not 'none'), e.g. awaiting_order")
            return None
        ttl = parse_duration(item.get("ttl", DEFAULT_STATE_TTL))
        if not ttl:
            check.add(item.line_of("ttl"), f"{where}: 'ttl' must be a duration like 10m, 1h or 90s")
            return None
        remember: list[tuple[str, Text]] = []
        values = item.get("remember", YamlMap())
        if not isinstance(values, YamlMap):
            check.add(item.line_of("remember"), f"{where}: 'remember' maps names to values, e.g. "
                                                "order_no: '{{ match.no }}'")
            return None
        for key, value in values.items():
            text = self.text(check, value, values.value_line_of(key), f"{where}: remember {key}")
            if text is not None:
                remember.append((str(key), text))
        return StateSpec(name.strip(), ttl, tuple(remember))

    @staticmethod
    def flag(check: Checker, item: YamlMap, key: str, default: bool, where: str) -> bool:
        value = item.get(key, default)
        if not isinstance(value, bool):
            check.add(item.line_of(key), f"{where}: '{key}' must be true or false, not {type_name(value)}")
            return default
        return value


def compile_ruleset(
    rule_files: Sequence[SourceFile],
    template_files: Sequence[SourceFile] = (),
    vars: Mapping[str, Any] | None = None,
    platform: str = "miniprogram",
    templates_label: str = "templates/",
    previous: RuleSet | None = None,
    media: Mapping[str, Any] | None = None,
    windows: Mapping[str, Any] | None = None,
) -> RuleSet:
    """Compile everything, or raise RulesError listing every problem found. With `previous` (the rule set
    being replaced), templates whose source did not change reuse its compiled code. `windows` are bot.yaml's
    named time windows (bot/hours.py: each with `.condition` and `.text`)."""
    return run_steps(compile_steps(rule_files, template_files, vars, platform, templates_label, previous, media,
                                   windows))


def run_steps(steps: Generator[None, None, Any]) -> Any:
    """Run a step generator (compile_steps, reload.load_steps) to its end, all at once; return its value."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def compile_steps(
    rule_files: Sequence[SourceFile],
    template_files: Sequence[SourceFile] = (),
    vars: Mapping[str, Any] | None = None,
    platform: str = "miniprogram",
    templates_label: str = "templates/",
    previous: RuleSet | None = None,
    media: Mapping[str, Any] | None = None,
    windows: Mapping[str, Any] | None = None,
) -> Generator[None, None, RuleSet]:
    """compile_ruleset in small steps: it yields after the templates, before each rule file and each rule, and
    while indexing the rules (engine/index.py). A step is well under a millisecond of work, but for a file's
    YAML parse and one keyword automaton (a few milliseconds each), so that a server can build a new rule set
    on its event loop between requests."""
    compiler = _Compiler(template_files, platform, templates_label,
                         previous.compiled if previous is not None else None)
    compiler.media = dict(media or {})
    windows = windows or {}
    compiler.windows = MappingProxyType({name: window.condition for name, window in windows.items()})
    compiler.check_template_files(template_files)
    yield
    problems = compiler.problems
    ordered: list[tuple[int, int, int, Rule]] = []
    seen: dict[str, str] = {}
    fallbacks: tuple[Fallback, ...] | None = None
    previous_trees = previous.parsed if previous is not None else {}
    trees: dict[tuple[str, str], Any] = {}
    for file_index, source in enumerate(rule_files):
        yield
        check = Checker(source.name)
        key = (source.name, source.text)
        try:
            # an unchanged file's parse tree is reused (it is only ever read); it is compiled again
            data = previous_trees[key] if key in previous_trees else load_yaml(source.text, source.name)
        except YamlSyntaxError as exc:
            problems.append(exc.problem)
            continue
        trees[key] = data
        if data is None:
            continue
        if not isinstance(data, YamlMap):
            check.add(getattr(data, "line", 1), f"a rules file is a mapping with 'rules:' (and maybe "
                                                f"'fallback:'), not {type_name(data)}")
            problems.extend(check.problems)
            continue
        check.unknown_keys(data, FILE_KEYS)
        rules = data.get("rules", YamlList())
        if rules is None:
            rules = YamlList()
        if not isinstance(rules, YamlList):
            check.add(data.line_of("rules"), f"'rules' must be a list, not {type_name(rules)}")
            rules = YamlList()
        for position, item in enumerate(rules):
            yield
            line = rules.line_of(position)
            rule = compiler.rule(check, item, line, source.name)
            if rule is None:
                continue
            if rule.name in seen:
                check.add(line, f"rule '{rule.name}': the name is already used at {seen[rule.name]}")
                continue
            seen[rule.name] = rule.where
            ordered.append((-rule.priority, file_index, position, rule))
        if "fallback" in data:
            line = data.line_of("fallback")
            if fallbacks is not None:
                check.add(line, f"a second 'fallback' (the first is at {fallbacks[0].file}:{fallbacks[0].line})")
            else:
                fallbacks = compiler.fallbacks(check, data["fallback"], line, source.name)
        problems.extend(check.problems)
    if problems:
        raise RulesError(problems)
    ordered.sort(key=lambda entry: entry[:3])
    rules = tuple(entry[3] for entry in ordered)
    index = yield from index_steps(rules, previous.index if previous is not None else None)
    # what kefu check's warnings need (engine/lint.py computes them only when asked: not on every reload)
    usage = MappingProxyType({
        "template_names": {t.key: t.name for t in template_files}, "used_templates": compiler.used_templates,
        "includes": compiler.template_includes, "media": compiler.media, "used_media": compiler.used_media,
        "windows": compiler.windows, "platform": platform, "loops": tuple(compiler.loop_warnings)})
    return RuleSet(
        rules=rules,
        by_name=MappingProxyType({rule.name: rule for rule in rules}),
        index=index,
        usage=usage,
        fallbacks=fallbacks or (Fallback(),),
        uses_cooldown=any(o[3].cooldown for o in ordered),
        uses_state=any(r.state is not None or _reads_state(r.when) for r in (o[3] for o in ordered))
        or any(f.state is not None or (f.when is not None and _reads_state(f.when)) for f in fallbacks or ()),
        vars=MappingProxyType(dict(vars or {})),
        hours=MappingProxyType({name: window.text for name, window in windows.items()}),
        version=_version(rule_files, template_files, vars, compiler.media, compiler.windows),
        files=tuple(f.name for f in rule_files),
        templates=tuple(sorted(compiler.template_keys)),
        compiled=MappingProxyType(compiler.jinja.compiled),
        parsed=MappingProxyType(trees),
        jinja=tuple(compiler.jinja.templates),
    )


def _reads_state(condition: Any) -> bool:
    """Whether a condition (or one inside it) looks at the conversation state."""
    if isinstance(condition, StateIs):
        return True
    inner = getattr(condition, "conditions", None) or ((condition.condition,) if isinstance(condition, Not) else ())
    return any(_reads_state(c) for c in inner)


def _version(rule_files: Sequence[SourceFile], template_files: Sequence[SourceFile],
             vars: Mapping[str, Any] | None, media: Mapping[str, Any] | None = None,
             windows: Mapping[str, Condition] | None = None) -> str:
    """A digest of everything the rule set is made of: rule files, templates, vars, and the images (by their
    contents' digest, or why they cannot be sent), so that an image replaced under the same name is a change."""
    digest = hashlib.sha256()
    for kind, files in (("rules", rule_files), ("templates", template_files)):
        for f in files:
            for part in (kind, f.name, f.key, f.text):
                digest.update(part.encode("utf-8", "surrogatepass"))
                digest.update(b"\0")
    digest.update(repr(sorted((vars or {}).items(), key=lambda kv: str(kv[0]))).encode("utf-8"))
    if windows:  # bot.yaml's named windows: a changed window is a new rule set (a reload swaps it in)
        digest.update(repr(sorted(windows.items())).encode("utf-8"))
    for name, found in sorted((media or {}).items()):
        # not the file's path: instances installed in different folders must agree on the version
        for part in ("media", name, getattr(found, "digest", str(found))):
            digest.update(part.encode("utf-8", "surrogatepass"))
            digest.update(b"\0")
    return digest.hexdigest()[:10]
