"""Jinja in the sandbox: the environment, compiled text pieces and the reply templates built from them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import BaseLoader, StrictUndefined, Template

from ..messages import MenuReply, Reply, TextReply
from . import budget
from .templates import LazyTemplate, Pieces


def make_environment(loader: BaseLoader) -> budget.BudgetedEnvironment:
    """One environment per rule set, its loader holding the whole templates folder compiled in memory:
    rendering (and `{% include %}`) never touches the disk, and a reload never mixes old and new templates.
    The sandbox bounds each render's time and size (engine/budget.py)."""
    return budget.BudgetedEnvironment(
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
    template: Template | LazyTemplate | None = None
    pieces: Pieces | None = None  # the template as text and lookups, when that is all it is (substitutions)

    def render(self, context: Mapping[str, Any]) -> str:
        template = self.template
        if template is None:
            return self.constant or ""
        if self.pieces is not None:  # the lookups Jinja's code would make, without its context and frames
            try:
                return _substitute(self.pieces, context, template.environment.getattr)
            except Exception:  # pragma: no branch - the template itself raises the error, in Jinja's words
                pass
        try:  # Template.render without its copy of the context, within the render budget
            return budget.render(template, context)  # type: ignore[arg-type]
        except Exception:
            return template.environment.handle_exception()


def _substitute(pieces: Pieces, context: Mapping[str, Any], getattr: Callable[[Any, str], Any]) -> str:
    """What the template renders to: `getattr` is the sandbox's attribute lookup (the one Jinja's code calls:
    attributes, else items, refusing unsafe ones), and str() prints the value as Jinja does without
    autoescape; an undefined value raises when printed (StrictUndefined)."""
    out = []
    for piece in pieces:
        if type(piece) is str:
            out.append(piece)
            continue
        value = context[piece[0]]
        for attr in piece[1:]:
            value = getattr(value, attr)
        out.append(str(value))
    return "".join(out)


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
