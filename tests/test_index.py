"""bot.engine.index: find_rule through the index finds exactly the rule (and captures) the loop over every rule
finds, for any rules, message, state, time, cooling and handoff."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from unittest import mock
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.engine import RuleSet, SourceFile, compile_ruleset
from bot.engine import index as index_module
from bot.engine.conditions import Keywords
from bot.engine.decide import find_rule
from bot.engine.index import build_index, merge_automata
from bot.engine.keys import derive
from bot.messages import Message, State
from bot.protocol.wire import message_from_fields

TZ = ZoneInfo("Asia/Shanghai")
MONDAY_10 = datetime(2026, 11, 30, 10, 0, tzinfo=TZ)
SUNDAY_23 = datetime(2026, 12, 6, 23, 30, tzinfo=TZ)


def compile_rules(rules: list[dict[str, Any]]) -> RuleSet:
    """JSON is YAML: the rules go through the compiler as an operator's file would."""
    return compile_ruleset([SourceFile("rules/a.yaml", json.dumps({"rules": rules}, ensure_ascii=False))])


def push(msg_type: str, user: str = "o_a", **fields: Any) -> Message:
    return message_from_fields({"ToUserName": "gh", "FromUserName": user, "CreateTime": 1780000000,
                                "MsgType": msg_type, "MsgId": "1", **fields})


def text(content: str, user: str = "o_a") -> Message:
    return push("text", user, Content=content)


def event(name: str, key: str | None = None, **fields: Any) -> Message:
    return push("event", Event=name, **({"EventKey": key} if key is not None else {}), **fields)


def both(ruleset: RuleSet, message: Message, now: datetime = MONDAY_10, state: State | None = None,
         cooling: frozenset[str] = frozenset(), handoff: bool = False) -> tuple[str | None, dict[str, Any]]:
    """The rule and captures found through the index, after checking the loop over every rule agrees."""
    rule, captures, _ = find_rule(ruleset, message, now, state, cooling, handoff)
    plain, plain_captures, _ = find_rule(ruleset, message, now, state, cooling, handoff, linear=True)
    found = (rule.name if rule else None, captures)
    assert found == (plain.name if plain else None, plain_captures)
    return found


# ---- random rule sets ------------------------------------------------------------------------------------

# few characters, so that words overlap, contain each other and reach the start of texts; full-width and upper
# case for normalisation; CJK; spaces and punctuation (which normalisation trims, in the text but not in the
# rule's words: `c#`, `/b`, `？` are matched as written)
WORDS = ["退货", "退", "货", "退货单", "快递", "递", "查询", "查", "人工", "转人工", "ab", "AB", "Ａｂ", "a b", "b",
         "订单", "号", "？", "123", "menu_1", "c#", "C", "＃", "/b", "b+", "？退"]
FILLERS = ["", " ", "  ", "？", "！", "，", "x", "我的", "😀", "\n", "ＡＢ", "1", "4567890", "#", "/", "+"]
REGEXES = ["退货", "(?P<no>\\d+)", "^a", "货$", "[ab]+", "快.?递", "(?i)AB", "订单\\D*(?P<no>\\d{3,})", "^$"]
EVENTS = ["subscribe", "CLICK", "SCAN", "LOCATION", "user_enter_tempsession"]
KEYS = ["menu_1", "menu_2", "123", "qrscene_123"]
STATES = ["none", "awaiting", "other"]
USERS = ["o_a", "o_b"]
PAGES = ["pages/a", "pages/b"]

words = st.lists(st.sampled_from(WORDS), min_size=1, max_size=3, unique=True)


def leaf() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        words.map(lambda w: {"keywords": w}),
        words.map(lambda w: {"equals": w}),
        words.map(lambda w: {"prefix": w}),
        st.lists(st.sampled_from(REGEXES), min_size=1, max_size=2, unique=True).map(lambda r: {"regex": r}),
        st.lists(st.sampled_from(EVENTS), min_size=1, max_size=2, unique=True).map(lambda e: {"event": e}),
        st.lists(st.sampled_from(["text", "image", "event", "voice", "miniprogrampage"]), min_size=1, max_size=2,
                 unique=True).map(lambda t: {"msgtype": t}),
        st.one_of(st.lists(st.sampled_from(["menu_1", "menu_2", "123"]), min_size=1, max_size=2, unique=True),
                  st.just({"regex": "menu_\\d"})).map(lambda k: {"event_key": k}),
        st.lists(st.sampled_from(STATES), min_size=1, max_size=2, unique=True).map(lambda s: {"state": s}),
        st.sampled_from([{"hours": "09:00-18:00"}, {"weekdays": "sat-sun"}]).map(lambda t: {"time": t}),
        st.one_of(st.sampled_from(USERS), st.just({"regex": "^web"})).map(lambda v: {"session_from": v}),
        st.sampled_from(USERS).map(lambda u: {"user": u}),
        st.one_of(st.sampled_from(PAGES), st.just({"regex": "/b$"})).map(lambda p: {"page": p}),
    )


