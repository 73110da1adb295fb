"""bot.engine.compile_ruleset: inline YAML and templates → RuleSet, or every problem as
`file:line: message`."""

from __future__ import annotations

from typing import Any

import pytest

from bot.engine import Fallback, RuleSet, SourceFile, compile_ruleset
from bot.errors import RulesError, SourceError


def compile_(rules: dict[str, str], templates: dict[str, str] | None = None, **kw: Any) -> RuleSet:
    return compile_ruleset(
        [SourceFile(name=name, text=text) for name, text in rules.items()],
        [SourceFile(name=f"templates/{key}", text=text, key=key) for key, text in (templates or {}).items()],
        **kw,
    )


def problems(rules: dict[str, str], templates: dict[str, str] | None = None, **kw: Any) -> list[str]:
    with pytest.raises(RulesError) as info:
        compile_(rules, templates, **kw)
    return [str(p) for p in info.value.problems]


def rule(body: str, name: str = "r1") -> str:
    """One rule named `name` in a rules file; `body` is the rule's keys, indented by 4."""
    return f"rules:\n  - name: {name}\n{body}"


A = "rules/a.yaml"

# (id, rules files, templates, compile kwargs, the one problem expected — a substring starting at file:line)
BROKEN: list[tuple[str, dict[str, str], dict[str, str], dict[str, Any], str]] = [
    ("yaml-syntax",
     {A: "rules:\n  - name: x\n    when: [\n"}, {}, {},
     "rules/a.yaml:3: YAML syntax:"),  # the unclosed [ is on the last line, 3
    ("yaml-syntax-tab",
     {A: "rules:\n  - name: x\n\t  when: {}\n"}, {}, {},
     "rules/a.yaml:3: YAML syntax:"),
    ("unknown-rule-key",
     {A: rule("    when:\n      equals: a\n    replay: hi\n    transfer: true\n")}, {}, {},
     "rules/a.yaml:5: rule 'r1': unknown key 'replay' (did you mean 'reply'?)"),
    ("unknown-when-key-keyword",
     {A: rule("    when:\n      keyword: [发货]\n    reply: hi\n")}, {}, {},
     "rules/a.yaml:4: rule 'r1': unknown key 'keyword' (did you mean 'keywords'?)"),
    ("unknown-when-key",
     {A: rule("    when:\n      equals: a\n      sender: b\n    reply: hi\n")}, {}, {},
     "rules/a.yaml:5: rule 'r1': unknown key 'sender'"),
    ("keyword-number-inline-list",
     {A: rule("    when:\n      keywords: [发货, 12345]\n    reply: hi\n")}, {}, {},
     "rules/a.yaml:4: rule 'r1': 'keywords' must be text, not a number (put it in quotes)"),
    ("keyword-number-block-list",
     {A: rule("    when:\n      keywords:\n        - 发货\n        - 3.5\n    reply: hi\n")}, {}, {},
     "rules/a.yaml:6: rule 'r1': 'keywords' must be text, not a number (put it in quotes)"),
    ("equals-number",
     {A: rule("    when:\n      equals: 110\n    reply: hi\n")}, {}, {},
     "rules/a.yaml:4: rule 'r1': 'equals' must be text, not a number (put it in quotes)"),
    ("empty-keyword",
     {A: rule("    when:\n      keywords: ['  ']\n    reply: hi\n")}, {}, {},
     "rules/a.yaml:4: rule 'r1': 'keywords' must not be empty"),
    ("bad-regex",
     {A: rule("    when:\n      regex: '(?P<order>\\d+'\n    reply: hi\n")}, {}, {},
     "rules/a.yaml:4: rule 'r1': bad regex '(?P<order>\\\\d+': missing ), unterminated subpattern"),
    ("bad-regex-in-list",
     {A: rule("    when:\n      regex:\n        - 'ok'\n        - '[unclosed'\n    reply: hi\n")}, {}, {},
     "rules/a.yaml:6: rule 'r1': bad regex '[unclosed'"),
    ("missing-template",
     {A: rule("    when:\n      equals: a\n    reply:\n      template: shiping.j2\n")},
     {"shipping.j2": "x"}, {"templates_label": "conf/templates/"},
     "rules/a.yaml:6: rule 'r1': template 'shiping.j2' not found in conf/templates/ "
     "(did you mean 'shipping.j2'?)"),
    ("missing-template-default-label",
     {A: rule("    when:\n      equals: a\n    reply:\n      template: nope.j2\n")}, {}, {},
     "rules/a.yaml:6: rule 'r1': template 'nope.j2' not found in templates/"),
    ("template-file-syntax",
     {A: rule("    when:\n      equals: a\n    reply:\n      template: t.j2\n")},
     {"t.j2": "第一行\n{% if message.content %}\n第三行\n"}, {},
     "templates/t.j2:3: template syntax: Unexpected end of template"),
    ("template-file-syntax-middle",
     {A: rule("    when:\n      equals: a\n    reply:\n      template: t.j2\n")},
     {"t.j2": "one\ntwo {{ vars.x }\nthree\n"}, {},
     "templates/t.j2:2: template syntax:"),
    ("template-file-unknown-filter",
     {A: rule("    when:\n      equals: a\n    reply:\n      template: t.j2\n")},
     {"t.j2": "ok\n{{ message.content | shout }}\n"}, {},
     "templates/t.j2:2: template syntax: No filter named 'shout'"),
    ("inline-reply-syntax",
     {A: rule("    when:\n      equals: a\n    reply: 'hello {{ oops'\n")}, {}, {},
     "rules/a.yaml:5: rule 'r1': reply: template syntax:"),
    ("inline-text-syntax",
     {A: rule("    when:\n      equals: a\n    reply:\n      - text: ok\n"
              "      - text: '{% endif %}'\n")}, {}, {},
     "rules/a.yaml:7: rule 'r1': text: template syntax: Encountered unknown tag 'endif'"),
    ("unknown-variable",
     {A: rule("    when:\n      regex: '(?P<n>\\d+)'\n    reply: '单号 {{ mach.n }}'\n")}, {}, {},
     "rules/a.yaml:5: rule 'r1': reply uses unknown name 'mach' (did you mean 'match'?); "
     "templates see message, match, vars, now, rule"),
    ("unknown-variable-in-text",
     {A: rule("    when:\n      equals: a\n    reply:\n      text: '{{ var.shop }}'\n")}, {}, {},
     "rules/a.yaml:6: rule 'r1': text uses unknown name 'var' (did you mean 'vars'?)"),
    ("unknown-variable-in-template-file",
     {A: rule("    when:\n      equals: a\n    reply:\n      template: t.j2\n")},
     {"t.j2": "您好\n\n{{ mesage.content }}"}, {},
     "templates/t.j2:3: template uses unknown name 'mesage' (did you mean 'message'?)"),
    ("unknown-variable-in-block-reply",  # a `|` block's lines are the file's
     {A: rule("    when:\n      equals: a\n    reply: |\n      您好\n      {{ mesage }}\n")}, {}, {},
     "rules/a.yaml:7: rule 'r1': reply uses unknown name 'mesage'"),
    ("syntax-in-block-text",
     {A: rule("    when:\n      equals: a\n    reply:\n      - text: |\n          您好\n\n          {{ x }\n")}, {}, {},
     "rules/a.yaml:9: rule 'r1': text: template syntax:"),
    ("syntax-in-double-quoted-reply",  # \n escapes are not lines of the file: the reply's own line, not rule r2's
     {A: rule('    when:\n      equals: a\n    reply: "您好\\n请问\\n{{ x }"\n')
      + "  - name: r2\n    when:\n      equals: b\n    reply: hi\n"}, {}, {},
     "rules/a.yaml:5: rule 'r1': reply: template syntax:"),
    ("unknown-variable-in-folded-reply",  # `>` folds the lines into one: the reply's own line
     {A: rule("    when:\n      equals: a\n    reply: >\n      您好\n\n      请问\n\n      {{ mesage }}\n")
      + "  - name: r2\n    when:\n      equals: b\n    reply: hi\n"}, {}, {},
     "rules/a.yaml:6: rule 'r1': reply uses unknown name 'mesage'"),
    ("include-missing-inline",
     {A: rule("    when:\n      equals: a\n    reply: 'hi {% include \"_footer.j2\" %}'\n")},
     {"_footr.j2": "x"}, {},
     "rules/a.yaml:5: rule 'r1': reply includes '_footer.j2', not found in templates/ "
     "(did you mean '_footr.j2'?)"),
    ("include-missing-in-template",
     {A: rule("    when:\n      equals: a\n    reply:\n      template: t.j2\n")},
     {"t.j2": "hi\n{% include 'gone.j2' %}\n"}, {},
     "templates/t.j2:2: template includes 'gone.j2', not found in templates/"),
    ("include-missing-one-of-a-list",
     {A: rule("    when:\n      equals: a\n    reply:\n      template: t.j2\n")},
     {"t.j2": "hi\n\n{% include ['a.j2', 'b.j2'] %}\n"}, {},
     "templates/t.j2:3: template includes 'a.j2' or 'b.j2', not found in templates/"),
    ("duplicate-name",
     {A: rule("    when:\n      equals: a\n    reply: hi\n")
      + "  - name: r1\n    when:\n      equals: b\n    reply: ho\n"}, {}, {},
     "rules/a.yaml:6: rule 'r1': the name is already used at rules/a.yaml:2"),
    ("duplicate-name-across-files",
     {A: rule("    when:\n      equals: a\n    reply: hi\n"),
      "rules/b.yaml": "# b\n" + rule("    when:\n      equals: b\n    reply: ho\n")}, {}, {},
     "rules/b.yaml:3: rule 'r1': the name is already used at rules/a.yaml:2"),
    ("second-fallback",
     {A: "rules: []\nfallback:\n  transfer: true\n",
      "rules/b.yaml": "rules: []\n\nfallback:\n  reply: 你好\n"}, {}, {},
     "rules/b.yaml:3: a second 'fallback' (the first is at rules/a.yaml:2)"),
    ("rule-without-when",
     {A: rule("    reply: hi\n")}, {}, {},
     "rules/a.yaml:2: rule 'r1': needs 'when'"),
    ("empty-when",
     {A: rule("    when: {}\n    reply: hi\n")}, {}, {},
     "rules/a.yaml:3: rule 'r1': 'when' must be a mapping of conditions"),
    ("rule-does-nothing",
     {A: rule("    when:\n      equals: a\n")}, {}, {},
     "rules/a.yaml:2: rule 'r1': does nothing; give it a 'reply', 'transfer: true' or a state change"),
    ("rule-transfer-false-does-nothing",
     {A: rule("    when:\n      equals: a\n    transfer: false\n")}, {}, {},
     "rules/a.yaml:2: rule 'r1': does nothing"),
    ("rule-without-name",
     {A: "rules:\n  - when:\n      equals: a\n    reply: hi\n"}, {}, {},
     "rules/a.yaml:2: a rule needs a 'name'"),
    ("reply-two-kinds",
     {A: rule("    when:\n      equals: a\n    reply:\n      text: hi\n      image: MEDIA\n")}, {}, {},
     "rules/a.yaml:5: rule 'r1': a reply has one kind, not text and image (use a list for several replies)"),
    ("reply-unknown-kind",
     {A: rule("    when:\n      equals: a\n    reply:\n      txt: hi\n")}, {}, {},
     "rules/a.yaml:6: rule 'r1': reply: unknown key 'txt' (did you mean 'text'?)"),
    ("reply-empty-list",
     {A: rule("    when:\n      equals: a\n    reply: []\n")}, {}, {},
     "rules/a.yaml:5: rule 'r1': 'reply' is an empty list"),
    ("link-missing-url",
     {A: rule("    when:\n      equals: a\n    reply:\n      link:\n        title: 联系我们\n")}, {}, {},
     "rules/a.yaml:6: rule 'r1': link needs 'url'"),
    ("link-unknown-key",
     {A: rule("    when:\n      equals: a\n    reply:\n      link:\n        title: t\n        url: u\n"
              "        thumb: x\n")}, {}, {},
     "rules/a.yaml:9: rule 'r1': link: unknown key 'thumb' (did you mean 'thumb_url'?)"),
    ("page-missing-thumb",
     {A: rule("    when:\n      equals: a\n    reply:\n      miniprogrampage:\n        title: t\n"
              "        pagepath: pages/index\n")}, {}, {},
     "rules/a.yaml:6: rule 'r1': miniprogrampage needs 'thumb_media_id'"),
    ("page-without-appid-on-oa",
     {A: rule("    when:\n      equals: a\n    reply:\n      miniprogrampage:\n        title: t\n"
              "        pagepath: pages/index\n        thumb_media_id: M\n")},
     {}, {"platform": "official_account"},
     "rules/a.yaml:6: rule 'r1': miniprogrampage needs 'appid' on an official account"),
    ("rules-not-a-list",
     {A: "# comment\nrules:\n  name: x\n"}, {}, {},
     "rules/a.yaml:2: 'rules' must be a list, not a mapping"),
    ("rules-text",
     {A: "rules: hello\n"}, {}, {},
     "rules/a.yaml:1: 'rules' must be a list, not text"),
    ("file-not-a-mapping",
     {A: "- name: x\n"}, {}, {},
     "rules/a.yaml:1: a rules file is a mapping with 'rules:'"),
    ("unknown-file-key",
     {A: "rules: []\nfallbak:\n  transfer: true\n"}, {}, {},
     "rules/a.yaml:2: unknown key 'fallbak' (did you mean 'fallback'?)"),
    ("priority-not-a-number",
     {A: rule("    priority: high\n    when:\n      equals: a\n    reply: hi\n")}, {}, {},
     "rules/a.yaml:3: rule 'r1': 'priority' must be a whole number"),
    ("priority-bool",
     {A: rule("    priority: true\n    when:\n      equals: a\n    reply: hi\n")}, {}, {},
     "rules/a.yaml:3: rule 'r1': 'priority' must be a whole number"),
    ("transfer-not-bool",
     {A: rule("    when:\n      equals: a\n    transfer: 'yes'\n    reply: hi\n")}, {}, {},
     "rules/a.yaml:5: rule 'r1': 'transfer' must be true or false, not text"),
    ("fallback-unknown-key",
     {A: "rules: []\nfallback:\n  transfer: true\n  replies: x\n"}, {}, {},
     "rules/a.yaml:4: fallback: unknown key 'replies' (did you mean 'reply'?)"),
    ("fallback-does-nothing",
     {A: "rules: []\nfallback:\n  transfer: false\n"}, {}, {},
     "rules/a.yaml:2: fallback: does nothing"),
]


