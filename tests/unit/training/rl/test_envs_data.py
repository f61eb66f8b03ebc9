"""MarketData: live operators' features as arrays, warm-up, point in time, splits, regime inputs, real files."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from flows.operators.features import WARMUP
from flows.operators.regime import HmmRegime, classify, load_daily_inputs
from flows.records import Bar
from training.rl.data import (
    ALL_FEATURES,
    REGIME_NAMES,
    load_market_data,
    market_data_from_bars,
    split_by_time,
    synthetic_market_data,
    with_regime,
)
from training.rl.envs import ExecutionConfig, ExecutionEnv, TacticalConfig, TacticalEnv

H = 3_600_000


def _bars(symbol: str, n: int, seed: int) -> list[Bar]:
    rng = np.random.default_rng(seed)
    c = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    o = np.concatenate([[100.0], c[:-1]])
    hi, lo = np.maximum(o, c) * 1.002, np.minimum(o, c) * 0.998
    return [Bar(symbol, "1h", 1_700_000_000_000 // H * H + i * H, o[i], hi[i], lo[i], c[i], 10.0 + i % 7,
                (10.0 + i % 7) * c[i], 0, c[i], 5.0) for i in range(n)]


def test_rows_start_after_warm_up_and_line_up_with_their_bar():
    n = WARMUP + 90
    streams = {"BTC/USDT": _bars("BTC/USDT", n, 0), "ETH/USDT": _bars("ETH/USDT", n, 1)}
    md = market_data_from_bars(streams, "1h")
    assert md.feature_names == ALL_FEATURES and md.feature_service == "lightgbm_1h_v1"
    assert md.n_bars == n - (WARMUP - 1)  # the features' warm-up: bar WARMUP - 1 is the first complete row
    assert md.times[0] == streams["BTC/USDT"][WARMUP - 1].ts * 1_000_000
    np.testing.assert_array_equal(md.decision_times, md.times + H * 1_000_000)
    f = {n: i for i, n in enumerate(md.feature_names)}
    for t in (1, 50, md.n_bars - 1):
        for a in (0, 1):
            assert md.features[t, a, f["ret_1"]] == pytest.approx(math.log(md.close[t, a] / md.close[t - 1, a]),
                                                                  rel=1e-5)
            assert md.features[t, a, f["hl_range"]] == pytest.approx(
                (md.high[t, a] - md.low[t, a]) / md.close[t, a], rel=1e-5)
    assert md.features[5, 0, f["corr_btc_60"]] == 1.0 and md.features[5, 1, f["corr_btc_60"]] != 1.0


def test_features_are_point_in_time():
    streams = {"BTC/USDT": _bars("BTC/USDT", WARMUP + 100, 0), "ETH/USDT": _bars("ETH/USDT", WARMUP + 100, 1)}
    k = WARMUP + 60
    changed = {s: b[:k + 1] + [b_._replace(close=b_.close * 1.3, high=b_.high * 1.3, volume=99.0)
                               for b_ in b[k + 1:]] for s, b in streams.items()}
    md, md2 = market_data_from_bars(streams, "1h"), market_data_from_bars(changed, "1h")
    cut = int(np.searchsorted(md.times, streams["BTC/USDT"][k].ts * 1_000_000)) + 1
    np.testing.assert_array_equal(md.features[:cut], md2.features[:cut])
    assert not np.array_equal(md.features[cut], md2.features[cut])


def test_synthetic_market_is_deterministic_and_valid():
    a, b, c = (synthetic_market_data(s, 300, 3, n_features=5) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.close, b.close)
    np.testing.assert_array_equal(a.features, b.features)
    assert not np.array_equal(a.close, c.close)
    assert a.features.shape == (300, 3, 5) and a.symbols[0] == "BTC/USDT"
    assert (a.high >= np.maximum(a.open, a.close)).all() and (a.low <= np.minimum(a.open, a.close)).all()
    with pytest.raises(ValueError, match="n_features"):
        synthetic_market_data(0, 10, 1, n_features=99)


def test_split_by_time_fractions_and_times():
    md = synthetic_market_data(0, 200, 2)
    parts = split_by_time(md, 0.5, 0.75)
    assert [p.n_bars for p in parts] == [100, 50, 50]
    np.testing.assert_array_equal(np.concatenate([p.times for p in parts]), md.times)
    cut = pd.Timestamp(int(md.times[120]), tz="UTC")
    first, second = split_by_time(md, cut.isoformat())
    assert first.n_bars == 120 and second.times[0] == md.times[120] and first.times[-1] < second.times[0]
    assert split_by_time(md, int(md.times[30]))[0].n_bars == 30
    with pytest.raises(ValueError, match="increasing"):
        split_by_time(md, 0.7, 0.3)
    with pytest.raises(ValueError, match="fraction"):
        split_by_time(md, 1.5)


def test_bad_market_data_names_the_field():
    md = synthetic_market_data(0, 20, 1, n_features=2)
    with pytest.raises(ValueError, match="MarketData.features"):
        replace(md, features=md.features.astype(np.float64))
    with pytest.raises(ValueError, match="MarketData.close"):
        replace(md, close=md.close[:-1])
    bad = md.features.copy()
    bad[3, 0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        replace(md, features=bad)
    with pytest.raises(ValueError, match="unknown feature 'nope'"):
        md.select(features=["nope"])
    assert md.select(features=["ret_5"]).features.shape == (20, 1, 1)


def test_the_regime_is_the_classifiers_at_each_close_and_only_past_daily_values_move_it(tmp_path):
    md = synthetic_market_data(0, 24 * 45, 2, n_features=2)
    days = pd.date_range(pd.Timestamp(int(md.times[0]), tz="UTC").floor("D") - pd.Timedelta(days=2), periods=50)
    rng = np.random.default_rng(1)
    fng = pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "fng": rng.integers(0, 100, 50)})
    fng.to_csv(tmp_path / "fear_greed.csv", index=False)
    model = HmmRegime(("trend", "vol", "sentiment"), (0.5, 0.5), ((0.9, 0.1), (0.1, 0.9)),
                      ((0.1, -1.0, 0.3), (-0.1, -1.0, -0.3)), ((0.01, 1.0, 0.05), (0.01, 1.0, 0.05)),
                      ("bull/low vol", "bear/low vol"))
    out = with_regime(md, tmp_path, model)
    assert out.regime_names == REGIME_NAMES and out.regime is not None and np.isfinite(out.regime).all()
    assert md.n_bars - out.n_bars == 24 * 30  # the 30-day trend window of the bars' own closes, dropped
    states = classify(md.decision_times // 1_000_000, md.close[:, 0], model, load_daily_inputs(tmp_path))
    np.testing.assert_allclose(out.regime[:, 0], [s.score for s in states[24 * 30:]], rtol=1e-6)
    cut = out.n_bars // 2
    unknown = pd.Timestamp(int(out.decision_times[cut]), tz="UTC") - pd.Timedelta(days=1)  # day D: known at D + 1
    fng.loc[pd.to_datetime(fng["date"], utc=True) >= unknown, "fng"] = 99 - fng["fng"]  # the days not known at cut
    fng.to_csv(tmp_path / "fear_greed.csv", index=False)
    again = with_regime(md, tmp_path, model)
    np.testing.assert_array_equal(again.regime[:cut + 1], out.regime[:cut + 1])
    assert not np.array_equal(again.regime[cut + 1:], out.regime[cut + 1:])
    alone = with_regime(md, None)  # no daily files: the rules on prices alone
    assert alone.n_bars == out.n_bars and set(np.unique(alone.regime[:, 1])) <= {0.0, 1.0}


@pytest.mark.data
def test_real_candles_with_regime(shared_data):
    md = load_market_data(shared_data / "binance-spot-1h", ["ETH/USDT", "BTC/USDT"], "1h",
                          "2023-01-01", "2023-03-01", regime_dir=shared_data / "daily-onchain-sentiment")
    assert md.symbols == ("ETH/USDT", "BTC/USDT") and md.feature_names == ALL_FEATURES
    # the features' warm-up hours, then the regime's 30-day trend window
    assert md.times[0] == (pd.Timestamp("2023-01-01T00:00Z") + pd.Timedelta(hours=WARMUP - 1 + 30 * 24)).value
    assert md.regime_names == REGIME_NAMES and md.regime is not None
    assert ((md.regime[:, 1:4].sum(axis=1) - 1) ** 2 < 1e-10).all()
    f = md.feature_names.index("corr_btc_60")
    assert (md.features[:, 1, f] == 1.0).all() and (md.features[:, 0, f] < 1.0).all()
    env = TacticalEnv(md, asset=1, config=TacticalConfig(episode_bars=100), seed=0)
    env.reset()
    assert np.isfinite(env.step(np.array([0.5], np.float32))[1])
    with pytest.raises(FileNotFoundError, match="DOGE_USDT-1h"):
        load_market_data(shared_data / "binance-spot-1h", ["DOGE/USDT"], "1h")


@pytest.mark.data
def test_real_minute_candles_drive_the_execution_env(shared_data):
    md = load_market_data(shared_data / "binance-spot-5m-2024", ["BTC/USDT"], "5m", "2024-03-01", "2024-03-03")
    assert md.timeframe == "5m" and md.feature_service == "lightgbm_5m_v1"
    env = ExecutionEnv(md, ExecutionConfig(), seed=0)
    twap = env.action_index("market", 1.0)
    totals = []
    for ep in range(20):
        env.reset(seed=ep)
        done, total = False, 0.0
        while not done:
            _, r, done, _, info = env.step(twap)
            total += r
        totals.append(total)
    # TWAP pays at least the taker fee (10 bps) plus spread on average; drift moves single episodes either way
    assert np.mean(totals) < -10.0 and np.isfinite(totals).all()
