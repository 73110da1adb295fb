"""Templates that only put values into text (`您的订单 {{ match.order }} 已发货`) render without Jinja's
machinery: the output, and every error, must be exactly what Jinja gives."""

from __future__ import annotations

from datetime import datetime
from types import MappingProxyType
from zoneinfo import ZoneInfo

import pytest
from jinja2 import DictLoader, Template

from bot.engine.render import Text, make_environment
from bot.engine.templates import LazyTemplate, TemplateCompiler, release
from bot.protocol.wire import message_from_fields

MESSAGE = message_from_fields(MappingProxyType({"FromUserName": "oUser", "ToUserName": "gh", "MsgType": "text",
                                                "Content": "我的快递", "MsgId": "123", "CreateTime": "1700000000"}))
CONTEXT = {"message": MESSAGE, "match": {"order": "A-1", "n": 3, "none": None, "items": "x"},
           "vars": {"shop": "小店", "nested": {"tel": "400-1"}, "_hidden": "h"},
           "now": datetime(2026, 12, 1, 10, 5, tzinfo=ZoneInfo("Asia/Shanghai")),
           "rule": {"name": "r", "file": "rules/a.yaml", "line": 3, "priority": None},
           "state": {"name": "none"}, "_random": lambda: 0.5}

SUBSTITUTIONS = [
    "单号 {{ message.msg_id }}。",
    "{{ message.content }}",
    "{{match.order}}-{{ match.n }}-{{ match.none }}",
    "{{ vars.shop }} 电话 {{ vars.nested.tel }}\n",
    "{{ now.year }}年{{ now.month }}月 {{ now }}",
    "规则 {{ rule.name }} 在 {{ rule.file }}:{{ rule.line }} {{ rule.priority }}",
    "{{ state.name }} {{ match }} {{ vars.nested }}",
    "{{ match.items }}",  # a dict's method wins over its key, as in Jinja
    "a\r\nb {{ match.order }}\r\n",  # line breaks as Jinja's lexer writes them
    # errors: undefined, unsafe, missing
    "{{ match.missing }}",
    "{{ vars.nested.missing.deeper }}",
    "{{ message._fields }}",
    "{{ vars._hidden }}",
    "{{ message.__class__ }}",
    "{{ now.__class__.__mro__ }}",
    "{{ match.order.__class__ }}",
]
NOT_SUBSTITUTIONS = ["{{ match.order | upper }}", "{{ match['order'] }}", "{% if match.n %}x{% endif %}",
                     "{{ range(3) | list }}", "{{ match.order ~ 'x' }}", "{{ 'lit' }}", "{{ message.content[:2] }}",
                     "{{ namespace }}"]


def compiler() -> TemplateCompiler:
    return TemplateCompiler(make_environment(DictLoader({})))


def outcome(text: Text, context: dict) -> tuple[str, str]:
    try:
        return "ok", text.render(context)
    except Exception as exc:  # noqa: BLE001 - the error's type and words are what is compared
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("source", SUBSTITUTIONS)
def test_a_substitution_renders_and_fails_exactly_as_jinja_does(source):
    template, compiled = compiler().compile(source)
    assert compiled.pieces is not None  # the quick way is the one being tested
    # the lazy template's code, generated on demand, and a template compiled the usual way
    eager = make_environment(DictLoader({})).from_string(source)
    quick, lazy, jinja = Text(template=template, pieces=compiled.pieces), Text(template=template), Text(template=eager)
    assert outcome(quick, CONTEXT) == outcome(lazy, CONTEXT) == outcome(jinja, CONTEXT)
    partial = {k: v for k, v in CONTEXT.items() if k != "match"}  # a context without a name: Jinja's error
    assert outcome(quick, partial) == outcome(lazy, partial) == outcome(jinja, partial)


def test_an_inline_substitution_generates_its_code_only_when_jinja_must_speak():
    env = make_environment(DictLoader({}))
    first = TemplateCompiler(env)
    template, compiled = first.compile("单号 {{ match.order }}")
    assert isinstance(template, LazyTemplate) and compiled.code is None
    text = Text(template=template, pieces=compiled.pieces)
    assert text.render(CONTEXT) == "单号 A-1"
    assert template._template is None  # rendered without Jinja's code: none was made
    assert outcome(text, {**CONTEXT, "match": {}}) == ("UndefinedError", "'dict object' has no attribute 'order'")
    made = template._template
    assert made is not None and template.real() is made  # made once, for the error, and kept
    # a reload reuses the compile result: still lazy, and a template of its own
    again, reused = TemplateCompiler(env, first.compiled).compile("单号 {{ match.order }}")
    assert reused is compiled and isinstance(again, LazyTemplate) and again._template is None
    release([*first.templates, again])  # the generated template's cycles are broken; one never generated is skipped
    assert made.root_render_func.__globals__ == {} and again._template is None


def test_template_files_and_templates_with_more_than_substitutions_are_compiled_at_once():
    compiler_ = compiler()
    for source, name in (("单号 {{ match.order }}", "order.j2"), ("{{ match.order | upper }}", None)):
        template, compiled = compiler_.compile(source, name)
        assert isinstance(template, Template) and compiled.code is not None


@pytest.mark.parametrize("source", NOT_SUBSTITUTIONS)
def test_anything_more_than_substitution_is_left_to_jinja(source):
    assert compiler().compile(source)[1].pieces is None


def test_the_substitutions_render_what_they_say():
    template, compiled = compiler().compile("您的快递已发出，单号 {{ message.msg_id }}，{{ vars.shop }}")
    assert Text(template=template, pieces=compiled.pieces).render(CONTEXT) == "您的快递已发出，单号 123，小店"
