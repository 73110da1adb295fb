"""How long finding the rule for one message takes, against the number of rules.

    python -m bench.match [--counts 10,1000,10000] [--mixed]

For N keyword rules (two words each, none inside another), the time of find_rule per message, in microseconds:
a 10-character text that matches the last rule (the whole way for the plain loop) and one that matches none,
with the index (engine/index.py) and with the loop over every rule (`linear`). With --mixed, the rule sets of
bench/corpus.py instead (half keywords, the rest equals, prefix, regex and menu events): every text message
also tries each regex rule, which no index narrows down.

Other benchmarks can import `measure(counts)`, a list of rows (dicts).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bot.config import load_settings
from bot.engine import RuleSet, SourceFile, compile_ruleset
from bot.engine.decide import find_rule
from bot.engine.index import merge_automata
from bot.messages import Message
from bot.protocol.wire import message_from_fields
from bot.sources import load_ruleset

from .corpus import write_corpus

NOW = datetime(2026, 6, 1, 14, 30, tzinfo=ZoneInfo("Asia/Shanghai"))


def keyword_rules(n: int) -> RuleSet:
    """n rules `keywords: [退货{i}号, 快递{i}单]`: no word is inside another, so the last rule is the one found."""
    body = "".join(f"  - name: rule-{i}\n    when: {{keywords: [退货{i}号, 快递{i}单]}}\n    reply: 第{i}条\n"
                   for i in range(n))
    ruleset = compile_ruleset([SourceFile("rules/bench.yaml", "rules:\n" + body)])
    if ruleset.index is not None:
        merge_automata(ruleset.index)  # as the server's loads and reloads do
    return ruleset


def mixed_rules(n: int) -> RuleSet:
    return load_ruleset(load_settings(write_corpus(Path(tempfile.mkdtemp(prefix=f"kefu-match-{n}-")), n)))


def text(content: str) -> Message:
    return message_from_fields({"ToUserName": "gh_bench", "FromUserName": "o_bench", "CreateTime": 1780000000,
                                "MsgType": "text", "Content": content, "MsgId": 1})


def per_message(ruleset: RuleSet, message: Message, linear: bool, budget: float = 0.2) -> float:
    """Microseconds per find_rule call: the best of five runs of about budget/5 seconds each."""
    start = time.perf_counter()
    find_rule(ruleset, message, NOW, linear=linear)
    once = max(time.perf_counter() - start, 1e-7)
    loops = max(1, int(budget / 5 / once))
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(loops):
            find_rule(ruleset, message, NOW, linear=linear)
        best = min(best, (time.perf_counter() - start) / loops)
    return best * 1e6


def measure(counts: list[int], mixed: bool = False, budget: float = 0.2) -> list[dict[str, Any]]:
    """For each count: {"rules", "kind", "build_ms", "hit_us", "miss_us", "hit_linear_us", "miss_linear_us"}.
    Checks on the way that both matchers find the same rule."""
    rows = []
    for n in counts:
        start = time.perf_counter()
        ruleset = mixed_rules(n) if mixed else keyword_rules(n)
        build = time.perf_counter() - start
        last = n - 1
        if mixed:  # the last keyword rule of the corpus (kinds 0-4 of every 10 are keywords)
            last = max(i for i in range(n) if i % 10 < 5)
            hit = text(f"请问关键词{last}呢")
        else:
            hit = text(f"你好，退货{last}号怎么办")
        miss = text("今天的天气怎么样啊")
        row: dict[str, Any] = {"rules": n, "kind": "mixed" if mixed else "keywords", "build_ms": build * 1000}
        for name, message, expected in (("hit", hit, f"rule-{last}"), ("miss", miss, None)):
            for linear in (False, True):
                found = find_rule(ruleset, message, NOW, linear=linear)[0]
                assert (found.name if found else None) == expected, (name, linear, found)
                row[f"{name}{'_linear' if linear else ''}_us"] = per_message(ruleset, message, linear, budget)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", default="10,1000,10000")
    ap.add_argument("--mixed", action="store_true", help="bench/corpus.py's mix of rules instead of keywords")
    args = ap.parse_args()
    rows = measure([int(c) for c in args.counts.split(",")], args.mixed)
    print(f"find_rule per message (µs), {rows[0]['kind']} rules")
    print(f"{'rules':>8} {'hit':>9} {'no match':>9} {'hit, loop':>11} {'no match, loop':>15}")
    for r in rows:
        print(f"{r['rules']:>8} {r['hit_us']:>9.1f} {r['miss_us']:>9.1f} {r['hit_linear_us']:>11.1f} "
              f"{r['miss_linear_us']:>15.1f}")


if __name__ == "__main__":
    main()
