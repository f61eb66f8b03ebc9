"""flows/replay.py: bar-time chunks of a history."""

from __future__ import annotations

import pytest

from flows.records import Bar
from flows.replay import bar_time_chunks
from training.backfill import operator_records

TF = 60_000


def _bars(symbol: str, n: int):
    for i in range(n):
        yield Bar(symbol, "1m", i * TF, 1 + i * 0.01, 1.1, 0.9, 1 + i * 0.011, 1.0, 1.0, 1, 1.0, 0.5)


def _close(rec) -> int:
    return rec.ts + TF if isinstance(rec, Bar) else rec.ts


def test_chunks_hold_whole_bar_closes_in_order_and_lose_nothing() -> None:
    recs = list(operator_records({"A": _bars("A", 70), "B": _bars("B", 70)}, "1m"))  # bars and feature rows
    for n in (1, 7, 64):
        chunks = list(bar_time_chunks(recs, n, TF))
        assert [r for c in chunks for r in c] == recs
        closes = [sorted({_close(r) for r in c}) for c in chunks]
        assert all(len(c) == n for c in closes[:-1]) and 1 <= len(closes[-1]) <= n
        assert all(a[-1] < b[0] for a, b in zip(closes, closes[1:], strict=False))  # no close split over chunks


def test_a_chunk_below_one_bar_time_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1 bar time"):
        list(bar_time_chunks([], 0, TF))