def merge(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for block in blocks:
        for key, value in block.items():
            out.setdefault(key, value)  # a mapping has each key once
    return out


whens = st.recursive(
    st.lists(leaf(), min_size=1, max_size=3).map(merge),
    lambda inner: st.one_of(
        st.tuples(st.lists(inner, min_size=1, max_size=3), st.lists(leaf(), max_size=1))
        .map(lambda t: merge([{"any": t[0]}, *t[1]])),
        st.tuples(inner, st.lists(leaf(), max_size=1)).map(lambda t: merge([{"not": t[0]}, *t[1]])),
    ),
    max_leaves=6,
)


@st.composite
def rule_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    rules = []
    for i in range(draw(st.integers(1, 12))):
        rule: dict[str, Any] = {"name": f"r{i}", "when": draw(whens), "reply": "ok"}
        if draw(st.booleans()):
            rule["priority"] = draw(st.sampled_from([-1, 1, 5]))
        normalize = draw(st.sampled_from([None, True, False, "all"]))
        if normalize is not None:
            rule["normalize"] = normalize
        if draw(st.booleans()):
            rule["during_handoff"] = True
        rules.append(rule)
    return rules


texts = st.lists(st.sampled_from(WORDS + FILLERS), max_size=6).map("".join)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    user = draw(st.sampled_from(USERS))
    kind = draw(st.sampled_from(["text", "text", "text", "voice", "image", "event", "page"]))
    if kind == "text":
        return text(draw(texts), user)
    if kind == "voice":
        recognition = draw(st.one_of(st.none(), texts))
        return push("voice", user, MediaId="v", **({"Recognition": recognition} if recognition else {}))
    if kind == "image":
        return push("image", user, PicUrl="http://x/p.jpg", MediaId="m")
    if kind == "page":
        return push("miniprogrampage", user, PagePath=draw(st.sampled_from(PAGES)), Title="t")
    name = draw(st.sampled_from(EVENTS))
    key = draw(st.one_of(st.none(), st.sampled_from(KEYS)))
    extra = {"SessionFrom": draw(st.sampled_from([*USERS, "web_1"]))} if name == "user_enter_tempsession" else {}
    return event(name, key, **extra)


states = st.one_of(st.none(), st.sampled_from(["awaiting", "other"]).map(lambda n: State(n, {})))

# every word alone, padded, and at the end of a text; every event with every key; each other kind of message
BATTERY: list[Message] = [
    *(text(t) for w in WORDS for t in (w, f" {w}  ", f"  {w}！", f"我的{w}")),
    *(event(name, key) for name in EVENTS for key in (None, *KEYS)),
    *(event("user_enter_tempsession", SessionFrom=s) for s in (*USERS, "web_1")),
    *(push("miniprogrampage", PagePath=p, Title="t") for p in PAGES),
    push("image", user="o_b", PicUrl="http://x/p.jpg", MediaId="m"),
    push("voice", MediaId="v", Recognition="我要退货"), push("voice", MediaId="v"), text(""), text("？"),
]
CONTEXTS = [(state, handoff, now) for now in (MONDAY_10, SUNDAY_23) for handoff in (False, True)
            for state in (None, State("awaiting", {}))]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rule_sets(), cases=st.lists(st.tuples(messages(), states, st.sampled_from([MONDAY_10, SUNDAY_23]),
                                                   st.booleans(), st.booleans()), max_size=8),
       data=st.data())
def test_the_index_finds_what_the_loop_finds(rules, cases, data):
    ruleset = compile_rules(rules)
    names = [r["name"] for r in rules]
    cooling = frozenset(data.draw(st.lists(st.sampled_from(names), max_size=2)))
    for i, message in enumerate(BATTERY):
        state, handoff, now = CONTEXTS[i % len(CONTEXTS)]
        both(ruleset, message, now, state, cooling if i % 3 == 0 else frozenset(), handoff)
    for message, state, now, handoff, cool in cases:
        both(ruleset, message, now, state, cooling if cool else frozenset(), handoff)


