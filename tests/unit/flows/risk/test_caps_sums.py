"""The caps' per-book sums and C lookups give bit for bit the per-decision loops they replace."""

from __future__ import annotations

import random

from flows.risk.engine import _Sums
from flows.risk.limits import _peers_among


def test_sums_without_each_symbol_equal_the_sum_over_the_others() -> None:
    rng = random.Random(3)
    for _ in range(300):
        book: dict[str, float | None] = {
            f"s{i}": rng.choice([rng.uniform(0, 1e-3), rng.uniform(0, 1e6), rng.lognormvariate(0, 8)])
            for i in range(rng.randint(0, 40))}
        sums = _Sums(book)
        assert sums.total == sum([v for v in book.values() if v is not None])
        for sym in book:
            assert sums.without[sym] == sum([v for s, v in book.items() if s != sym])  # == on floats: bit for bit
            assert sums.names[:sums.at[sym]] + sums.names[sums.at[sym] + 1:] == [s for s in book if s != sym]


def test_sums_name_the_unmarked_symbols() -> None:
    sums = _Sums({"A": 1.0, "B": None, "C": 2.0})
    assert sums.unmarked == ["B"]
    assert sums.without["B"] == 3.0


def test_peers_among_keeps_the_order_and_skips_symbols_without_a_slot() -> None:
    index = {"A": 0, "B": 1, "C": 2, "D": 3}
    ok = [True, False, True, True]
    assert _peers_among(["D", "B", "A", "C"], index, ok) == ["D", "A", "C"]
    assert _peers_among(["D", "X", "A"], index, ok) == ["D", "A"]  # X: no bar yet
    assert _peers_among(["B"], index, ok) == []
    assert _peers_among([], index, ok) == []
    assert _peers_among(iter(["C", "A"]), index, ok) == ["C", "A"]