@pytest.mark.parametrize(("rules", "templates", "kw", "expected"), [b[1:] for b in BROKEN],
                         ids=[b[0] for b in BROKEN])
def test_broken_input_is_reported_with_file_and_line(rules, templates, kw, expected):
    found = problems(rules, templates, **kw)
    assert len(found) == 1, found
    assert expected in found[0]
    assert found[0].startswith(expected.split(" ", 1)[0])  # the file:line comes first


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (rule("    when:\n      equals: a\n    reply: |\n      第一行\n      {{ oops }\n      第三行\n"),
         "rules/a.yaml:7: rule 'r1': reply: template syntax:"),
        (rule("    when:\n      equals: a\n    reply:\n      text: |\n        {% endif %}\n        ok\n"),
         "rules/a.yaml:7: rule 'r1': text: template syntax:"),
    ],
    ids=["literal-reply-line-2", "literal-text-line-1"],
)
def test_template_syntax_error_in_block_scalar_points_at_the_bad_line(text, expected):
    found = problems({A: text})
    assert len(found) == 1
    assert found[0].startswith(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (rule("    when:\n      equals: a\n    reply: '{{ message.content | shout }}'\n"),
         "rules/a.yaml:5: rule 'r1': reply: template syntax: No filter named 'shout'"),
        (rule("    when:\n      equals: a\n    reply:\n      - text: '{{ message.content | shout }}'\n"),
         "rules/a.yaml:6: rule 'r1': text: template syntax: No filter named 'shout'"),
    ],
    ids=["reply", "text"],
)
def test_unknown_filter_in_inline_reply_is_a_rules_error(text, expected):
    found = problems({A: text})
    assert len(found) == 1 and found[0].startswith(expected)  # Jinja's own wording may end with "."


