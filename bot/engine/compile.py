"""Rule files and templates → one immutable RuleSet, or a RulesError that lists every problem as
`file:line: message`. Pure: the caller reads the files (see bot/reload.py) and passes their text in."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..errors import RulesError
from ..messages import PASSIVE_KINDS
from ..yamlsrc import Checker, YamlList, YamlMap, YamlSyntaxError, load_yaml, type_name
from .conditions import AllOf, Condition, Equals, EventIs, EventKey, Keywords, MsgTypeIs, Prefix, Regex
from .replies import ReplyCompiler
from .ruleset import Fallback, Rule, RuleSet

FILE_KEYS = ("rules", "fallback")
ACTION_KEYS = ("reply", "transfer", "via", "kf_account", "send_as")
RULE_KEYS = ("name", "when", "priority", *ACTION_KEYS)
FALLBACK_KEYS = ACTION_KEYS
WHEN_KEYS = ("keywords", "equals", "prefix", "regex", "event", "msgtype", "event_key")
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

    def strings(self, check: Checker, value: Any, line: int, what: str) -> tuple[str, ...] | None:
        items = value if isinstance(value, list) else [value]
        out: list[str] = []
        before = len(check.problems)
        for i, item in enumerate(items):
            item_line = value.line_of(i) if isinstance(value, YamlList) else line
            if isinstance(item, bool) or not isinstance(item, str):
                hint = " (put it in quotes)" if isinstance(item, int | float | bool) else ""
                check.add(item_line, f"{what} must be text, not {type_name(item)}{hint}")
            elif not item.strip():
                check.add(item_line, f"{what} must not be empty")
            else:
                out.append(item)
        if not out and len(check.problems) == before:
            check.add(line, f"{what} needs at least one value")
        return tuple(out) if out else None

    def when(self, check: Checker, when: Any, line: int, where: str) -> Condition | None:
        if not isinstance(when, YamlMap) or not when:
            check.add(line, f"{where}: 'when' must be a mapping of conditions ({', '.join(WHEN_KEYS)})")
            return None
        before = len(check.problems)
        check.unknown_keys(when, WHEN_KEYS, where)
        conditions: list[Condition] = []
        for key in WHEN_KEYS:
            if key not in when:
                continue
            key_line = when.line_of(key)
            if key == "event_key" and isinstance(when[key], YamlMap):
                conditions.append(self.event_key_pattern(check, when[key], key_line, where))
                continue
            values = self.strings(check, when[key], key_line, f"{where}: '{key}'")
            if values is None:
                continue
            if key == "keywords":
                conditions.append(Keywords(values))
            elif key == "equals":
                conditions.append(Equals(frozenset(v.strip() for v in values)))
            elif key == "prefix":
                conditions.append(Prefix(tuple(v.strip() for v in values)))
            elif key == "event":
                conditions.append(EventIs(frozenset(v.strip().lower() for v in values)))
            elif key == "msgtype":
                conditions.append(MsgTypeIs(frozenset(v.strip().lower() for v in values)))
            elif key == "event_key":
                conditions.append(EventKey(frozenset(v.strip() for v in values)))
            elif key == "regex":
                conditions.append(Regex(self.patterns(check, values, when[key], key_line, where)))
        if len(check.problems) > before:
            return None
        return conditions[0] if len(conditions) == 1 else AllOf(tuple(conditions))

    @staticmethod
    def patterns(check: Checker, values: tuple[str, ...], node: Any, line: int,
                 where: str) -> tuple[re.Pattern[str], ...]:
        out = []
        for i, source in enumerate(values):
            try:
                out.append(re.compile(source))
            except re.error as exc:
                check.add(node.line_of(i) if isinstance(node, YamlList) else line,
                          f"{where}: bad regex {source!r}: {exc.msg} at position {exc.pos}")
        return tuple(out)

    def event_key_pattern(self, check: Checker, spec: YamlMap, line: int, where: str) -> Condition:
        check.unknown_keys(spec, ("regex",), f"{where}: event_key")
        values = self.strings(check, spec.get("regex"), spec.line_of("regex"), f"{where}: event_key regex")
        return EventKey(frozenset(), self.patterns(check, values or (), spec.get("regex"), line, where))

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
        if "when" not in item:
            check.add(line, f"{where}: needs 'when' (use 'fallback:' for the default answer)")
            when = None
        else:
            when = self.when(check, item["when"], item.line_of("when"), where)
        action = self.action(check, item, line, where, default_transfer=False)
        priority = item.get("priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int):
            check.add(item.line_of("priority"), f"{where}: 'priority' must be a whole number")
            priority = 0
        if when is None or action is None:
            return None
        return Rule(name=name, file=file, line=line, priority=priority, when=when, **action)

    def fallback(self, check: Checker, item: Any, line: int, file: str) -> Fallback | None:
        if not isinstance(item, YamlMap):
            check.add(line, "'fallback' must be a mapping with 'reply' and/or 'transfer'")
            return None
        check.unknown_keys(item, FALLBACK_KEYS, "fallback")
        action = self.action(check, item, line, "fallback", default_transfer="reply" not in item)
        return Fallback(file=file, line=line, **action) if action is not None else None

    def action(self, check: Checker, item: YamlMap, line: int, where: str,
               default_transfer: bool) -> dict[str, Any] | None:
        """What a rule (or the fallback) does: replies, transfer, and how the replies are delivered."""
        before = len(check.problems)
        replies, kinds = self.replies(check, item["reply"], item.value_line_of("reply"), where) \
            if "reply" in item else ((), ())
        transfer = self.flag(check, item, "transfer", default_transfer, where)
        if "reply" not in item and not transfer:
            check.add(line, f"{where}: does nothing; give it a 'reply' or 'transfer: true'")
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
                "kf_account": names["kf_account"], "send_as": names["send_as"]}

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
) -> RuleSet:
    """Compile everything, or raise RulesError listing every problem found. With `previous` (the rule set
    being replaced), templates whose source did not change reuse its compiled code."""
    compiler = _Compiler(template_files, platform, templates_label,
                         previous.compiled if previous is not None else None)
    compiler.check_template_files(template_files)
    problems = compiler.problems
    ordered: list[tuple[int, int, int, Rule]] = []
    seen: dict[str, str] = {}
    fallback: Fallback | None = None
    previous_trees = previous.parsed if previous is not None else {}
    trees: dict[tuple[str, str], Any] = {}
    for file_index, source in enumerate(rule_files):
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
            if fallback is not None:
                check.add(line, f"a second 'fallback' (the first is at {fallback.file}:{fallback.line})")
            else:
                fallback = compiler.fallback(check, data["fallback"], line, source.name)
        problems.extend(check.problems)
    if problems:
        raise RulesError(problems)
    ordered.sort(key=lambda entry: entry[:3])
    return RuleSet(
        rules=tuple(entry[3] for entry in ordered),
        fallback=fallback or Fallback(),
        vars=MappingProxyType(dict(vars or {})),
        version=_version(rule_files, template_files, vars),
        files=tuple(f.name for f in rule_files),
        templates=tuple(sorted(compiler.template_keys)),
        compiled=MappingProxyType(compiler.jinja.compiled),
        parsed=MappingProxyType(trees),
        jinja=tuple(compiler.jinja.templates),
    )


def _version(rule_files: Sequence[SourceFile], template_files: Sequence[SourceFile],
             vars: Mapping[str, Any] | None) -> str:
    digest = hashlib.sha256()
    for kind, files in (("rules", rule_files), ("templates", template_files)):
        for f in files:
            for part in (kind, f.name, f.key, f.text):
                digest.update(part.encode("utf-8", "surrogatepass"))
                digest.update(b"\0")
    digest.update(repr(sorted((vars or {}).items(), key=lambda kv: str(kv[0]))).encode("utf-8"))
    return digest.hexdigest()[:10]
