"""A generated conversation log of a shop's customer service: what users write (templates with variation —
greetings, particles, punctuation full- and half-width, emoji, order numbers), which rule answered, transfers
and replies, over a week with the day's and the week's rhythm. For bench/insights.py and the insights tests;
no data set is copied: every message is made here from the templates below.

`unanswered_variants(core_texts, n, rng)` gives n writings of one question; `generate(n, ...)` a whole log.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from bot.store import LogEntry

PREFIXES = ("", "", "", "你好，", "您好 ", "亲，", "请问", "在吗？", "老板，", "客服，", "hi ", "你好呀，", "亲亲 ")
SUFFIXES = ("", "", "", "？", "?", "呀", "啊", "～", "！", "，急", " 谢谢", "[捂脸]", "😊", "？？", "哈", "。", "呢")

# Questions the bench's rules do not answer: (group word, ways users ask it)
UNANSWERED = {
    "发票": ("发票怎么开", "能开发票吗", "怎么开发票", "可以开增值税发票吗", "发票开一下", "我要开发票",
             "发票什么时候给"),
    "便宜": ("能便宜点吗", "可以便宜一点吗", "便宜点呗", "能不能便宜些", "再便宜点可以吗", "便宜一点吧",
             "还能再便宜吗"),
    "尺码": ("尺码偏大还是偏小", "尺码怎么选", "平时穿M选什么尺码", "尺码标准吗", "170穿什么尺码"),
    "包邮": ("包邮吗", "偏远地区包邮吗", "新疆包邮不", "满多少包邮", "能包邮吗"),
    "优惠券": ("优惠券怎么用", "优惠券用不了", "有没有优惠券", "优惠券在哪领"),
    "到账": ("退款多久到账", "钱什么时候到账", "退款还没到账", "到账要几天"),
    "保修": ("保修多久", "坏了能保修吗", "保修要带发票吗", "在哪里保修"),
    "颜色": ("颜色有色差吗", "还有别的颜色吗", "颜色和图片一样吗", "黑色颜色深吗"),
}
# Questions the bench's rules answer: (rule, ways users ask it, transfer)
ANSWERED = (
    ("shipping", ("我的快递到哪了", "什么时候发货", "物流怎么不动了", "快递几天能到", "发货了吗", "查一下物流"),
     False),
    ("human", ("人工", "转人工", "人工客服"), True),
    ("hello", ("你好", "您好", "在吗", "hello"), False),
    ("order-number", ("订单 {n}", "单号{n}", "帮我查下订单{n}", "订单号：{n}"), True),
    ("return", ("我要退货", "怎么退货", "退货地址是哪里", "申请退货"), False),
)
# Things users write that are no question at all (the fallback gets them too)
NOISE = ("嗯嗯", "哈哈哈", "好的", "ok", "？", "。。。", "图片收到了吗", "晚点再说", "算了", "6666", "[图片]",
         "刚才那个",
         "不是这个", "我看看", "行吧", "啥意思", "怎么回事", "等一下")


def vary(core: str, rng: random.Random) -> str:
    """One way a user writes `core`."""
    text = core.replace("{n}", str(rng.randrange(10**11, 10**12)))
    text = rng.choice(PREFIXES) + text + rng.choice(SUFFIXES)
    if rng.random() < 0.1:
        text = text.replace("？", "?").replace("，", ",")
    if rng.random() < 0.05:
        text = " " + text.upper() + " "
    return text


def unanswered_variants(cores: tuple[str, ...], n: int, rng: random.Random) -> list[str]:
    return [vary(rng.choice(cores), rng) for _ in range(n)]


@dataclass
class Shape:
    """When users write: busier at 10-12 and 19-23, quiet at night, weekends a little busier."""

    start: float  # epoch of the first moment
    seconds: float

    def weight(self, ts: float, zone_offset: float = 8 * 3600) -> float:
        local = ts + zone_offset
        hour, weekday = int(local // 3600) % 24, (int(local // 86400) + 3) % 7  # epoch day 0 was a Thursday
        busy = (0.15, 0.08, 0.05, 0.04, 0.04, 0.08, 0.2, 0.4, 0.7, 0.9, 1.0, 1.0, 0.8, 0.8, 0.9, 0.9, 0.85, 0.8,
                0.9, 1.0, 1.0, 0.95, 0.7, 0.35)[hour]
        return busy * (1.2 if weekday >= 5 else 1.0)

    def times(self, n: int, rng: random.Random) -> list[float]:
        out: list[float] = []
        while len(out) < n:
            ts = self.start + rng.random() * self.seconds
            if rng.random() < self.weight(ts) / 1.2:
                out.append(ts)
        out.sort()
        return out


def generate(n: int, start: float, seconds: float = 7 * 86400, users: int = 50_000, seed: int = 22,
             unanswered: float = 0.3, noise: float = 0.05) -> Iterator[LogEntry]:
    """n user messages (and the log lines that go with them: a reply sent, a transfer), in time order: about
    `unanswered` of them questions no rule answers, `noise` chatter, the rest answered by a rule."""
    rng = random.Random(seed)
    topics = list(UNANSWERED.values())
    topic_weights = [1.0 / (i + 1) for i in range(len(topics))]  # a few questions are asked far more often
    for ts in Shape(start, seconds).times(n, rng):
        user = f"o{rng.randrange(users):07d}xYz_generated"
        roll = rng.random()
        if roll < unanswered:
            text = vary(rng.choices(topics, topic_weights)[0][rng.randrange(3)], rng) if rng.random() < 0.7 else \
                vary(rng.choice(rng.choices(topics, topic_weights)[0]), rng)
            yield LogEntry(ts, user, "push", "text", text, "")
            yield LogEntry(ts, user, "transfer", "text", "", "")
        elif roll < unanswered + noise:
            yield LogEntry(ts, user, "push", "text", vary(rng.choice(NOISE), rng), "")
            yield LogEntry(ts, user, "transfer", "text", "", "")
        elif roll < unanswered + noise + 0.03:
            yield LogEntry(ts, user, "push", "event/user_enter_tempsession", "", "welcome")
            yield LogEntry(ts + 0.2, user, "sent", "text", "您好，请问有什么可以帮您？", "")
        else:
            rule, cores, transfer = rng.choice(ANSWERED)
            yield LogEntry(ts, user, "push", "text", vary(rng.choice(cores), rng), rule)
            if transfer:
                yield LogEntry(ts, user, "transfer", "text", "", rule)
            else:
                yield LogEntry(ts + 0.3, user, "sent", "text", "（规则的回复）", "")