def test_rules_error_is_a_source_error():
    with pytest.raises(SourceError):
        compile_({A: "rules: x\n"})


def test_all_problems_are_reported_at_once():
    rules = {
        "rules/a.yaml": (
            "rules:\n"  # 1
            "  - name: one\n"  # 2
            "    when:\n"  # 3
            "      keyword: [x]\n"  # 4
            "    reply: hi\n"  # 5
            "  - name: two\n"  # 6
            "    when:\n"  # 7
            "      regex: '('\n"  # 8
            "    reply: '{{ mach }}'\n"  # 9
        ),
        "rules/b.yaml": "rules:\n  - name: x\n    when: [\n",
        "rules/c.yaml": (
            "rules:\n"  # 1
            "  - name: one\n"  # 2
            "    when:\n"  # 3
            "      equals: a\n"  # 4
            "    reply:\n"  # 5
            "      template: missing.j2\n"  # 6
            "  - name: three\n"  # 7
            "    when:\n"  # 8
            "      equals: b\n"  # 9
        ),
    }
    templates = {"bad.j2": "{% for %}"}
    with pytest.raises(RulesError) as info:
        compile_(rules, templates)
    where = sorted((p.file, p.line) for p in info.value.problems)
    assert where == [
        ("rules/a.yaml", 4),
        ("rules/a.yaml", 8),
        ("rules/a.yaml", 9),
        ("rules/b.yaml", 3),  # the unclosed [ on its last line
        ("rules/c.yaml", 6),
        ("rules/c.yaml", 7),
        ("templates/bad.j2", 1),
    ]
    text = str(info.value)
    assert len(text.splitlines()) == 7
    assert "rules/c.yaml:7: rule 'three': does nothing" in text
    assert "rules/c.yaml:6: rule 'one': template 'missing.j2' not found" in text


