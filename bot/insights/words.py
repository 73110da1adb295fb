"""The words of a message, for grouping what users ask: the text normalised as the rules normalise it (see
engine/conditions.py), cut into words by rjieba, less the stop words.

rjieba (a binding of jieba-rs, the Rust port of jieba) was chosen over jieba itself: the same dictionary and
the same cuts, a 3.7 MB wheel against jieba's 19 MB source package, and about 2 µs a message against jieba's
pure-Python tens of µs — the difference between seconds and minutes for a million messages (see
docs/insights.md). `cut_for_search` also gives the shorter words inside a long one (开发票 → 开发, 发票,
开发票), so "能开发票吗" and "发票怎么开" share 发票.
"""

from __future__ import annotations

import re

import rjieba

from ..engine.conditions import normalize

__all__ = ["STOP_WORDS", "normalize", "words"]

# Function words and the politeness of customer-service chat: they say nothing about what is asked.
_STOP = """
请问 问下 问一下 一下 你好 您好 你们 我们 他们 这个 那个 这些 那些 这样 那样 这里 那里 哪里 哪个 什么 怎么 怎样 怎么样
为什么 为啥 是不是 是否 可以 可不可以 能不能 能否 不能 不会 没有 有没有 还是 还有 就是 但是 而且 然后 因为 所以 如果
已经 一直 现在 今天 的话 一点 一些 有点 好的 好吧 谢谢 感谢 麻烦 辛苦 亲亲 客服 在吗 在不在 您们 咱们 自己 时候
知道 告诉 需要 想要 我要 我想 想问 问问 请教 帮忙 帮我 一个 多少 几个 吗 呢 吧 啊 呀 哦 哈 嗯
老板 掌柜 店家 小姐姐 美女 帅哥 亲爱 亲爱的 宝贝 hi hello hey ok okay thanks thank you
"""
STOP_WORDS = frozenset(_STOP.split())
# WeChat writes its emoji as text: [捂脸], [微笑], [Facepalm]
_EMOJI_CODE = re.compile(r"\[[^\[\]\s]{1,10}(?:\]|$)")  # (normalising trims a last "]")
_PARTICLES = "哈呀啊呢吧嘛哦啦么"  # the segmenter sometimes glues one to the word before: 到账哈


def words(normalized: str) -> tuple[str, ...]:
    """The content words of a normalised text, each once, in order: two characters or more, not a stop word,
    not a number (order numbers and amounts differ in every message)."""
    out: list[str] = []
    for word in rjieba.cut_for_search(_EMOJI_CODE.sub(" ", normalized)):
        word = word.rstrip(_PARTICLES)
        if len(word) >= 2 and word not in STOP_WORDS and not word.isdigit() and any(c.isalpha() for c in word) \
                and word not in out:
            out.append(word)
    return tuple(out)
