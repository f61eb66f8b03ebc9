"""Kelly sizing against hand-computed values and the seed's PositionSizer example."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.portfolio import Portfolio
from flows.risk.config import RiskConfig, SizingConfig
from flows.risk.engine import RiskEngine
from flows.risk.sizing import annual_vol, kelly_estimate, kelly_fraction, position_fraction


def trades(n_win: int, win: float, n_loss: int, loss: float) -> list[float]:
    return [win] * n_win + [-loss] * n_loss


RAW = {"prior_trades": 0.0}  # the record alone: the seed's formula


@pytest.mark.parametrize(("method", "returns", "want"), [
    ("half_kelly", trades(11, 0.025, 9, 0.015), 0.125),  # seed: p .55, W 5/3 -> 0.28, clipped .25, halved
    ("quarter_kelly", trades(11, 0.025, 9, 0.015), 0.0625),
    ("full_kelly", trades(10, 0.03, 10, 0.02), 0.5 - 0.5 / 1.5),
    ("half_kelly", trades(10, 0.03, 10, 0.02), (0.5 - 0.5 / 1.5) / 2),
    ("half_kelly", trades(5, 0.01, 15, 0.02), 0.25 * 0.25 / 2),  # negative edge: the floor, 1/4 of the prior's
    ("half_kelly", [], 0.125),  # no trades: the prior .5, +2 %/-1 % -> .25 -> half
    ("full_kelly", trades(20, 0.01, 0, 0.0), 0.25),  # no loss in the sample: the cap
    ("fixed_fraction", trades(5, 0.01, 15, 0.02), 0.02),
])
def test_kelly_fraction_of_the_raw_record_by_hand(method: str, returns: list[float], want: float) -> None:
    assert kelly_fraction(returns, SizingConfig(method=method, **RAW)) == pytest.approx(want, rel=1e-12)


def test_the_record_is_shrunk_toward_the_prior_by_its_size() -> None:
    cfg = SizingConfig(method="full_kelly", prior_trades=20, kelly_cap=1.0)
    # 10 wins of +3 % and 10 losses of -2 %, prior 20 pseudo-trades of 50 % wins, +2 % / -1 %
    p, w, lo = (10 + 10) / 40, (0.3 + 0.2) / 20, (0.2 + 0.1) / 20
    assert kelly_estimate(trades(10, 0.03, 10, 0.02), cfg).fraction == pytest.approx(p - (1 - p) * lo / w)
    # more of the same record: the estimate moves toward the record's own Kelly (0.5 - 0.5 / 1.5)
    values = [kelly_estimate(trades(n, 0.03, n, 0.02), cfg.model_copy(update={"lookback_trades": 1000})).fraction
              for n in (10, 40, 160, 400)]
    assert values == sorted(values, reverse=True) and values[-1] == pytest.approx(0.5 - 0.5 / 1.5, abs=0.02)


def test_a_losing_record_sizes_at_probation_and_recovers_with_wins() -> None:
    """20 straight losses do not size to 0 (the old permanent lock): probation, and wins bring Kelly back."""
    cfg = SizingConfig(method="half_kelly")
    record = trades(0, 0.0, 20, 0.01)
    est = kelly_estimate(record, cfg)
    assert est.halted and est.raw <= 0 and est.fraction == pytest.approx(0.25 * 0.25 * 0.5)
    for _ in range(60):  # the profitable regime that follows: 60 % wins of +1.5 % against -1 %
        record += [0.015, 0.015, 0.015, -0.01, -0.01]
        if kelly_estimate(record, cfg).fraction > est.fraction:
            break
    after = kelly_estimate(record, cfg)
    assert not after.halted and after.fraction > est.fraction and len(record) < 20 + 5 * 60
    assert kelly_estimate(trades(0, 0.0, 20, 0.01), cfg.model_copy(update={"probation_fraction": 0.0})).fraction == 0


def test_kelly_uses_only_the_lookback() -> None:
    cfg = SizingConfig(method="full_kelly", lookback_trades=20, prior_trades=0)
    old_losses = trades(0, 0.0, 50, 0.05)
    assert kelly_fraction(old_losses + trades(10, 0.03, 10, 0.02), cfg) == pytest.approx(0.5 - 0.5 / 1.5)


def test_position_fraction_confidence_vol_target_stop_and_cap() -> None:
    cfg = SizingConfig()
    assert annual_vol(0.001, cfg, 60_000) == pytest.approx(0.001 * math.sqrt(525_600))
    assert annual_vol(float("nan"), cfg, 60_000) is None and annual_vol(0.001, cfg, None) is None
    assert position_fraction(0.125, 0.8, 0.4, cfg) == pytest.approx(0.125 * 0.8 * 0.5)
    assert position_fraction(0.125, 0.8, 0.1, cfg) == pytest.approx(0.1), "low volatility never scales up"
    assert position_fraction(0.125, 0.8, None, SizingConfig(stop_loss_pct=0.02)) == 0.25, "capped"
    assert position_fraction(0.125, float("nan"), None, cfg) == 0.0


def test_the_seed_position_sizer_example_gives_the_seed_size() -> None:
    """Seed: half Kelly, confidence .75, $10,000, entry 50,000, stop 49,000, vol .60 -> 0.3125 BTC, capped 0.05."""
    closed = Portfolio(10_000.0)
    for r in trades(11, 0.025, 9, 0.015):  # the seed's historical performance as closed trades
        closed.apply_fill("ETH/USDT", "buy", 1.0, 100.0, 0.0, 0)
        closed.apply_fill("ETH/USDT", "sell", 1.0, 100.0 * (1 + r), 0.0, 0)
    p = Portfolio(10_000.0)
    p.trade_returns.extend(closed.snapshot().trade_returns)
    p.mark({"BTC/USDT": 50_000.0}, 0)
    sizing = {"stop_loss_pct": 0.02, "vol_window_bars": 1, "bars_per_year": 1.0, "prior_trades": 0}
    for caps, want in ((0.25, 0.05), (5.0, 0.3125)):
        cfg = RiskConfig.model_validate({
            "sizing": {**sizing, "max_position_fraction": caps},
            "limits": {"max_position_fraction": caps, "max_gross_leverage": caps, "max_correlated_fraction": caps}})
        eng = RiskEngine(cfg)
        for k in range(3):
            eng.on_bar("BTC/USDT", -3 * 60_000 + k * 60_000, 0.001 * (-1) ** k)
        d = eng.decide("BTC/USDT", 0, 1.0, 0.75, 50_000.0, 0.6, p.snapshot(), False)
        assert d.target_qty == pytest.approx(want, rel=1e-9) and d.rejections == ()


@settings(max_examples=500, deadline=None)
@given(st.lists(st.floats(-0.5, 0.5), max_size=60), st.sampled_from(["full_kelly", "half_kelly", "quarter_kelly"]),
       st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.one_of(st.none(), st.floats(0.01, 5.0)),
       st.one_of(st.none(), st.floats(0.005, 0.5)), st.floats(0.01, 2.0))
def test_size_is_monotone_in_confidence_and_within_the_cap(returns: list[float], method: str, c1: float, c2: float,
                                                           vol: float | None, stop: float | None, cap: float) -> None:
    cfg = SizingConfig(method=method, stop_loss_pct=stop, max_position_fraction=cap, prior_trades=5)
    k = kelly_fraction(returns, cfg)
    assert 0.0 <= k <= cfg.kelly_cap
    lo, hi = sorted((c1, c2))
    a, b = position_fraction(k, lo, vol, cfg), position_fraction(k, hi, vol, cfg)
    assert 0.0 <= a <= b <= cap