def test_one_rule_can_have_several_problems():
    found = problems({A: rule("    priority: x\n    when:\n      keywords: [1, 2]\n    replay: hi\n")})
    assert sorted(found) == sorted([
        "rules/a.yaml:3: rule 'r1': 'priority' must be a whole number",
        "rules/a.yaml:5: rule 'r1': 'keywords' must be text, not a number (put them in quotes)",
        "rules/a.yaml:6: rule 'r1': unknown key 'replay' (did you mean 'reply'?)",
        "rules/a.yaml:2: rule 'r1': does nothing; give it a 'reply', 'transfer: true' or a state change",
    ])


# ---- what a good rule set compiles to ----------------------------------------------------------------

GOOD = """\
rules:
  - name: welcome
    when:
      event: user_enter_tempsession
    reply: 您好，我是{{ vars.shop_name }}的客服助手
  - name: shipping
    when:
      keywords: [发货, 快递]
    reply:
      template: shipping.j2
  - name: contact
    when:
      keywords: [电话]
    reply:
      - text: 热线 {{ vars.hotline }}
      - link:
          title: 联系我们
          url: https://example.com/c
      - image: MEDIA_1
      - miniprogrampage:
          title: 领券
          pagepath: pages/coupon
          thumb_media_id: THUMB
"""