# ---- the tricky cases, by name ---------------------------------------------------------------------------

def test_a_keyword_inside_another_keyword():
    ruleset = compile_rules([
        {"name": "long", "when": {"keywords": ["退货单"]}, "reply": "a"},
        {"name": "short", "when": {"keywords": ["货"]}, "reply": "b"},
        {"name": "middle", "when": {"keywords": ["退货"]}, "priority": -1, "reply": "c"},
    ])
    assert both(ruleset, text("我的退货单呢")) == ("long", {"keyword": "退货单"})
    assert both(ruleset, text("退货")) == ("short", {"keyword": "货"})  # found inside "退货": overlapping matches
    assert both(ruleset, text("退一下")) == (None, {})


def test_the_same_keyword_in_two_rules_the_higher_priority_wins():
    ruleset = compile_rules([
        {"name": "low", "when": {"keywords": ["快递"]}, "reply": "a"},
        {"name": "high", "when": {"keywords": ["快递", "物流"]}, "priority": 5, "reply": "b"},
    ])
    assert both(ruleset, text("快递到哪了")) == ("high", {"keyword": "快递"})
    assert both(ruleset, text("快递到哪了"), cooling=frozenset({"high"})) == ("low", {"keyword": "快递"})


def test_a_regex_rule_before_a_keyword_rule():
    ruleset = compile_rules([
        {"name": "order", "when": {"regex": "订单\\D*(?P<no>\\d+)"}, "reply": "a"},
        {"name": "word", "when": {"keywords": ["订单"]}, "reply": "b"},
    ])
    assert both(ruleset, text("订单 123")) == ("order", {"text": "订单 123", "no": "123"})
    assert both(ruleset, text("订单呢")) == ("word", {"keyword": "订单"})
    assert both(ruleset, event("CLICK", "订单1")) == (None, {})


def test_any_with_one_branch_that_cannot_be_indexed():
    ruleset = compile_rules([
        {"name": "either", "when": {"any": [{"keywords": ["人工"]}, {"time": {"weekdays": "sat-sun"}}]},
         "reply": "a"},
        {"name": "later", "when": {"keywords": ["你好"]}, "reply": "b"},
    ])
    assert derive(ruleset.rules[0].when) is None
    assert both(ruleset, text("你好")) == ("later", {"keyword": "你好"})
    assert both(ruleset, text("你好"), now=SUNDAY_23) == ("either", {})
    assert both(ruleset, text("转人工")) == ("either", {"keyword": "人工"})


def test_a_rule_with_only_not():
    ruleset = compile_rules([
        {"name": "not-hello", "when": {"not": {"keywords": ["你好"]}}, "reply": "a"},
        {"name": "hello", "when": {"keywords": ["你好"]}, "reply": "b"},
    ])
    assert both(ruleset, text("你好啊")) == ("hello", {"keyword": "你好"})
    assert both(ruleset, text("在吗")) == ("not-hello", {})
    assert both(ruleset, push("image", PicUrl="http://x/p.jpg", MediaId="m")) == ("not-hello", {})


def test_equals_and_prefix_with_and_without_normalisation():
    ruleset = compile_rules([
        {"name": "human", "when": {"equals": ["转人工"]}, "reply": "a"},
        {"name": "raw", "when": {"equals": ["AB"]}, "normalize": False, "reply": "b"},
        {"name": "query", "when": {"prefix": ["查询"]}, "reply": "c"},
        {"name": "raw-prefix", "when": {"prefix": ["Q:"]}, "normalize": False, "reply": "d"},
    ])
    assert both(ruleset, text(" 转人工！")) == ("human", {"text": "转人工"})
    assert both(ruleset, text("  AB ")) == ("raw", {"text": "AB"})
    assert both(ruleset, text("ab")) == (None, {})
    # normalised, 【查询】订单 is 查询】订单 (only the ends are trimmed); the rest is in the user's characters
    assert both(ruleset, text("【查询】订单")) == ("query", {"prefix": "查询", "rest": "订单", "rest_raw": "】订单"})
    assert both(ruleset, text("  查询 订单 ")) == ("query", {"prefix": "查询", "rest": "订单", "rest_raw": " 订单 "})
    assert both(ruleset, text("请查询")) == (None, {})  # 查询 is in the text, not at its start
    assert both(ruleset, text("  Q: x")) == ("raw-prefix", {"prefix": "Q:", "rest": "x", "rest_raw": " x"})
    assert both(ruleset, text("q: x")) == (None, {})


