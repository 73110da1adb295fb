"""Rule files and templates → one immutable RuleSet, or a RulesError that lists every problem as
`file:line: message`. Pure: the caller reads the files (see bot/reload.py) and passes their text in."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from jinja2 import TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

from ..errors import Problem, RulesError
from ..yamlsrc import Checker, YamlList, YamlMap, YamlSyntaxError, did_you_mean, load_yaml, type_name
from .conditions import AllOf, Condition, Equals, EventIs, Keywords, MsgTypeIs, Prefix, Regex
from .render import (
    CONTEXT_NAMES,
    ImageTemplate,
    LinkTemplate,
    MiniProgramPageTemplate,
    ReplyTemplate,
    Text,
    TextTemplate,
    has_jinja,
    make_environment,
)
from .ruleset import Fallback, Rule, RuleSet

FILE_KEYS = ("rules", "fallback")
RULE_KEYS = ("name", "when", "reply", "transfer", "priority")
FALLBACK_KEYS = ("reply", "transfer")
WHEN_KEYS = ("keywords", "equals", "prefix", "regex", "event", "msgtype")
REPLY_KINDS = ("text", "template", "image", "link", "miniprogrampage")
LINK_KEYS = {"title": True, "description": False, "url": True, "thumb_url": False}
PAGE_KEYS = {"title": True, "pagepath": True, "thumb_media_id": True, "appid": False}


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A file's text and the name it is shown by in errors (`rules/faq.yaml`).
    For templates, `key` is the name rules and `{% include %}` use (`shipping.j2`, `faq/refund.j2`)."""

    name: str
    text: str
    key: str = ""