def test_a_good_rule_set_compiles():
    rs = compile_({A: GOOD}, {"shipping.j2": "48 小时内发货\n{% include '_foot.j2' %}", "_foot.j2": "谢谢"},
                  vars={"shop_name": "小店", "hotline": "400"})
    assert [r.name for r in rs.rules] == ["welcome", "shipping", "contact"]
    assert rs.rule("shipping").where == "rules/a.yaml:6"
    assert rs.rule("nope") is None
    assert len(rs.rule("contact").replies) == 4
    assert rs.files == (A,)
    assert rs.templates == ("_foot.j2", "shipping.j2")
    assert dict(rs.vars) == {"shop_name": "小店", "hotline": "400"}
    assert len(rs.version) == 10


@pytest.mark.parametrize("text", ["", "# nothing\n", "rules:\n", "rules: []\n"])
def test_empty_files_compile(text):
    rs = compile_({A: text})
    assert rs.rules == ()
    assert rs.fallback == Fallback()


def test_miniprogrampage_with_appid_is_fine_on_official_account():
    rs = compile_({A: rule("    when:\n      equals: a\n    reply:\n      miniprogrampage:\n"
                           "        title: t\n"
                           "        pagepath: p\n        thumb_media_id: M\n        appid: wx1\n")},
                  platform="official_account")
    assert rs.rule("r1") is not None