def test_normalize_all_and_full_width_keywords():
    ruleset = compile_rules([
        {"name": "all", "when": {"keywords": ["ＡＢＣ"], "regex": "^abc"}, "normalize": "all", "reply": "a"},
        {"name": "raw", "when": {"keywords": ["ABC"]}, "normalize": False, "reply": "b"},
    ])
    assert both(ruleset, text("ABC！")) == ("all", {"keyword": "abc", "text": "abc"})
    assert both(ruleset, text("x ABC")) == ("raw", {"keyword": "ABC"})
    assert both(ruleset, text("x abc")) == (None, {})


def test_event_rules_and_text_rules():
    ruleset = compile_rules([
        {"name": "menu", "when": {"event": "CLICK", "event_key": ["menu_1"]}, "reply": "a"},
        {"name": "scene", "when": {"event_key": ["123"]}, "reply": "b"},
        {"name": "any-event", "when": {"msgtype": "event"}, "priority": -1, "reply": "c"},
        {"name": "word", "when": {"keywords": ["menu_1"]}, "reply": "d"},
    ])
    assert both(ruleset, event("CLICK", "menu_1")) == ("menu", {"event_key": "menu_1"})
    assert both(ruleset, event("subscribe", "qrscene_123")) == ("scene", {"event_key": "123"})
    assert both(ruleset, event("SCAN", "123")) == ("scene", {"event_key": "123"})
    assert both(ruleset, event("VIEW", "menu_1")) == ("any-event", {})
    assert both(ruleset, text("menu_1")) == ("word", {"keyword": "menu_1"})


def test_any_of_a_regex_and_other_kinds():
    ruleset = compile_rules([
        {"name": "mixed", "when": {"any": [{"regex": "订单"}, {"msgtype": "image"}, {"event": "CLICK"}]},
         "reply": "a"},
        {"name": "after", "when": {"msgtype": ["image", "text", "event"]}, "reply": "b"},
    ])
    assert both(ruleset, text("订单")) == ("mixed", {"text": "订单"})
    assert both(ruleset, text("x")) == ("after", {})
    assert both(ruleset, push("image", PicUrl="http://x/p.jpg", MediaId="m")) == ("mixed", {})
    assert both(ruleset, event("CLICK", "menu_1")) == ("mixed", {})
    assert both(ruleset, event("VIEW", "menu_1")) == ("after", {})


def test_handoff_tries_only_the_rules_marked_for_it():
    ruleset = compile_rules([
        {"name": "order", "when": {"regex": "订单"}, "reply": "a"},
        {"name": "human", "when": {"keywords": ["人工"]}, "during_handoff": True, "reply": "b"},
        {"name": "order-too", "when": {"regex": "订单"}, "during_handoff": True, "reply": "c"},
    ])
    assert both(ruleset, text("订单 人工"), handoff=True) == ("human", {"keyword": "人工"})
    assert both(ruleset, text("订单"), handoff=True) == ("order-too", {"text": "订单"})
    assert both(ruleset, text("订单")) == ("order", {"text": "订单"})


def test_state_and_fields():
    ruleset = compile_rules([
        {"name": "waiting", "when": {"state": "awaiting"}, "reply": "a"},
        {"name": "vip", "when": {"user": "o_b"}, "reply": "b"},
        {"name": "fresh", "when": {"state": "none", "keywords": ["你好"]}, "reply": "c"},
    ])
    assert both(ruleset, text("你好"), state=State("awaiting", {})) == ("waiting", {})
    assert both(ruleset, text("你好", user="o_b")) == ("vip", {"user": "o_b"})
    assert both(ruleset, text("你好")) == ("fresh", {"keyword": "你好"})
    assert both(ruleset, text("你好"), state=State("other", {})) == (None, {})


def test_a_lone_surrogate_in_the_text_tries_every_rule():
    """An automaton reads UTF-8, which a lone surrogate (JSON's "\\ud800") cannot be: every rule is tried."""
    ruleset = compile_rules([
        {"name": "not", "when": {"not": {"keywords": ["x"]}}, "priority": -1, "reply": "a"},
        {"name": "word", "when": {"keywords": ["退货"]}, "reply": "b"},
    ])
    assert both(ruleset, text("\ud800退货")) == ("word", {"keyword": "退货"})
    assert both(ruleset, text("\ud800")) == ("not", {})
    # rule files cannot hold one (YAML refuses the escape); a word with one would not go into an automaton
    assert derive(Keywords(("\ud800",))) is None


