"""Compiling templates and `reply:` values. The base of the rule compiler in compile.py."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from ..errors import Problem
from ..messages import (
    OFFICIAL_ACCOUNT_KINDS,
    CardReply,
    ImageReply,
    LinkReply,
    MediaFile,
    MiniProgramPageReply,
    MusicReply,
    NewsReply,
    Reply,
    VideoReply,
    VoiceReply,
)
from ..yamlsrc import BlockText, Checker, YamlList, YamlMap, did_you_mean, type_name
from .budget import heavy_loops
from .render import (
    ChoiceTemplate,
    ConstantReply,
    FieldsTemplate,
    MenuTemplate,
    ReplyTemplate,
    Text,
    TextTemplate,
    has_jinja,
    make_environment,
)
from .templates import CONTEXT_NAMES, Compiled, CompiledLoader, Key, TemplateCompiler

# Kinds given by one value: `image: MEDIA_ID`.
SCALAR_KINDS: dict[str, tuple[type[Reply], str, str]] = {
    "image": (ImageReply, "media_id", "a media_id"),
    "voice": (VoiceReply, "media_id", "a media_id"),
    "wxcard": (CardReply, "card_id", "a card_id"),
}
# Kinds given by a mapping: YAML key (WeChat's name) -> (dataclass field, required).
MAPPING_KINDS: dict[str, tuple[type[Reply], dict[str, tuple[str, bool]]]] = {
    "link": (LinkReply, {"title": ("title", True), "description": ("description", False),
                         "url": ("url", True), "thumb_url": ("thumb_url", False)}),
    "miniprogrampage": (MiniProgramPageReply, {
        "title": ("title", True), "pagepath": ("pagepath", True),
        "thumb_media_id": ("thumb_media_id", False), "thumb": ("thumb_file", False), "appid": ("appid", False)}),
    "video": (VideoReply, {"media_id": ("media_id", True), "title": ("title", False),
                           "description": ("description", False),
                           "thumb_media_id": ("thumb_media_id", False)}),
    "music": (MusicReply, {"title": ("title", False), "description": ("description", False),
                           "musicurl": ("music_url", True), "hqmusicurl": ("hq_music_url", False),
                           "thumb_media_id": ("thumb_media_id", True)}),
    "news": (NewsReply, {"title": ("title", True), "description": ("description", False),
                         "url": ("url", True), "picurl": ("pic_url", False)}),
}
REPLY_KINDS = ("text", "template", *SCALAR_KINDS, *MAPPING_KINDS, "msgmenu", "choice")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")
MENU_KEYS = ("head_content", "list", "tail_content")


def _without_bom(text: str) -> str:
    """Windows Notepad saves "UTF-8" with a byte order mark: not part of the template (it would start every
    reply with an invisible U+FEFF, which str.strip() keeps). YAML skips it by itself."""
    return text.removeprefix("\ufeff")


class ReplyCompiler:
    def __init__(self, templates: Sequence[Any], platform: str, templates_label: str,
                 previous: Mapping[Key, Compiled] | None = None):
        self.platform = platform
        self.templates_label = templates_label
        self.template_keys = {t.key for t in templates}
        self.loader = CompiledLoader({t.key: _without_bom(t.text) for t in templates})
        self.env: SandboxedEnvironment = make_environment(self.loader)
        self.jinja = TemplateCompiler(self.env, previous)
        self.problems: list[Problem] = []
        self.media: dict[str, Any] = {}  # image files by name: MediaFile, or why one cannot be sent
        self._in_choice = False
        self.used_templates: set[str] = set()  # named by a rule, or included by something used
        self.template_includes: dict[str, frozenset[str]] = {}
        self.used_media: set[str] = set()
        self.windows: Mapping[str, Any] = {}  # bot.yaml's named time windows: what `{{ hours.NAME }}` may name
        self.loop_warnings: list[str] = []  # for kefu check (engine/lint.py): nested loops over large ranges

    # ---- templates -------------------------------------------------------------------------------

    def check_template_files(self, templates: Sequence[Any]) -> None:
        includes: dict[str, frozenset[str]] = {}
        for source in templates:
            check = Checker(source.name)
            try:
                template, compiled = self.jinja.compile(_without_bom(source.text), source.key)
            except TemplateSyntaxError as exc:
                check.add(exc.lineno, f"template syntax: {exc.message}")
            else:
                self._check_names(check, compiled, lambda n: n, "template")
                self._heavy_loops(check.filename, source.text, lambda n: n, "template")
                includes[source.key] = compiled.includes
                self.template_includes[source.key] = compiled.includes
                self.loader.templates[source.key] = template
            self.problems.extend(check.problems)
        names = {t.key: t.name for t in templates}
        for key, cycle in _include_cycles(includes):
            self.problems.append(Problem(names[key], None, "templates include each other in a circle: "
                                                           + " → ".join(cycle)))

    def _check_names(self, check: Checker, compiled: Compiled, line_of: Callable[[int], int], what: str) -> None:
        """Unknown names and missing templates; `line_of` turns a line of the template into a line of the file."""
        for name in sorted(compiled.names):
            if name not in CONTEXT_NAMES and name not in self.env.globals:
                check.add(line_of(compiled.name_lines.get(name, 1)),
                          f"{what} uses unknown name '{name}'{did_you_mean(name, CONTEXT_NAMES)}; templates see "
                          f"{', '.join(CONTEXT_NAMES)}")
        for window, window_line in compiled.hours:
            if window not in self.windows:
                named = f"bot.yaml names {', '.join(sorted(self.windows))}{did_you_mean(window, self.windows)}" \
                    if self.windows else "name windows under 'hours:' in bot.yaml"
                check.add(line_of(window_line), f"{what} uses hours.{window}, a time window bot.yaml does not "
                                                f"name; {named}")
        for refs, ref_line in compiled.required:
            if not any(ref in self.template_keys for ref in refs):
                named = " or ".join(f"'{ref}'" for ref in refs)
                check.add(line_of(ref_line), f"{what} includes {named}, not found in {self.templates_label}"
                                             f"{did_you_mean(refs[0], self.template_keys)}")

    def _heavy_loops(self, file: str, source: str, line_of: Callable[[int], int], what: str) -> None:
        if "for" in source:  # a second parse, for the templates with a loop only
            for line, warning in heavy_loops(self.env.parse(_without_bom(source))):
                self.loop_warnings.append(f"{file}:{line_of(line)}: {what}: {warning}")

    def text(self, check: Checker, value: Any, line: int, what: str) -> Text | None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            check.add(line, f"{what} must be text, not {type_name(value)}")
            return None
        if not has_jinja(value):
            return Text(constant=str(value))

        def line_of(template_line: int) -> int:
            """A `|` block's lines are the file's; any other text's line breaks are not (folded lines, `\\n`
            escapes): there, the text's own line."""
            return line + (template_line or 1) - 1 if isinstance(value, BlockText) else line

        try:
            template, compiled = self.jinja.compile(str(value))
        except TemplateSyntaxError as exc:  # also an unknown filter or test (TemplateAssertionError)
            check.add(line_of(exc.lineno), f"{what}: template syntax: {exc.message}")
            return None
        self._check_names(check, compiled, line_of, what)
        self.used_templates.update(compiled.includes)
        self._heavy_loops(check.filename, str(value), line_of, what)
        return Text(template=template, pieces=compiled.pieces)

    # ---- replies ---------------------------------------------------------------------------------

    def replies(self, check: Checker, value: Any, line: int,
                where: str) -> tuple[tuple[ReplyTemplate, ...], tuple[str, ...]]:
        """The compiled replies and their kinds (text, image, …), in order."""
        items = value if isinstance(value, YamlList) else [value]
        out: list[ReplyTemplate] = []
        kinds: list[str] = []
        for i, item in enumerate(items):
            item_line = items.line_of(i) if isinstance(items, YamlList) else line
            compiled = self.reply(check, item, item_line, where)
            if compiled is not None:
                out.append(compiled[0])
                kinds.append(compiled[1])
        if isinstance(value, YamlList) and not value:
            check.add(line, f"{where}: 'reply' is an empty list")
        return tuple(out), tuple(kinds)

    def reply(self, check: Checker, item: Any, line: int, where: str) -> tuple[ReplyTemplate, str] | None:
        if isinstance(item, str):
            text = self.text(check, item, line, f"{where}: reply")
            return (TextTemplate(text), "text") if text else None
        if not isinstance(item, YamlMap):
            check.add(line, f"{where}: a reply is text or a mapping with one of "
                            f"{', '.join(REPLY_KINDS)}, not {type_name(item)}")
            return None
        kinds = [k for k in item if k in REPLY_KINDS]
        check.unknown_keys(item, (*REPLY_KINDS, "weight") if self._in_choice else REPLY_KINDS, f"{where}: reply")
        if len(kinds) != 1:
            if not kinds and not any(k not in REPLY_KINDS for k in item):
                check.add(line, f"{where}: a reply needs one of {', '.join(REPLY_KINDS)}")
            elif len(kinds) > 1:
                check.add(line, f"{where}: a reply has one kind, not {' and '.join(kinds)} "
                                "(use a list for several replies)")
            return None
        kind = kinds[0]
        kind_line = item.line_of(kind)
        if kind in OFFICIAL_ACCOUNT_KINDS and self.platform != "official_account":
            check.add(kind_line, f"{where}: '{kind}' replies are for official accounts only "
                                 "(wechat.platform: official_account)")
            return None
        # text values are located where their text starts (`text: |` → the next line)
        line = item.value_line_of(kind) if kind in ("text", *SCALAR_KINDS) else kind_line
        compiled = self._reply_of_kind(check, kind, item[kind], line, where)
        return (compiled, kind) if compiled is not None else None

    def _reply_of_kind(self, check: Checker, kind: str, value: Any, line: int,
                       where: str) -> ReplyTemplate | None:
        if kind == "text":
            text = self.text(check, value, line, f"{where}: text")
            return TextTemplate(text) if text else None
        if kind == "template":
            return self.template_reply(check, value, line, where)
        if kind == "image" and isinstance(value, str) and value.strip().lower().endswith(IMAGE_SUFFIXES):
            media = self.media_file(check, value.strip(), line, f"{where}: image")
            return ConstantReply(ImageReply("", media)) if media is not None else None
        if kind in SCALAR_KINDS:
            reply_type, field, what = SCALAR_KINDS[kind]
            text = self.text(check, value, line, f"{where}: {kind} ({what})")
            return FieldsTemplate(reply_type, ((field, text),), skip_if_empty=field) if text else None
        if kind == "msgmenu":
            return self.menu(check, value, line, where)
        if kind == "choice":
            return self.choice(check, value, line, where)
        reply_type, spec = MAPPING_KINDS[kind]
        fields = self.fields(check, value, line, f"{where}: {kind}", spec)
        if fields is None:
            return None
        if kind == "miniprogrampage" and self.platform == "official_account" and fields["appid"] is None:
            check.add(line, f"{where}: miniprogrampage needs 'appid' on an official account")
            return None
        if kind == "miniprogrampage":
            thumb = fields.pop("thumb_file")
            thumb_id = fields["thumb_media_id"]
            if thumb is None and (thumb_id is None or not thumb_id.constant and thumb_id.template is None):
                check.add(line, f"{where}: miniprogrampage needs 'thumb_media_id' or 'thumb' (an image file)")
                return None
            if thumb is not None:
                media = self.media_file(check, thumb.constant or "", line, f"{where}: miniprogrampage thumb")
                if media is None:
                    return None
                return FieldsTemplate(reply_type, tuple(fields.items()), extra=(("thumb_file", media),))
        return FieldsTemplate(reply_type, tuple(fields.items()))

    def media_file(self, check: Checker, name: str, line: int, what: str) -> MediaFile | None:
        self.used_media.add(name)
        found = self.media.get(name)
        if isinstance(found, MediaFile):
            return found
        if found is None:
            check.add(line, f"{what}: {name!r} not found in the media or templates folder"
                            f"{did_you_mean(name, [k for k, v in self.media.items() if isinstance(v, MediaFile)])}")
        else:
            check.add(line, f"{what}: {name!r} {found}")
        return None

    def choice(self, check: Checker, value: Any, line: int, where: str) -> ReplyTemplate | None:
        """`choice:` a list of replies, one of which is sent; a mapping's `weight` (default 1) weighs it. `weight:
        0` keeps an alternative in the file but off (compiled and checked, never picked)."""
        if not isinstance(value, YamlList) or len(value) < 2:
            check.add(line, f"{where}: 'choice' is a list of at least two replies")
            return None
        options: list[tuple[ReplyTemplate, float]] = []
        self._in_choice = True
        try:
            for i, option in enumerate(value):
                option_line = value.line_of(i)
                weight = option.get("weight", 1) if isinstance(option, YamlMap) else 1
                if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight < float("inf"):
                    check.add(option_line, f"{where}: a choice's 'weight' is a number, 0 or more (0: never "
                                           "picked)")
                    continue
                compiled = self.reply(check, option, option_line, where)
                if compiled is not None:
                    options.append((compiled[0], float(weight)))
        finally:
            self._in_choice = False
        if len(options) != len(value):
            return None
        if not any(weight for _, weight in options):
            check.add(line, f"{where}: every alternative of this 'choice' has weight 0; give at least one a "
                            "weight above 0")
            return None
        return ChoiceTemplate(tuple(option for option in options if option[1]))  # the ones that can be picked

    def template_reply(self, check: Checker, value: Any, line: int, where: str) -> ReplyTemplate | None:
        if not isinstance(value, str) or not value.strip():
            check.add(line, f"{where}: 'template' must be a file name in {self.templates_label}")
            return None
        if value not in self.template_keys:
            check.add(line, f"{where}: template '{value}' not found in {self.templates_label}"
                            f"{did_you_mean(value, self.template_keys)}")
            return None
        self.used_templates.add(value)
        template = self.loader.templates.get(value)
        # a template file that did not compile is reported at its own file and line
        return TextTemplate(Text(template=template)) if template is not None else None

    def fields(self, check: Checker, value: Any, line: int, where: str,
               spec: dict[str, tuple[str, bool]]) -> dict[str, Text | None] | None:
        if not isinstance(value, YamlMap):
            check.add(line, f"{where} must be a mapping with {', '.join(spec)}")
            return None
        check.unknown_keys(value, spec, where)
        out: dict[str, Text | None] = {}
        ok = True
        for key, (field, required) in spec.items():
            if key not in value:
                if required:
                    check.add(line, f"{where} needs '{key}'")
                    ok = False
                out[field] = None if key in ("appid", "thumb") else Text(constant="")
                continue
            text = self.text(check, value[key], value.value_line_of(key), f"{where}: {key}")
            ok = ok and text is not None
            out[field] = text
        return out if ok else None

    def menu(self, check: Checker, value: Any, line: int, where: str) -> ReplyTemplate | None:
        what = f"{where}: msgmenu"
        if not isinstance(value, YamlMap):
            check.add(line, f"{what} must be a mapping with {', '.join(MENU_KEYS)}")
            return None
        check.unknown_keys(value, MENU_KEYS, what)
        head = self.text(check, value.get("head_content", ""), value.value_line_of("head_content"),
                         f"{what}: head_content")
        tail = self.text(check, value.get("tail_content", ""), value.value_line_of("tail_content"),
                         f"{what}: tail_content")
        options = value.get("list")
        if not isinstance(options, YamlList) or not options:
            check.add(value.line_of("list"), f"{what} needs a 'list' of options ({{id, content}})")
            return None
        compiled: list[tuple[Text, Text]] = []
        for i, option in enumerate(options):
            option_line = options.line_of(i)
            if not isinstance(option, YamlMap) or "id" not in option or "content" not in option:
                check.add(option_line, f"{what}: each option is a mapping with 'id' and 'content'")
                continue
            check.unknown_keys(option, ("id", "content"), f"{what}: option")
            option_id = self.text(check, option["id"], option.value_line_of("id"), f"{what}: id")
            content = self.text(check, option["content"], option.value_line_of("content"),
                                f"{what}: content")
            if option_id and content:
                compiled.append((option_id, content))
        if head is None or tail is None or len(compiled) != len(options):
            return None
        return MenuTemplate(head, tuple(compiled), tail)


def _include_cycles(includes: dict[str, frozenset[str]]) -> list[tuple[str, list[str]]]:
    """Each circle of includes once, as (a template in it, the circle from that template back to it).
    Iterative: a recursive closure would itself be a reference cycle left for the collector."""
    found: list[tuple[str, list[str]]] = []
    reported: set[frozenset[str]] = set()
    for start in sorted(includes):
        stack: list[list[str]] = [[start]]
        while stack:
            path = stack.pop()
            for ref in sorted(includes.get(path[-1], ()), reverse=True):
                if ref in path:
                    circle = path[path.index(ref):] + [ref]
                    if frozenset(circle) not in reported:
                        reported.add(frozenset(circle))
                        found.append((ref, circle))
                elif ref in includes:
                    stack.append([*path, ref])
    return found
