"""bench/suite.py's ordering and ratios, with the measurements stubbed: which reference each kefu row is judged
against. (The measurements themselves are the benchmark's business; here only its bookkeeping.)"""

from __future__ import annotations

import argparse

import pytest

from bench import suite as bench_suite
from bench.suite import Row, Suite


def _suite(adjacent: bool, rates: dict[str, list[float]], rows: list[Row]) -> tuple[Suite, list[str]]:
    """A Suite whose references and rows take their rates from `rates` in order, and which records the order of
    its measurements."""
    s = Suite.__new__(Suite)
    s.args = argparse.Namespace(only=["answer", "sustained"], quick=False, adjacent=adjacent, long_seconds=0)
    s.refs, s.rows, s.checks, s.counter, s.last_try = {}, [], [], 0, True
    s.peers = list(bench_suite.PEERS)
    order: list[str] = []
    feed = {k: iter(v) for k, v in rates.items()}

    def reference(kind: str) -> Row:
        order.append(kind)
        row = s.refs.get(kind) or Row(kind)
        row.measures.append(next(feed[kind]))
        row.rate = sum(row.measures) / len(row.measures)
        s.refs[kind] = row
        return row

    def measure(row: Row) -> None:
        order.append(row.label())
        row.rate = next(feed[row.label()])

    s.reference, s.answer, s.sustained = reference, measure, measure
    return s, order


@pytest.fixture
def planned(monkeypatch: pytest.MonkeyPatch):
    def use(rows: list[Row]) -> None:
        monkeypatch.setattr(bench_suite, "plan", lambda args: rows)
    return use


def test_each_row_is_judged_against_the_references_measured_next_to_it(planned) -> None:
    hit, big, sus = Row("answer", "xml", "hit", 10, "memory"), Row("answer", "xml", "hit", 10000, "memory"), \
        Row("sustained", "xml", "hit", 10, "memory")
    planned([hit, big, sus])
    s, order = _suite(True, {"bare": [20000, 10000, 20000, 30000], "minimal": [9000, 9000],
                             "bare+send": [5000, 5000], "wechatpy+send": [5000, 4000, 6000], "werobot": [3000, 3000],
                             hit.label(): [9000], big.label(): [3000], sus.label(): [5500]}, [])
    s.run()
    assert order == ["bare", "minimal", "bare+send", "wechatpy+send", "werobot",  # first: they serve the first row
                     hit.label(), "bare",  # hit's after, big's before
                     big.label(), "bare", "wechatpy+send",  # big's after (and sus's before, with a fresh peer)
                     sus.label(), "bare", "wechatpy+send",  # sus's after, which is also the run's last measure…
                     "minimal", "bare+send", "werobot"]  # …but those not measured next to rows are measured again
    assert hit.near == {"bare": [20000, 10000]} and big.near == {"bare": [10000, 20000]}
    assert sus.near == {"bare": [20000, 30000], "wechatpy+send": [4000, 6000]}
    assert hit.x_bare == pytest.approx(9000 / 15000)
    assert big.x_bare == pytest.approx(3000 / 15000)
    # the 10,000-rule row against the 10-rule row, each as a ratio to its own bare: 0.2 / 0.6, not 3000 / 9000
    assert big.check.startswith("0.33× r10") and big.result == "FAIL"
    # the peers judge the sustained row: the wechatpy+send measured next to it, werobot's first and last
    assert sus.x_bare == pytest.approx(5500 / 25000)
    assert sus.x_peer == pytest.approx(5500 / 5000) and sus.x_werobot == pytest.approx(5500 / 3000)
    assert sus.check == "≥1× wechatpy+send ≥1.5× werobot" and sus.result == "PASS"  # 0.22× bare: no target
    assert "bare near 20,000/30,000" in sus.note and "wechatpy+send near 4,000/6,000" in sus.note
    assert s.refs["bare"].rate == pytest.approx(20000)  # the reference row: the mean of all its measures


def test_a_sustained_row_below_a_peer_fails_and_a_missing_peer_is_not_judged(planned) -> None:
    mem, sql = Row("sustained", "xml", "hit", 10, "memory"), Row("sustained", "xml", "hit", 10, "sqlite")
    planned([mem, sql])
    s, _ = _suite(False, {"bare": [20000, 20000], "bare+send": [5000, 5000], "wechatpy+send": [5000, 5000],
                          mem.label(): [4000], sql.label(): [4500]}, [])
    s.peers = ["wechatpy+send"]  # WeRoBot not installed
    s.run()
    assert mem.x_peer == pytest.approx(0.8) and mem.result == "FAIL" and "werobot not measured" in mem.note
    assert sql.x_peer == pytest.approx(0.9) and sql.check == "≥0.8× wechatpy+send" and sql.result == "PASS"


def test_without_adjacent_references_the_rows_use_the_first_and_last(planned) -> None:
    hit = Row("answer", "xml", "hit", 10, "memory")
    planned([hit])
    s, order = _suite(False, {"bare": [20000, 10000], "minimal": [9000, 9000], hit.label(): [6000]}, [])
    s.run()
    assert order == ["bare", "minimal", hit.label(), "bare", "minimal"]
    assert hit.near == {} and hit.x_bare == pytest.approx(6000 / 15000)
