"""Every indicator equals an independent vectorised pandas computation on real candles."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from flows.operators.features import FEATURES, WARMUP, FeatureEngine
from flows.records import Bar

H = 3_600_000


def _bars(df: pd.DataFrame, symbol: str) -> list[Bar]:
    ts = (df["ts"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    out = []
    for t, o, h, lo, c, v, vw, tb, n in zip(ts, df.open, df.high, df.low, df.close, df.volume,
                                             df.vwap, df.taker, df.n, strict=True):
        out.append(Bar(symbol, "1h", int(t), o, h, lo, c, v, v * vw, int(n), vw, tb))
    return out


def _rolling_mean_std(x: pd.Series, n: int) -> tuple[pd.Series, pd.Series]:
    # Two-pass over sliding windows: pandas' online rolling std loses ~1e-9 on prices near 1e5.
    w = np.lib.stride_tricks.sliding_window_view(x.to_numpy(), n)
    pad = np.full(n - 1, np.nan)
    return (pd.Series(np.concatenate([pad, w.mean(axis=1)]), index=x.index),
            pd.Series(np.concatenate([pad, w.std(axis=1)]), index=x.index))


def _pandas_features(df: pd.DataFrame) -> pd.DataFrame:
    c, h, lo, v = df.close, df.high, df.low, df.volume
    r = np.log(c / c.shift(1))
    out = pd.DataFrame(index=df.index)
    for k in (1, 5, 15, 60):
        out[f"ret_{k}"] = np.log(c / c.shift(k))
    for n in (15, 60):
        out[f"rv_{n}"] = np.sqrt((r**2).rolling(n).sum())
    d = c.diff().iloc[1:]
    gain = d.clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean()
    loss = (-d).clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean()
    out["rsi_14"] = (100 - 100 / (1 + gain / loss)).reindex(df.index)
    macd = c.ewm(span=12, adjust=False).mean() - c.ewm(span=26, adjust=False).mean()
    sig = macd.ewm(span=9, adjust=False).mean()
    out["macd"], out["macd_signal"], out["macd_hist"] = macd, sig, macd - sig
    m, s = _rolling_mean_std(c, 20)
    out["bb_pctb"] = (c - (m - 2 * s)) / (4 * s)
    out["bb_bandwidth"] = 4 * s / m
    prev = c.shift(1)
    tr = pd.concat([h - lo, (h - prev).abs(), (lo - prev).abs()], axis=1).max(axis=1).iloc[1:]
    out["atr_14"] = tr.ewm(alpha=1 / 14, adjust=False).mean().reindex(df.index) / c
    vm, vs = _rolling_mean_std(v, 60)
    out["volume_z_60"] = (v - vm) / vs
    out["vwap_dist"] = (c - df.vwap) / df.vwap
    out["taker_imbalance"] = ((2 * df.taker - v) / v).where(v > 0, 0.0)  # documented rule for v = 0
    out["trade_count"] = df.n.astype(float)
    out["hl_range"] = (h - lo) / c
    close_time = df.ts + pd.Timedelta(hours=1)
    hour = close_time.dt.hour + close_time.dt.minute / 60
    out["hour_sin"], out["hour_cos"] = np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24)
    dow = close_time.dt.weekday
    out["dow_sin"], out["dow_cos"] = np.sin(2 * np.pi * dow / 7), np.cos(2 * np.pi * dow / 7)
    return out


@pytest.mark.parametrize("asset", ["BTC", "XRP"])
def test_features_equal_pandas_on_real_candles(shared_data, asset) -> None:
    df = pd.read_parquet(shared_data / "binance-spot-1h" / f"{asset}_USDT-1h.parquet").iloc[:6000]
    df = df.reset_index(drop=True)
    df["vwap"] = (df.high + df.low + df.close) / 3  # the files carry no VWAP; any consistent input does
    df["taker"] = df.volume * (0.3 + 0.4 * ((df.index * 7919) % 101) / 100)
    df["n"] = (df.index * 31) % 997 + 1
    engine = FeatureEngine("1h")
    rows = [engine.update(b) for b in _bars(df, f"{asset}/USDT")]
    assert all(r is None for r in rows[: WARMUP - 1])
    ours = pd.DataFrame([r for r in rows[WARMUP - 1:]], index=df.index[WARMUP - 1:])
    ref = _pandas_features(df).iloc[WARMUP - 1:]
    assert list(ours.columns) == list(FEATURES)
    assert np.isfinite(ours.to_numpy()).all(), "no NaN or infinity after warm-up"
    for name in FEATURES:
        a, b = ours[name].to_numpy(), ref[name].to_numpy()
        # 1e-9 relative; the absolute floor only matters where the value itself is ~0 (ret, macd_hist, sin/cos)
        bad = ~np.isclose(a, b, rtol=1e-9, atol=1e-12)
        assert not bad.any(), f"{name}: first mismatch at row {np.argmax(bad)}: {a[bad][0]} vs {b[bad][0]}"


def test_flat_prices_give_finite_features() -> None:
    engine = FeatureEngine("1m")
    out = None
    for i in range(WARMUP + 20):
        out = engine.update(Bar("X/USDT", "1m", i * 60_000, 5.0, 5.0, 5.0, 5.0, 0.0, 0.0, 0, 5.0, 0.0))
    assert out is not None
    assert all(math.isfinite(x) for x in out.values())
    assert out["bb_pctb"] == 0.5 and out["rsi_14"] == 50.0 and out["volume_z_60"] == 0.0


def test_snapshot_restores_exactly() -> None:
    bars = [Bar("X/USDT", "1m", i * 60_000, 10 + i % 3, 11 + i % 5, 9, 10 + i % 7, 1.0 + i % 4, 0.0, 1, 10.0, 0.5)
            for i in range(150)]
    a = FeatureEngine("1m")
    for b in bars[:90]:
        a.update(b)
    clone = FeatureEngine("1m", state=a.snapshot())
    assert [a.update(b) for b in bars[90:]] == [clone.update(b) for b in bars[90:]]
