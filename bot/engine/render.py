"""Jinja in the sandbox: the environment, compiled text pieces and the reply templates built from them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import BaseLoader, StrictUndefined, Template
from jinja2.sandbox import SandboxedEnvironment

from ..messages import MenuReply, Reply, TextReply

# The names every template sees.
CONTEXT_NAMES = ("message", "match", "vars", "now", "rule", "state")


def make_environment(loader: BaseLoader) -> SandboxedEnvironment:
    """One environment per rule set, its loader holding the whole templates folder compiled in memory:
    rendering (and `{% include %}`) never touches the disk, and a reload never mixes old and new templates."""
    return SandboxedEnvironment(
        loader=loader,
        undefined=StrictUndefined,
        autoescape=False,
        auto_reload=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,  # an included file keeps its last line break
        cache_size=0,  # the loader already holds every template compiled
    )


@dataclass(frozen=True, slots=True)
class Text:
    """A piece of reply text: a constant when it has no Jinja syntax, else a compiled template."""

    constant: str | None = None
    template: Template | None = None

    def render(self, context: Mapping[str, Any]) -> str:
        template = self.template
        if template is None:
            return self.constant or ""
        try:  # Template.render without its copy of the context
            return "".join(template.root_render_func(template.new_context(context)))
        except Exception:
            return template.environment.handle_exception()


def has_jinja(source: str) -> bool:
    return "{{" in source or "{%" in source or "{#" in source


class ReplyTemplate:
    """Renders to a Reply, or to None when the reply came out empty (so `{% if %}` can skip it)."""

    def render(self, context: Mapping[str, Any]) -> Reply | None:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class TextTemplate(ReplyTemplate):
    text: Text

    def render(self, context: Mapping[str, Any]) -> Reply | None:
        content = self.text.render(context).strip()
        return TextReply(content) if content else None


@dataclass(frozen=True, slots=True)
class FieldsTemplate(ReplyTemplate):
    """A reply made of named text fields (image, link, miniprogrampage, video, music, news, wxcard, …).
    When `skip_if_empty` names a field that renders empty, the reply is skipped."""

    reply_type: type[Reply]
    fields: tuple[tuple[str, Text | None], ...]
    skip_if_empty: str | None = None
    extra: tuple[tuple[str, Any], ...] = ()  # fixed values (e.g. a thumbnail file)

    def render(self, context: Mapping[str, Any]) -> Reply | None:
        values = {name: text.render(context).strip() if text is not None else None
                  for name, text in self.fields}
        if self.skip_if_empty and not values[self.skip_if_empty]:
            return None
        return self.reply_type(**values, **dict(self.extra))


@dataclass(frozen=True, slots=True)
class ConstantReply(ReplyTemplate):
    """A reply with nothing to render (e.g. an image file)."""

    reply: Reply

    def render(self, context: Mapping[str, Any]) -> Reply | None:
        return self.reply


@dataclass(frozen=True, slots=True)
class MenuTemplate(ReplyTemplate):
    head: Text
    options: tuple[tuple[Text, Text], ...]
    tail: Text

    def render(self, context: Mapping[str, Any]) -> Reply | None:
        options = tuple((i.render(context).strip(), c.render(context).strip()) for i, c in self.options)
        return MenuReply(self.head.render(context).strip(), options, self.tail.render(context).strip())


@dataclass(frozen=True, slots=True)
class ChoiceTemplate(ReplyTemplate):
    """One of several replies, by weight; the random number comes from the context (`_random`), so that
    decide stays a pure function of its inputs."""

    options: tuple[tuple[ReplyTemplate, float], ...]

    def render(self, context: Mapping[str, Any]) -> Reply | None:
        total = sum(weight for _, weight in self.options)
        point = context["_random"]() * total
        for option, weight in self.options:
            point -= weight
            if point < 0:
                return option.render(context)
        return self.options[-1][0].render(context)