def many(n: int, changed: int | None = None) -> list[dict[str, Any]]:
    return [{"name": f"r{i}", "when": {"keywords": [f"退货{i}号", f"快递{i}单" if i != changed else "新词"]},
             "reply": "a"} for i in range(n)]


def test_many_keywords_go_into_several_automata():
    ruleset = compile_rules(many(3000))
    automata = ruleset.index.words[0].automata
    assert len(automata) > 1
    for i in (0, 1500, 2999):
        assert both(ruleset, text(f"请问快递{i}单")) == (f"r{i}", {"keyword": f"快递{i}单"})
    assert both(ruleset, text("快递单")) == (None, {})


def test_a_reload_reuses_the_automata_of_unchanged_words():
    first = compile_rules(many(3000))
    again = compile_ruleset([SourceFile("rules/a.yaml", json.dumps({"rules": many(3000)}) + "\n# edited\n")],
                            previous=first)
    old = [a for a, _ in first.index.words[0].automata]
    assert [a for a, _ in again.index.words[0].automata] == old  # the same objects
    edited = compile_ruleset([SourceFile("rules/a.yaml", json.dumps({"rules": many(3000, changed=1500)}))],
                             previous=again)
    new = [a for a, _ in edited.index.words[0].automata]
    assert 1 <= sum(a not in old for a in new) <= 2  # an edit rebuilds the automaton around it, not the others
    assert both(edited, text("新词")) == ("r1500", {"keyword": "新词"})
    assert both(edited, text("快递1500单")) == (None, {})
    assert both(edited, text("快递2999单")) == ("r2999", {"keyword": "快递2999单"})


def test_merged_automata_find_what_the_step_built_ones_find(monkeypatch):
    ruleset = compile_rules(many(3000))
    words = ruleset.index.words[0]
    shards = words.automata
    monkeypatch.setattr(index_module, "MERGED_PATTERNS", 4000)  # 6,000 words: two or three automata
    assert merge_automata(ruleset.index) >= 1
    assert words.shards == shards and 1 < len(words.automata) < len(shards)
    assert {a for a, _ in shards} == set(words.built.values())  # a reload still reuses the step-built ones
    for i in range(0, 3000, 97):
        assert both(ruleset, text(f"请问快递{i}单")) == (f"r{i}", {"keyword": f"快递{i}单"})
        assert both(ruleset, text(f"退货{i}号，快递{(i + 7) % 3000}单")) == (f"r{i}", {"keyword": f"退货{i}号"})
    assert both(ruleset, text("快递单")) == (None, {})
    assert merge_automata(ruleset.index) == 0  # merged once: nothing more to join


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rule_sets(), cases=st.lists(st.tuples(messages(), states), min_size=1, max_size=8))
def test_with_many_small_automata_merged_the_index_finds_what_the_loop_finds(rules, cases):
    """Random rule sets built into automata of a few words each, then joined three at a time."""
    with mock.patch.object(index_module, "SHARD_COST", 24), mock.patch.object(index_module, "SHARD_MIN", 24), \
            mock.patch.object(index_module, "MERGED_PATTERNS", 7):
        ruleset = compile_rules(rules)
        merge_automata(ruleset.index)
    for message in BATTERY:
        both(ruleset, message)
    for message, state in cases:
        both(ruleset, message, MONDAY_10, state)


async def test_a_reload_goes_live_with_the_automata_merged(tmp_path, monkeypatch):
    from bot.config import load_settings
    from bot.reload import build
    from bot.sources import load_ruleset

    from .helpers import write_bot

    write_bot(tmp_path, {"a.yaml": json.dumps({"rules": many(3000)}, ensure_ascii=False)})
    settings = load_settings(tmp_path / "bot.yaml")
    monkeypatch.setattr(index_module, "MERGED_PATTERNS", 4000)
    started = load_ruleset(settings)  # as at start
    built = (await build(None, settings, started)).ruleset  # as a reload
    for ruleset in (started, built):
        words = ruleset.index.words[0]
        assert 1 < len(words.automata) < len(words.shards)
        assert both(ruleset, text("请问快递2999单")) == ("r2999", {"keyword": "快递2999单"})


def test_a_rule_set_built_without_the_index_still_matches():
    ruleset = compile_rules([{"name": "a", "when": {"keywords": ["你好"]}, "reply": "a"}])
    assert build_index(ruleset.rules).find is not None
    from dataclasses import replace
    bare = replace(ruleset, index=None)
    assert find_rule(bare, text("你好"), MONDAY_10)[0].name == "a"
