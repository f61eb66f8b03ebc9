"""Event-time bars: OHLCV exactness, closing rule, late trades, empty bars, snapshots."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from flows.operators.bars import BarBuilder
from flows.records import Trade

M = 60_000


def tr(i: int, ts: int, price: float, qty: float = 1.0, maker: bool = False) -> Trade:
    return Trade("BTC/USDT", i, ts, price, qty, maker)


def test_bar_closes_on_first_trade_past_boundary() -> None:
    b = BarBuilder("BTC/USDT", "1m")
    bars, late = b.update([tr(1, 1_000, 10.0, 1.0), tr(2, 30_000, 12.0, 1.0, True), tr(3, 59_999, 9.0, 2.0)])
    assert bars == [] and late == []
    bars, _ = b.update([tr(4, M, 11.0)])
    (bar,) = bars
    assert (bar.ts, bar.open, bar.high, bar.low, bar.close) == (0, 10.0, 12.0, 9.0, 9.0)
    assert (bar.volume, bar.quote_volume, bar.trade_count) == (4.0, 40.0, 3)
    assert bar.vwap == 10.0
    assert bar.taker_buy_volume == 3.0  # trade 2 had the buyer as maker


def test_out_of_order_trade_in_open_bar_amends_it_and_late_trade_is_returned() -> None:
    b = BarBuilder("BTC/USDT", "1m")
    b.update([tr(1, 10_000, 10.0), tr(3, 50_000, 11.0)])
    b.update([tr(2, 20_000, 15.0)])  # out of order, bar still open
    bars, late = b.update([tr(4, M + 1, 12.0), tr(5, 59_000, 99.0)])
    assert bars[0].high == 15.0 and bars[0].trade_count == 3
    assert [t.trade_id for t in late] == [5]


def test_allowed_lateness_keeps_bar_open() -> None:
    b = BarBuilder("BTC/USDT", "1m", allowed_lateness_ms=5_000)
    b.update([tr(1, 10_000, 10.0)])
    bars, _ = b.update([tr(2, M + 1_000, 11.0)])
    assert bars == []
    bars, late = b.update([tr(3, 59_000, 8.0)])
    assert late == [] and bars == []
    bars, _ = b.update([tr(4, M + 5_000, 11.0)])
    assert bars[0].low == 8.0


def test_gaps_become_empty_bars_at_last_close() -> None:
    b = BarBuilder("BTC/USDT", "1m")
    b.update([tr(1, 0, 10.0)])
    bars, _ = b.update([tr(2, 3 * M + 5, 20.0)])
    assert [x.ts for x in bars] == [0, M, 2 * M]
    assert [x.volume for x in bars[1:]] == [0.0, 0.0]
    assert all(x.close == 10.0 and x.trade_count == 0 for x in bars[1:])


def test_without_filling_gaps_are_skipped() -> None:
    b = BarBuilder("BTC/USDT", "1m", fill_empty=False)
    b.update([tr(1, 0, 10.0)])
    bars, _ = b.update([tr(2, 3 * M + 5, 20.0)])
    assert [x.ts for x in bars] == [0]


def test_advance_closes_quiet_symbol() -> None:
    b = BarBuilder("BTC/USDT", "1m")
    b.update([tr(1, 0, 10.0)])
    assert [x.ts for x in b.advance(2 * M)] == [0, M]


def test_snapshot_round_trip_gives_same_output() -> None:
    a = BarBuilder("BTC/USDT", "5m")
    first = [tr(i, i * 7_000, 100 + i % 7) for i in range(100)]
    rest = [tr(100 + i, 700_000 + i * 7_000, 100 + i % 5) for i in range(100)]
    a.update(first)
    b = BarBuilder("BTC/USDT", "5m", state=a.snapshot())
    assert a.update(rest) == b.update(rest)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20 * M), st.floats(1.0, 1e5), st.integers(100, 10**11).map(lambda u: u / 1e8)),
                min_size=1, max_size=200),
       st.integers(1, 50))
def test_bars_conserve_volume_and_count(raw, chunk) -> None:
    # quantities on Binance's 1e-8 lot grid, the step the builder counts in
    trades = [tr(i, ts, p, q) for i, (ts, p, q) in enumerate(sorted(raw))]
    b = BarBuilder("BTC/USDT", "1m")
    bars, late = [], []
    for i in range(0, len(trades), chunk):
        out, lt = b.update(trades[i:i + chunk])
        bars += out
        late += lt
    bars += b.advance(trades[-1].ts + 2 * M)
    assert late == []  # sorted input is never late
    assert sum(x.trade_count for x in bars) == len(trades)
    assert math.isclose(sum(x.volume for x in bars), sum(t.qty for t in trades), rel_tol=1e-9)
    assert all(x.low <= min(x.open, x.close) and x.high >= max(x.open, x.close) for x in bars)
    assert [x.ts for x in bars] == list(range(bars[0].ts, bars[-1].ts + M, M))  # contiguous
