"""training.performance against quantstats on the same equity curves, and its trade and regime figures."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import quantstats as qs

from flows.operators.regime import REGIMES, RuleRegime
from training import performance as perf

H = 8760  # bars per year of 1h under the module's convention (365 days)


def curve(seed: int, n: int = 2000, drift: float = 0.0002, first: float | None = None) -> pd.Series:
    rng = np.random.default_rng(seed)
    r = rng.normal(drift, 0.01, n)
    if first is not None:
        r[0] = first
    index = pd.date_range("2023-01-01", periods=n + 1, freq="h", tz="UTC")
    return pd.Series(10_000 * np.concatenate([[1.0], np.cumprod(1 + r)]), index=index)


@pytest.mark.parametrize(("seed", "drift", "first"), [(1, 0.0002, None), (2, -0.0003, -0.03), (3, 0.0, 0.02)])
def test_every_curve_figure_equals_quantstats(seed, drift, first) -> None:
    equity = curve(seed, drift=drift, first=first)
    r = equity.pct_change().dropna()
    m = perf.metrics(equity, "1h")
    assert perf.bars_per_year("1h") == H and perf.bars_per_year("5m") == 12 * H
    assert m.bars == len(r)
    assert m.total_return == pytest.approx(qs.stats.comp(r), rel=1e-10)
    assert m.cagr == pytest.approx(qs.stats.cagr(r, periods=H), rel=1e-10)
    assert m.volatility == pytest.approx(qs.stats.volatility(r, periods=H), rel=1e-10)
    assert m.sharpe == pytest.approx(qs.stats.sharpe(r, periods=H), rel=1e-10)
    assert m.sortino == pytest.approx(qs.stats.sortino(r, periods=H), rel=1e-10)
    assert m.max_drawdown == pytest.approx(qs.stats.max_drawdown(r), rel=1e-10)
    assert m.calmar == pytest.approx(qs.stats.calmar(r, periods=H), rel=1e-10)
    months = perf.monthly_returns(equity)
    theirs = qs.stats.monthly_returns(r, eoy=False)
    np.testing.assert_allclose(months.to_numpy(), theirs.to_numpy().ravel()[:len(months)], rtol=1e-9)


def test_the_longest_drawdown_counts_the_bars_under_water() -> None:
    idx = pd.date_range("2024-01-01", periods=9, freq="h", tz="UTC")
    equity = pd.Series([100, 110, 105, 104, 111, 100, 99, 98, 97.0], index=idx)
    m = perf.metrics(equity, "1h")
    assert m.max_drawdown_bars == 4  # 111 -> 100, 99, 98, 97 (never recovered)
    assert m.max_drawdown_days == pytest.approx(4 / 24)
    assert m.max_drawdown == pytest.approx(97 / 111 - 1)


def _fills(rows: list[tuple[str, str, float, float, float]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["ts", "symbol", "qty", "price", "fee"])
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    return df


def test_round_trips_run_flat_to_flat_after_fees_and_a_flip_opens_the_next() -> None:
    fills = _fills([
        ("2024-01-01 00:00", "BTC", 1.0, 100.0, 0.1),
        ("2024-01-01 01:00", "BTC", 1.0, 110.0, 0.1),   # adds to the long
        ("2024-01-01 03:00", "BTC", -3.0, 120.0, 0.3),  # closes 2 long, opens 1 short
        ("2024-01-01 05:00", "BTC", 1.0, 125.0, 0.1),   # closes the short at a loss
        ("2024-01-01 02:00", "ETH", -2.0, 50.0, 0.1),
        ("2024-01-01 04:00", "ETH", 2.0, 45.0, 0.1),
        ("2024-01-01 06:00", "ETH", 1.0, 40.0, 0.05),   # still open at the end: not a trip
    ])
    trips = perf.round_trips(fills)
    assert list(trips.symbol) == ["BTC", "BTC", "ETH"]
    assert list(trips.side) == [1, -1, -1]
    np.testing.assert_allclose(trips.pnl, [(240 - 210) - 0.4, (120 - 125) - 0.2, (100 - 90) - 0.2])
    np.testing.assert_allclose(trips.fees, [0.4, 0.2, 0.2])
    stats = perf.trade_stats(trips)
    assert stats["round_trips"] == 3 and stats["win_rate"] == pytest.approx(2 / 3)
    assert stats["profit_factor"] == pytest.approx(qs.stats.profit_factor(trips.pnl))
    assert stats["expectancy"] == pytest.approx(trips.pnl.mean())
    assert stats["avg_holding_hours"] == pytest.approx((3 + 2 + 2) / 3)


def test_regimes_and_the_volatility_target_use_only_past_prices() -> None:
    rng = np.random.default_rng(4)
    idx = pd.date_range("2024-01-01", periods=600, freq="h", tz="UTC")
    close = pd.DataFrame(np.exp(np.cumsum(rng.normal(0, 0.01, (600, 3)), axis=0)), index=idx, columns=list("abc"))
    rules = RuleRegime(trend_days=2, vol_days=1, trend_band=0.02, high_vol=0.15)

    def labels_of(c: pd.DataFrame) -> pd.Series:
        return perf.regime_labels((c / c.iloc[0]).mean(axis=1).to_frame("buy_and_hold_growth"), rules)

    labels = labels_of(close)
    bench = perf.benchmarks(close, "1h", vol_target=0.2, vol_bars=24, capital=1000)
    cut = 400
    moved = close.copy()
    moved.iloc[cut + 1:] *= np.exp(rng.normal(0, 0.2, (600 - cut - 1, 3)))
    labels2 = labels_of(moved)
    bench2 = perf.benchmarks(moved, "1h", vol_target=0.2, vol_bars=24, capital=1000)
    pd.testing.assert_series_equal(labels.iloc[:cut + 1], labels2.iloc[:cut + 1])
    for name in bench:
        pd.testing.assert_series_equal(bench[name].iloc[:cut + 1], bench2[name].iloc[:cut + 1])
    assert set(labels.iloc[100:]) <= set(REGIMES) and len(set(labels.iloc[100:])) > 1
    assert (labels.iloc[:48] == "warm-up").all() and labels.iloc[49] != "warm-up"
    table = perf.by_group(bench["buy_and_hold"], labels, "1h")
    assert table["bars"].sum() == 599
    total = (1 + table["return"]).prod() - 1
    assert total == pytest.approx(bench["buy_and_hold"].iloc[-1] / 1000 - 1, rel=1e-9)
    vt = perf.metrics(bench["vol_target_buy_and_hold"].iloc[30:], "1h")
    assert vt.volatility < perf.metrics(bench["buy_and_hold"].iloc[30:], "1h").volatility
    assert math.isfinite(vt.sharpe)


def test_the_regime_a_run_recorded_is_the_one_its_breakdown_uses() -> None:
    idx = pd.date_range("2024-01-01", periods=4, freq="h", tz="UTC")
    eq = pd.DataFrame({"buy_and_hold_growth": [1.0, 1.1, 1.2, 1.3],
                       "regime": [np.nan, "bear/low vol", "bull/high vol", "bull/high vol"]}, index=idx)
    assert perf.regime_labels(eq).tolist() == ["warm-up", "bear/low vol", "bull/high vol", "bull/high vol"]


def test_exposure_turnover_and_fees() -> None:
    idx = pd.date_range("2024-01-01", periods=5, freq="h", tz="UTC")
    equity = pd.Series([1000.0, 1000, 1010, 1005, 1005], index=idx)
    positions = pd.DataFrame({"BTC": [0, 500, 505, 0, 0.0]}, index=idx)
    fills = _fills([("2024-01-01 01:00", "BTC", 5.0, 100.0, 0.5), ("2024-01-01 03:00", "BTC", -5.0, 101.0, 0.5)])
    got = perf.exposure_stats(positions, equity, fills, "1h")
    assert got["exposure"] == pytest.approx(2 / 5)
    assert got["fees_paid"] == pytest.approx(1.0)
    assert got["turnover"] == pytest.approx((500 + 505) / equity.mean() / (4 / H))
    assert got["gross_leverage"] == pytest.approx(np.mean([0, 0.5, 505 / 1010, 0, 0]))
