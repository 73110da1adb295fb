"""Coverage-guided fuzzing of generated rule sets: random regexes, templates and messages, as operators write
them without review. The bounds of bot/engine/limits.py must hold for every one:

- a rule set either compiles or is refused with RulesError (`file:line: …`), nothing else;
- deciding a message never raises, and uses no more CPU than the regex bound per pattern plus the render
  bound for the reply text (with slack; wall time only to a loose multiple, since a busy machine stretches it);
- no reply text is longer than limits.render_chars.

    pip install atheris
    nice python fuzz/fuzz_rules.py -max_total_time=600 fuzz/corpus-rules

The input is read by atheris' FuzzedDataProvider: pieces of regexes and templates are picked from the lists
below (so that the fuzzer reaches nested quantifiers, loops and multiplying operators quickly) and joined
with fuzzed text; the message is fuzzed text of up to 4,000 characters.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime

import atheris

with atheris.instrument_imports(include=["bot"]):
    from bot.config import TIMEZONE
    from bot.engine import SourceFile, compile_ruleset, decide
    from bot.engine.limits import LIMITS
    from bot.errors import RulesError
    from bot.protocol.wire import message_from_fields

REGEX_PIECES = [r"(\w+\s?)*", r"(a+)+", r"(a|aa)+", r"(.*a){12}", r"\d+", r"\D*", r"(?P<no>\d{6,20})", "订单",
                "好", r"[^x]*", r"(x+x+)+y", r"\s*#?\s*", r"(?=a)", r"(?<=b)", r"\1", r"(b)", "^", "$", r"\p{Han}",
                r"(?i)", r"a{100}", r"(?:a{50}){50}", "|", "(", ")", "*", "+", "?", "{2,}", ".", r"\b", "[", "]"]
TEMPLATE_PIECES = ["{% for i in range(", "{% for j in range(", ") %}", "{% endfor %}", "{{ i }}", "{{ 'x' * ",
                   " }}", "100000", "600", "10**9", "2000000", "{{ match.text }}", "{{ message.content }}",
                   "{% set ns = namespace(s='x') %}", "{% set ns.s = ns.s ~ ns.s %}", "{{ ns.s|length }}",
                   "|join('yy')", "|center(", "|replace('a', 'bbbb')", "{% macro f(n) %}", "{% endmacro %}",
                   "{{ f(", "{% if n %}", "{% endif %}", "{{ f(n-1) }}", "{% set s %}", "{% endset %}",
                   "{{ '%05d' % ", "{{ '{:>9}'.format(", "{{ range(100000)|list|length }}", "**", "~", "你好"]


def _pick(fdp: atheris.FuzzedDataProvider, pieces: list[str], count: int) -> str:
    out = []
    for _ in range(count):
        if fdp.ConsumeBool():
            out.append(pieces[fdp.ConsumeIntInRange(0, len(pieces) - 1)])
        else:
            out.append(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 6)))
    return "".join(out)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''").replace("\n", " ").replace("\r", " ") + "'"


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    patterns = [_pick(fdp, REGEX_PIECES, fdp.ConsumeIntInRange(1, 8)) for _ in range(fdp.ConsumeIntInRange(1, 3))]
    template = _pick(fdp, TEMPLATE_PIECES, fdp.ConsumeIntInRange(1, 12))
    rules = "rules:\n" + "".join(
        f"  - name: r{i}\n    when: {{regex: {_quote(p)}}}\n    reply: {_quote(template)}\n"
        for i, p in enumerate(patterns))
    rules += "fallback:\n  reply: " + _quote(template) + "\n"
    text = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 4000)) or "好" * 27 + "!"
    try:
        ruleset = compile_ruleset([SourceFile("rules/fuzz.yaml", rules)])
    except RulesError as exc:
        assert all(p.file == "rules/fuzz.yaml" for p in exc.problems), exc
        return
    message = message_from_fields({"ToUserName": "gh_fuzz", "FromUserName": "o_fuzz", "CreateTime": 1780000000,
                                   "MsgType": "text", "Content": text, "MsgId": 1})
    start, cpu = time.perf_counter(), time.process_time()
    decision = decide(ruleset, message, datetime(2026, 11, 28, 12, 0, tzinfo=TIMEZONE), random=lambda: 0.5)
    took, cpu = time.perf_counter() - start, time.process_time() - cpu
    # every pattern may time out once, and the one reply text (rule or fallback) may use its whole budget. The
    # regex module bounds a match in CPU time (clock()), so CPU time is what is held to the bound; wall time,
    # which a machine short of CPU stretches for every process alike, only to a loose multiple of it
    bound = len(patterns) * LIMITS.regex_seconds + LIMITS.render_seconds
    detail = f"{rules!r} {text[:80]!r}"
    assert cpu < 2 * bound + 0.1, f"decide used {cpu:.3f} s of CPU (bound {bound:.3f} s): {detail}"
    assert took < 10 * bound + 1, f"decide took {took:.3f} s (bound {bound:.3f} s): {detail}"
    for reply in decision.replies:
        content = getattr(reply, "content", "")
        assert len(content) <= LIMITS.render_chars, f"a reply of {len(content)} characters: {rules!r}"


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
