"""Portfolio accounting: hand-computed sequences, rolling 24 h P&L, drawdown, ledger identities, state round trip
(whole, and as the deltas portfolio_state rows carry)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.portfolio import DAY_MS, Portfolio, state_from_rows

H = 3_600_000
BTC, ETH = "BTC/USDT", "ETH/USDT"


def approx(x: float) -> object:
    return pytest.approx(x, rel=1e-12, abs=1e-9)


def test_buy_add_reduce_flip_and_close_by_hand() -> None:
    p = Portfolio(10_000.0)
    p.apply_fill(BTC, "buy", 2.0, 100.0, 0.2, 0)
    p.mark({BTC: 100.0}, 0)
    s = p.snapshot()
    assert (s.cash, s.equity, s.realized_pnl, s.positions, s.avg_prices) == (
        approx(9_799.8), approx(9_999.8), approx(-0.2), {BTC: 2.0}, {BTC: 100.0})
    p.apply_fill(BTC, "buy", 1.0, 130.0, 0.13, 10)  # average cost: (200 + 130) / 3 = 110
    p.mark({BTC: 120.0}, H)
    s = p.snapshot()
    assert s.avg_prices[BTC] == approx(110.0) and s.cash == approx(9_669.67)
    assert s.unrealized_pnl == approx(30.0) and s.equity == approx(10_029.67) and s.peak_equity == approx(10_029.67)
    p.apply_fill(BTC, "sell", 1.0, 140.0, 0.14, H + 1)  # realizes 1 * (140 - 110)
    s = p.snapshot()
    assert s.realized_pnl == approx(-0.33 + 30.0 - 0.14) and s.positions == {BTC: 2.0}
    assert s.avg_prices[BTC] == approx(110.0)
    p.apply_fill(BTC, "sell", 4.0, 90.0, 0.36, H + 2)  # flip: closes 2 at a loss of 40, opens 2 short at 90
    s = p.snapshot()
    assert s.positions == {BTC: -2.0} and s.avg_prices[BTC] == approx(90.0)
    assert s.realized_pnl == approx(-10.83) and s.cash == approx(10_169.17)
    # Round trip 1: P&L -0.2 - 0.13 + 30 - 0.14 - 40 - 0.18 (half the flip's fee) over 330 opened.
    assert s.trade_returns == (approx(-10.65 / 330.0),)
    p.mark({BTC: 80.0}, 2 * H)
    s = p.snapshot()
    assert s.unrealized_pnl == approx(20.0) and s.equity == approx(10_009.17)
    assert s.drawdown == approx((10_029.67 - 10_009.17) / 10_029.67)
    assert s.gross_exposure == approx(160.0) and s.net_exposure == approx(-160.0)
    assert s.leverage == approx(160.0 / 10_009.17)
    p.apply_fill(BTC, "buy", 2.0, 85.0, 0.17, 2 * H + 1)  # closes the short: +10
    s = p.snapshot()
    assert s.positions == {} and s.cash == approx(9_999.0) and s.realized_pnl == approx(-1.0)
    assert s.trade_returns[-1] == approx((-0.18 + 10.0 - 0.17) / 180.0) and len(s.trade_returns) == 2
    assert s.fees == approx(0.2 + 0.13 + 0.14 + 0.36 + 0.17)


def test_daily_pnl_is_a_true_rolling_24_hours_from_marks() -> None:
    p = Portfolio(1_000.0)
    p.apply_fill(ETH, "buy", 1.0, 100.0, 0.0, 0)
    for t, px in ((0, 100.0), (H, 150.0), (2 * H, 120.0), (3 * H, 120.0)):
        p.mark({ETH: px}, t)
    assert p.snapshot().daily_pnl == approx(20.0), "younger than 24 h: against the starting equity"
    p.mark({ETH: 110.0}, DAY_MS + H)  # 24 h ago exactly: the mark at 1 h (equity 1050)
    assert p.snapshot().daily_pnl == approx(1_010.0 - 1_050.0)
    p.mark({ETH: 110.0}, DAY_MS + 2 * H + 1)  # the mark at 2 h (1020) is the last at or before the cutoff
    assert p.snapshot().daily_pnl == approx(1_010.0 - 1_020.0)
    p.mark({ETH: 130.0}, DAY_MS + 3 * H + 5)  # the 3 h mark equals the 2 h one (runs collapse, same value)
    assert p.snapshot().daily_pnl == approx(1_030.0 - 1_020.0)
    p.mark({ETH: 130.0}, 3 * DAY_MS)  # all older than 24 h: the latest at or before the cutoff
    assert p.snapshot().daily_pnl == approx(0.0)
    assert p.snapshot().drawdown == approx((1_050.0 - 1_030.0) / 1_050.0)
    with pytest.raises(ValueError, match="before the previous mark"):
        p.mark({ETH: 1.0}, DAY_MS)


def test_bad_fills_name_the_field() -> None:
    p = Portfolio(100.0)
    for kwargs, field in (({"side": "hold"}, "side"), ({"qty": 0.0}, "qty"), ({"price": float("nan")}, "price"),
                          ({"fee": float("inf")}, "fee")):
        args = {"symbol": BTC, "side": "buy", "qty": 1.0, "price": 10.0, "fee": 0.0, "ts": 0, **kwargs}
        with pytest.raises(ValueError, match=f"fill {field}"):
            p.apply_fill(**args)
    with pytest.raises(ValueError, match="initial_cash"):
        Portfolio(0.0)
    with pytest.raises(ValueError, match="lacks field 'cash'"):
        Portfolio.from_state({k: v for k, v in p.to_state().items() if k != "cash"})


fills = st.lists(st.tuples(st.sampled_from([BTC, ETH]), st.sampled_from(["buy", "sell"]),
                           st.floats(0.001, 5.0), st.floats(1.0, 1_000.0), st.floats(0.0, 2.0),
                           st.booleans()), min_size=1, max_size=40)


@settings(max_examples=400, deadline=None)
@given(fills)
def test_ledger_identities_and_exact_state_round_trip(seq: list[tuple[str, str, float, float, float, bool]]) -> None:
    p = Portfolio(50_000.0, max_trade_returns=5)
    cash, pos = 50_000.0, {BTC: 0.0, ETH: 0.0}
    last = {BTC: 1.0, ETH: 1.0}
    for i, (sym, side, qty, px, fee, mark) in enumerate(seq):
        p.apply_fill(sym, side, qty, px, fee, i * 60_000)
        sign = 1.0 if side == "buy" else -1.0
        cash -= sign * qty * px + fee
        pos[sym] += sign * qty
        last[sym] = px
        if mark:
            p.mark({sym: px * 1.01}, i * 60_000)
            last[sym] = px * 1.01
        s = p.snapshot()
        assert s.cash == pytest.approx(cash, rel=1e-12, abs=1e-6)
        for k, q in pos.items():
            assert s.positions.get(k, 0.0) == pytest.approx(q, rel=1e-9, abs=1e-9)
        assert s.equity == pytest.approx(50_000.0 + s.realized_pnl + s.unrealized_pnl, rel=1e-12, abs=1e-6)
        assert s.drawdown >= 0.0 and len(s.trade_returns) <= 5
        assert s.gross_exposure >= abs(s.net_exposure) - 1e-9
    back = Portfolio.from_state(json.loads(json.dumps(p.to_state())))
    assert back.to_state() == p.to_state() and back.snapshot() == p.snapshot()
    back.apply_fill(BTC, "sell", 0.5, 321.0, 0.1, 10**9)
    p.apply_fill(BTC, "sell", 0.5, 321.0, 0.1, 10**9)
    assert back.snapshot() == p.snapshot(), "the restored portfolio goes on exactly like the original"


def _day_of_trading(p: Portfolio, i: int) -> None:
    """Mark ``i`` of three days of 15-minute marks: round trips on day one, flat after."""
    if i < 96 and i % 8 == 0:
        p.apply_fill(BTC, "buy", 1.0, 100.0 + i, 0.1, i * 15 * 60_000)
    if i < 96 and i % 8 == 4:
        p.apply_fill(BTC, "sell", 1.0, 101.0 + i * 1.5, 0.1, i * 15 * 60_000)
    p.mark({BTC: 100.0 + i}, i * 15 * 60_000)


def test_rows_carry_the_state_as_deltas_and_rebuild_it_exactly() -> None:
    p, rows = Portfolio(10_000.0), []
    for i in range(3 * 24 * 4):
        _day_of_trading(p, i)
        rows.append(json.loads(json.dumps(p.row_state())))
        if i in (50, 95):
            assert state_from_rows(rows) == p.to_state()
    assert state_from_rows(rows) == p.to_state() and p.closed == 12 and len(p.hist_ts) == 1
    changed = [k for k, r in enumerate(rows) if r["trade_returns"] is not None]
    assert len(changed) == 12 and all(len(json.dumps(r)) < 1_000 for r in rows), "unchanged returns not repeated"
    assert state_from_rows(rows[changed[-1]:]) == p.to_state(), "the rows since the last round trip suffice"
    with pytest.raises(ValueError, match="trade returns"):
        state_from_rows(rows[changed[-1] + 1:])
    back = Portfolio.from_state(state_from_rows(rows[:60]))
    for k in range(60, len(rows)):  # restored from rows, it writes the same rows
        _day_of_trading(back, k)
        assert back.row_state() == rows[k]
