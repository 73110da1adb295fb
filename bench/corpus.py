"""Synthetic rule sets for the benchmarks: N rules spread over files of 100, a mix of every `when` kind, and
templates (inline Jinja and template files with includes), as a large shop's rules would look."""

from __future__ import annotations

from pathlib import Path

RULES_PER_FILE = 100
TEMPLATE_FILES = 50


def rule_text(i: int) -> str:
    kind = i % 10
    head = f"  - name: rule-{i}\n    when:\n"
    if kind < 5:
        when = f"      keywords: [关键词{i}, 词{i}号]\n"
    elif kind < 7:
        when = f"      equals: [问题{i}]\n"
    elif kind == 7:
        when = f"      prefix: [查询{i}]\n"
    elif kind == 8:
        when = f"      regex: '订单{i}\\D*(?P<no>\\d{{6,}})'\n"
    else:
        when = f"      event: CLICK\n      event_key: 'menu_{i}'\n"
    if i % 3 == 0:
        reply = f"    reply:\n      template: t{i % TEMPLATE_FILES}.j2\n"
    elif i % 3 == 1:
        reply = f"    reply: '{{{{ vars.shop_name }}}}：第{i}条规则回复 {{{{ match.keyword | default(\"\") }}}}'\n"
    else:
        reply = f"    reply: 第{i}条规则的固定回复。\n"
    return head + when + reply


def write_corpus(root: Path, n: int) -> Path:
    """Write bot.yaml, rules/ and templates/ for n rules under root; return the bot.yaml path."""
    (root / "rules").mkdir(parents=True, exist_ok=True)
    (root / "templates").mkdir(parents=True, exist_ok=True)
    for start in range(0, n, RULES_PER_FILE):
        body = "".join(rule_text(i) for i in range(start, min(n, start + RULES_PER_FILE)))
        (root / "rules" / f"{start // RULES_PER_FILE:05d}.yaml").write_text("rules:\n" + body, encoding="utf-8")
    (root / "templates" / "_head.j2").write_text("您好，这里是{{ vars.shop_name }}。\n", encoding="utf-8")
    for t in range(TEMPLATE_FILES):
        (root / "templates" / f"t{t}.j2").write_text(
            "{% include '_head.j2' %}" + f"模板{t}：{{{{ rule.name }}}} {{{{ message.msg_type }}}}\n"
            "{% if match.no is defined %}单号 {{ match.no }}{% endif %}\n", encoding="utf-8")
    config = root / "bot.yaml"
    config.write_text("wechat:\n  token: bench-token\nstore: memory://\nvars:\n  shop_name: 压测小店\n"
                      "security:\n  max_timestamp_age: 0\n", encoding="utf-8")
    return config