class _Compiler:
    def __init__(self, templates: Sequence[SourceFile], platform: str, templates_label: str):
        self.platform = platform
        self.templates_label = templates_label
        self.template_keys = {t.key for t in templates}
        self.env: SandboxedEnvironment = make_environment({t.key: t.text for t in templates})
        self.problems: list[Problem] = []

    # ---- templates -------------------------------------------------------------------------------

    def check_template_files(self, templates: Sequence[SourceFile]) -> None:
        for source in templates:
            check = Checker(source.name)
            try:
                ast = self.env.parse(source.text, name=source.key)
                self._check_names(check, ast, 0, "template")
                self.env.get_template(source.key)  # compiles once; kept in the environment's cache
            except TemplateSyntaxError as exc:
                check.add(exc.lineno, f"template syntax: {exc.message}")
            self.problems.extend(check.problems)

    def _check_names(self, check: Checker, ast: Any, line: int, what: str) -> None:
        for name in sorted(meta.find_undeclared_variables(ast)):
            if name not in CONTEXT_NAMES and name not in self.env.globals:
                check.add(line or None, f"{what} uses unknown name '{name}'"
                                        f"{did_you_mean(name, CONTEXT_NAMES)}; templates see "
                                        f"{', '.join(CONTEXT_NAMES)}")
        for ref in meta.find_referenced_templates(ast):
            if ref is not None and ref not in self.template_keys:
                check.add(line or None, f"{what} includes '{ref}', not found in {self.templates_label}"
                                        f"{did_you_mean(ref, self.template_keys)}")

    def text(self, check: Checker, value: Any, line: int, what: str) -> Text | None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            check.add(line, f"{what} must be text, not {type_name(value)}")
            return None
        if not has_jinja(value):
            return Text(constant=value)
        try:
            ast = self.env.parse(value)
        except TemplateSyntaxError as exc:
            check.add(line + (exc.lineno or 1) - 1, f"{what}: template syntax: {exc.message}")
            return None
        self._check_names(check, ast, line, what)
        return Text(template=self.env.from_string(value))

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
            elif key == "regex":
                patterns = []
                for i, source in enumerate(values):
                    try:
                        patterns.append(re.compile(source))
                    except re.error as exc:
                        regex_line = when[key].line_of(i) if isinstance(when[key], YamlList) else key_line
                        check.add(regex_line, f"{where}: bad regex {source!r}: {exc.msg}"
                                              f" at position {exc.pos}")
                conditions.append(Regex(tuple(patterns)))
        if len(check.problems) > before:
            return None
        return conditions[0] if len(conditions) == 1 else AllOf(tuple(conditions))

    def replies(self, check: Checker, value: Any, line: int, where: str) -> tuple[ReplyTemplate, ...]:
        items = value if isinstance(value, YamlList) else [value]
        out: list[ReplyTemplate] = []
        for i, item in enumerate(items):
            item_line = items.line_of(i) if isinstance(items, YamlList) else line
            reply = self.reply(check, item, item_line, where)
            if reply is not None:
                out.append(reply)
        if isinstance(value, YamlList) and not value:
            check.add(line, f"{where}: 'reply' is an empty list")
        return tuple(out)

    def reply(self, check: Checker, item: Any, line: int, where: str) -> ReplyTemplate | None:
        if isinstance(item, str):
            text = self.text(check, item, line, f"{where}: reply")
            return TextTemplate(text) if text else None
        if not isinstance(item, YamlMap):
            check.add(line, f"{where}: a reply is text or a mapping with one of "
                            f"{', '.join(REPLY_KINDS)}, not {type_name(item)}")
            return None
        kinds = [k for k in item if k in REPLY_KINDS]
        check.unknown_keys(item, REPLY_KINDS, f"{where}: reply")
        if len(kinds) != 1:
            if not kinds and not any(k not in REPLY_KINDS for k in item):
                check.add(line, f"{where}: a reply needs one of {', '.join(REPLY_KINDS)}")
            elif len(kinds) > 1:
                check.add(line, f"{where}: a reply has one kind, not {' and '.join(kinds)} "
                                "(use a list for several replies)")
            return None
        kind = kinds[0]
        value, kind_line = item[kind], item.line_of(kind)
        if kind == "text":
            text = self.text(check, value, kind_line, f"{where}: text")
            return TextTemplate(text) if text else None
        if kind == "template":
            return self.template_reply(check, value, kind_line, where)
        if kind == "image":
            media_id = self.text(check, value, kind_line, f"{where}: image (a media_id)")
            return ImageTemplate(media_id) if media_id else None
        fields_spec = LINK_KEYS if kind == "link" else PAGE_KEYS
        fields = self.fields(check, value, kind_line, f"{where}: {kind}", fields_spec)
        if fields is None:
            return None
        if kind == "link":
            return LinkTemplate(**fields)
        if self.platform == "official_account" and fields["appid"] is None:
            check.add(kind_line, f"{where}: miniprogrampage needs 'appid' on an official account")
            return None
        return MiniProgramPageTemplate(**fields)

    def template_reply(self, check: Checker, value: Any, line: int, where: str) -> ReplyTemplate | None:
        if not isinstance(value, str) or not value.strip():
            check.add(line, f"{where}: 'template' must be a file name in {self.templates_label}")
            return None
        if value not in self.template_keys:
            check.add(line, f"{where}: template '{value}' not found in {self.templates_label}"
                            f"{did_you_mean(value, self.template_keys)}")
            return None
        try:
            return TextTemplate(Text(template=self.env.get_template(value)))
        except TemplateSyntaxError:
            return None  # reported at the template's own file and line

    def fields(self, check: Checker, value: Any, line: int, where: str,
               spec: Mapping[str, bool]) -> dict[str, Text | None] | None:
        if not isinstance(value, YamlMap):
            check.add(line, f"{where} must be a mapping with {', '.join(spec)}")
            return None
        check.unknown_keys(value, spec, where)
        out: dict[str, Text | None] = {}
        ok = True
        for key, required in spec.items():
            if key not in value:
                if required:
                    check.add(line, f"{where} needs '{key}'")
                    ok = False
                out[key] = None if key == "appid" else Text(constant="")
                continue
            text = self.text(check, value[key], value.line_of(key), f"{where}: {key}")
            ok = ok and text is not None
            out[key] = text
        return out if ok else None

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
        replies = self.replies(check, item["reply"], item.line_of("reply"), where) if "reply" in item else ()
        transfer = self.flag(check, item, "transfer", False, where)
        priority = item.get("priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int):
            check.add(item.line_of("priority"), f"{where}: 'priority' must be a whole number")
            priority = 0
        if "reply" not in item and not transfer:
            check.add(line, f"{where}: does nothing; give it a 'reply' or 'transfer: true'")
        if when is None:
            return None
        return Rule(name=name, file=file, line=line, priority=priority, when=when,
                    replies=replies, transfer=transfer)

    def fallback(self, check: Checker, item: Any, line: int, file: str) -> Fallback | None:
        if not isinstance(item, YamlMap):
            check.add(line, "'fallback' must be a mapping with 'reply' and/or 'transfer'")
            return None
        check.unknown_keys(item, FALLBACK_KEYS, "fallback")
        replies = self.replies(check, item["reply"], item.line_of("reply"), "fallback") \
            if "reply" in item else ()
        transfer = self.flag(check, item, "transfer", "reply" not in item, "fallback")
        if "reply" not in item and not transfer:
            check.add(line, "fallback: does nothing; give it a 'reply' or 'transfer: true'")
        return Fallback(replies=replies, transfer=transfer, file=file, line=line)

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
) -> RuleSet:
    """Compile everything, or raise RulesError listing every problem found."""
    compiler = _Compiler(template_files, platform, templates_label)
    compiler.check_template_files(template_files)
    problems = compiler.problems
    ordered: list[tuple[int, int, int, Rule]] = []
    seen: dict[str, str] = {}
    fallback: Fallback | None = None
    for file_index, source in enumerate(rule_files):
        check = Checker(source.name)
        try:
            data = load_yaml(source.text, source.name)
        except YamlSyntaxError as exc:
            problems.append(exc.problem)
            continue
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
