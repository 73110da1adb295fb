"""bot.yamlsrc: the values are what PyYAML's safe loader gives, and every key and item knows its line."""

from __future__ import annotations

import pytest
import yaml

from bot.yamlsrc import YamlSyntaxError, load_yaml

DOCUMENTS = [
    "a: 1\nb: yes\nc: 'x'\nd: !!str 5\ne: &x 你好\nf: *x\ng: [1, 'two', null, ~, 2.5, 0x1f, .inf]\n",
    "h: |\n  line\n  two\ni: >\n  folded\n  text\nj: \"quoted\\ttab\"\nk: ''\nl:\n",
    "base: &b {m: 1, n: 二}\nderived:\n  <<: *b\n  n: 三\n",  # its own key overrides a merged one
    "a: &a {x: 1, y: 1}\nb: &b {y: 2, z: 2}\nc:\n  <<: [*a, *b]\n  z: 3\n",  # the first merge wins, then its own
    # a merge whose source merges too, and is used again later: its overriding key is not a duplicate
    "a: &a {k: 1}\nm:\n  <<: &b\n    <<: *a\n    k: 2\n  j: 3\nc: *b\nd:\n  <<: *b\n  k: 5\n",
    "- &a {k: v}\n- *a\n- !!binary aGk=\n- 2026-01-01\n- [nested, [deeper]]\n- {? complex : key}\n",
    "rules:\n  - name: 问候\n    when: {keywords: [你好, 您好]}\n    reply: 您好，{{ vars.shop }}\n",
]


@pytest.mark.parametrize("text", DOCUMENTS)
def test_values_are_what_the_safe_loader_gives(text):
    assert load_yaml(text, "x.yaml") == yaml.safe_load(text)


def test_keys_and_items_know_their_lines():
    data = load_yaml("a: 1\nb:\n  - x\n  - y\nc: |\n  text\n", "x.yaml")
    assert (data.line_of("a"), data.line_of("b"), data.line_of("c")) == (1, 2, 5)
    assert data.value_line_of("c") == 6  # a block scalar's text starts on the next line
    assert (data["b"].line_of(0), data["b"].line_of(1)) == (3, 4)


@pytest.mark.parametrize("text,words", [("a: 1\na: 2\n", "duplicate key 'a'"), ("? [1]\n: x\n", "plain text"),
                                        ("b: &b {n: 1}\nd:\n  <<: *b\n  n: 2\n  n: 3\n", "duplicate key 'n'"),
                                        ("a: [1\n", "YAML syntax")])
def test_mistakes_name_the_line(text, words):
    with pytest.raises(YamlSyntaxError) as err:
        load_yaml(text, "x.yaml")
    assert words in str(err.value) and "x.yaml:" in str(err.value)