def test_miniprogrampage_without_appid_is_fine_on_miniprogram():
    rs = compile_({A: rule("    when:\n      equals: a\n    reply:\n      miniprogrampage:\n"
                           "        title: t\n"
                           "        pagepath: p\n        thumb_media_id: M\n")}, platform="miniprogram")
    assert rs.rule("r1") is not None


# ---- ordering ----------------------------------------------------------------------------------------


def _rules(*specs: tuple[str, int | None]) -> str:
    out = "rules:\n"
    for name, priority in specs:
        out += f"  - name: {name}\n"
        if priority is not None:
            out += f"    priority: {priority}\n"
        out += "    when:\n      equals: x\n    reply: hi\n"
    return out


def test_ordering_by_priority_then_file_then_position():
    rs = compile_({
        "rules/a.yaml": _rules(("a1", None), ("a2", 5), ("a3", None), ("a4", -1)),
        "rules/b.yaml": _rules(("b1", 5), ("b2", None), ("b3", 100)),
        "rules/c.yaml": _rules(("c1", -1), ("c2", 0)),
    })
    assert [r.name for r in rs.rules] == ["b3", "a2", "b1", "a1", "a3", "b2", "c2", "a4", "c1"]
    assert [r.priority for r in rs.rules] == [100, 5, 5, 0, 0, 0, 0, -1, -1]


def test_file_order_is_the_order_given():
    rs = compile_({"rules/z.yaml": _rules(("z1", None)), "rules/a.yaml": _rules(("a1", None))})
    assert [r.name for r in rs.rules] == ["z1", "a1"]


# ---- version -----------------------------------------------------------------------------------------

BASE_RULES = {A: GOOD, "rules/b.yaml": _rules(("b1", None))}
BASE_TEMPLATES = {"shipping.j2": "发货", "_foot.j2": "谢谢"}
BASE_VARS = {"shop_name": "小店", "hotline": "400"}


def _version(rules=BASE_RULES, templates=BASE_TEMPLATES, vars=BASE_VARS, **kw: Any) -> str:
    return compile_(rules, templates, vars=vars, **kw).version


def test_version_is_stable():
    assert _version() == _version()
    assert _version(vars=dict(reversed(list(BASE_VARS.items())))) == _version()  # key order does not matter


