"""The conversation log's write-behind, and the rule hit counts it feeds to the store."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from bot.convlog import ConversationLog, count_hits
from bot.errors import StoreError
from bot.store import LogEntry, MemoryStore, RuleHits

SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI).timestamp()


def test_hits_count_pushes_a_rule_answered_per_local_day():
    entries = [LogEntry(at("2027-01-14T23:59:30"), "o1", "push", "text", "快递", "shipping"),
               LogEntry(at("2027-01-15T00:00:10"), "o1", "push", "text", "快递", "shipping"),
               LogEntry(at("2027-01-15T00:00:11"), "o1", "sent", "text", "明天到", "shipping"),  # not a hit
               LogEntry(at("2027-01-15T00:00:12"), "o2", "push", "text", "随便", ""),  # the fallback
               LogEntry(at("2027-01-15T00:00:20"), "o2", "push", "text", "快递", "shipping"),
               LogEntry(at("2027-01-15T00:00:15"), "o2", "transfer", "text", "", "human"),
               LogEntry(at("2027-01-15T00:00:15"), "o2", "push", "text", "人工", "human")]
    assert count_hits(entries, SHANGHAI) == {
        "2027-01-14": {"shipping": (1, at("2027-01-14T23:59:30"))},
        "2027-01-15": {"shipping": (2, at("2027-01-15T00:00:20")), "human": (1, at("2027-01-15T00:00:15"))}}
    # the same instant is another day in another zone
    assert list(count_hits(entries[:1], ZoneInfo("UTC"))) == ["2027-01-14"]
    assert list(count_hits(entries[:1], ZoneInfo("Asia/Tokyo"))) == ["2027-01-15"]


class FlakyHits(MemoryStore):
    """A memory store whose hits_add fails while `down` is set, and counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.calls = 0

    async def hits_add(self, counts, day):
        self.calls += 1
        if self.down:
            raise StoreError("down")
        await super().hits_add(counts, day)


async def test_one_hits_add_per_flushed_batch_and_none_lost_while_the_store_fails():
    store = FlakyHits()
    convlog = ConversationLog(store, SHANGHAI)
    t = at("2027-01-15T10:00:00")
    convlog.add(*[LogEntry(t + n, "o1", "push", "text", "快递", "shipping") for n in range(3)])
    await convlog.flush()
    assert store.calls == 1
    assert (await store.hits("2027-01-15")) == {"shipping": RuleHits(3, 3, t + 2)}
    store.down = True
    convlog.add(LogEntry(t + 10, "o1", "push", "text", "人工", "human"))
    await convlog.flush()
    convlog.add(LogEntry(t + 11, "o1", "push", "text", "人工", "human"))
    await convlog.flush()
    assert [e.rule for e in await store.log_query()][-2:] == ["human", "human"]  # the log itself is written
    assert "human" not in await store.hits("2027-01-15")
    store.down = False
    await convlog.flush()  # nothing new to log: the kept counts still go
    assert (await store.hits("2027-01-15"))["human"] == RuleHits(2, 2, t + 11)
    calls = store.calls
    await convlog.flush()
    assert store.calls == calls  # nothing to count: no round trip
