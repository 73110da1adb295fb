"""Jinja in the sandbox: the environment, compiled text pieces and the reply templates built from them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import DictLoader, StrictUndefined, Template
from jinja2.sandbox import SandboxedEnvironment

from ..messages import ImageReply, LinkReply, MiniProgramPageReply, Reply, TextReply

# The names every template sees.
CONTEXT_NAMES = ("message", "match", "vars", "now", "rule")


def make_environment(templates: Mapping[str, str]) -> SandboxedEnvironment:
    """One environment per rule set, holding the whole templates folder in memory: rendering (and
    `{% include %}`) never touches the disk, and a reload never mixes old and new templates."""
    return SandboxedEnvironment(
        loader=DictLoader(dict(templates)),
        undefined=StrictUndefined,
        autoescape=False,
        auto_reload=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,  # an included file keeps its last line break
        cache_size=-1,
    )


@dataclass(frozen=True, slots=True)
class Text:
    """A piece of reply text: a constant when it has no Jinja syntax, else a compiled template."""

    constant: str | None = None
    template: Template | None = None

    def render(self, context: Mapping[str, Any]) -> str:
        if self.template is None:
            return self.constant or ""
        return self.template.render(context)


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
class ImageTemplate(ReplyTemplate):
    media_id: Text

    def render(self, context: Mapping[str, Any]) -> Reply | None:
        media_id = self.media_id.render(context).strip()
        return ImageReply(media_id) if media_id else None


@dataclass(frozen=True, slots=True)
class LinkTemplate(ReplyTemplate):
    title: Text
    description: Text
    url: Text
    thumb_url: Text

    def render(self, context: Mapping[str, Any]) -> Reply | None:
        return LinkReply(
            title=self.title.render(context).strip(),
            description=self.description.render(context).strip(),
            url=self.url.render(context).strip(),
            thumb_url=self.thumb_url.render(context).strip(),
        )


@dataclass(frozen=True, slots=True)
class MiniProgramPageTemplate(ReplyTemplate):
    title: Text
    pagepath: Text
    thumb_media_id: Text
    appid: Text | None

    def render(self, context: Mapping[str, Any]) -> Reply | None:
        return MiniProgramPageReply(
            title=self.title.render(context).strip(),
            pagepath=self.pagepath.render(context).strip(),
            thumb_media_id=self.thumb_media_id.render(context).strip(),
            appid=self.appid.render(context).strip() if self.appid is not None else None,
        )