@pytest.mark.parametrize(
    "change",
    [
        {"rules": {**BASE_RULES, "rules/b.yaml": _rules(("b1", 1))}},
        {"rules": {**BASE_RULES, "rules/b.yaml": _rules(("b1", None)) + "# a comment\n"}},
        {"rules": {A: GOOD, "rules/c.yaml": _rules(("b1", None))}},  # same text, other file name
        {"rules": {**BASE_RULES, "rules/c.yaml": "rules: []\n"}},
        {"templates": {**BASE_TEMPLATES, "shipping.j2": "发货!"}},
        {"templates": {**BASE_TEMPLATES, "_foot.j2": "谢谢。"}},  # an included template
        {"templates": {**BASE_TEMPLATES, "unused.j2": "x"}},
        {"vars": {**BASE_VARS, "hotline": "401"}},
        {"vars": {**BASE_VARS, "extra": 1}},
    ],
    ids=["rule-priority", "rule-comment", "file-name", "new-file", "template", "included-template",
         "new-template", "var-value", "new-var"],
)
def test_version_changes_with_any_source(change):
    assert _version(**change) != _version()


# ---- fallback ----------------------------------------------------------------------------------------


def test_default_fallback_transfers():
    rs = compile_({A: _rules(("a1", None))})
    assert rs.fallback.transfer is True
    assert rs.fallback.replies == ()


@pytest.mark.parametrize(
    ("text", "transfer", "replies"),
    [
        ("rules: []\nfallback:\n  reply: 没听懂\n", False, 1),
        ("rules: []\nfallback:\n  reply: [a, b]\n", False, 2),
        ("rules: []\nfallback:\n  transfer: true\n", True, 0),
        ("rules: []\nfallback:\n  reply: 稍等\n  transfer: true\n", True, 1),
    ],
)
def test_fallback_block(text, transfer, replies):
    rs = compile_({A: text})
    assert rs.fallback.transfer is transfer
    assert len(rs.fallback.replies) == replies
    assert (rs.fallback.file, rs.fallback.line) == (A, 2)


@pytest.mark.parametrize("template", [
    "{% macro m(x) %}{{ x }}{% endmacro %}{{ m(1) }}",
    "{% import '_lib.j2' as lib %}{{ lib.m(1) }}",
    "{% from '_lib.j2' import m, m as n %}{{ m(1) }}{{ n(2) }}",
    "{% set total = 3 %}{{ total }}",
    "{% for x in [1, 2] %}{{ loop.index }}{{ x }}{% endfor %}",
    "{% with y = 1 %}{{ y }}{% endwith %}",
    "{{ range(3) | list }}{{ dict(a=1) }}",
])
def test_names_templates_define_themselves_are_not_unknown(template):
    from bot.engine import SourceFile, compile_ruleset

    compile_ruleset([SourceFile("rules/a.yaml", "rules: []\n")],
                    [SourceFile("templates/t.j2", template, "t.j2"),
                     SourceFile("templates/_lib.j2", "{% macro m(x) %}{{ x }}{% endmacro %}", "_lib.j2")])


@pytest.mark.parametrize("template,expected", [
    ("您好{% include 'promo.j2' ignore missing %}", "您好"),
    ("您好{% include ['promo.j2', '_foot.j2'] %}", "您好——谢谢"),
])
def test_an_include_that_may_be_missing_is_not_refused(template, expected):
    """`ignore missing` says the file may be absent; a list takes the first of its files that exists."""
    from datetime import datetime

    from bot.engine import decide
    from bot.protocol.wire import message_from_fields

    rs = compile_({A: rule("    when:\n      equals: [a]\n    reply:\n      template: t.j2\n")},
                  {"t.j2": template, "_foot.j2": "——谢谢"})
    message = message_from_fields({"ToUserName": "gh", "FromUserName": "o", "CreateTime": 1, "MsgType": "text",
                                   "Content": "a", "MsgId": "1"})
    assert decide(rs, message, datetime(2026, 1, 1)).replies[0].content == expected
