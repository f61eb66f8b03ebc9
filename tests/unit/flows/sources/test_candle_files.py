"""flows.sources.candle_files: the project's own reader of candle files (the replay exchange keeps another)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.sources.candle_files import CandleFile, read_candles


def candles(n: int, interval_ms: int, start_ms: int = 1_704_067_200_000, seed: int = 0) -> pd.DataFrame:
    """Return ``n`` valid candles (epoch-ms ``ts``) of a seeded random walk."""
    rng = np.random.default_rng(seed)
    close = np.round(100 * np.exp(np.cumsum(rng.normal(0, 0.01, n))), 2)
    open_ = np.round(np.r_[100.0, close[:-1]], 2)
    spread = np.round(np.abs(rng.normal(0, 0.3, n)), 2)
    return pd.DataFrame({"ts": start_ms + interval_ms * np.arange(n, dtype=np.int64), "open": open_,
                         "high": np.maximum(open_, close) + spread, "low": np.minimum(open_, close) - spread,
                         "close": close, "volume": np.round(rng.uniform(1, 10, n), 3)})


def test_name_gives_market_and_timeframe(tmp_path: Path) -> None:
    cf = CandleFile.from_path(tmp_path / "btc_usdt-15m.parquet")
    assert (cf.base, cf.quote, cf.interval, cf.symbol) == ("BTC", "USDT", "15m", "BTC/USDT")
    for bad in ("btc.parquet", "BTC_USDT-1w.parquet", "BTC_USDT-0m.csv", "BTC_USDT-1h.json"):
        with pytest.raises(ValueError, match="BASE_QUOTE-TF"):
            CandleFile.from_path(tmp_path / bad)


def test_parquet_feather_and_csv_read_alike(tmp_path: Path) -> None:
    df = candles(20, 60_000)
    parquet = tmp_path / "XYZ_USDT-1m.parquet"
    df.assign(ts=pd.to_datetime(df.ts, unit="ms", utc=True)).to_parquet(parquet)
    feather = tmp_path / "XYZ_USDT-1m.feather"
    df.assign(date=pd.to_datetime(df.ts, unit="ms", utc=True)).drop(columns="ts").to_feather(feather)
    csv_ms = tmp_path / "XYZ_USDT-1m.csv"
    df.to_csv(csv_ms, index=False)
    csv_s = tmp_path / "ABC_USDT-1m.csv"
    df.assign(timestamp=df.ts // 1000).drop(columns="ts").to_csv(csv_s, index=False)  # epoch seconds
    for path in (parquet, feather, csv_ms, csv_s):
        got = read_candles(path)
        assert list(got.columns) == ["ts", "open", "high", "low", "close", "volume"]
        assert got.ts.dtype == np.int64
        pd.testing.assert_frame_equal(got, df.astype({c: np.float64 for c in df.columns if c != "ts"}))


def test_window_keeps_start_and_drops_end(tmp_path: Path) -> None:
    df = candles(10, 60_000)
    path = tmp_path / "XYZ_USDT-1m.csv"
    df.to_csv(path, index=False)
    got = read_candles(path, int(df.ts[2]), int(df.ts[7]))
    assert got.ts.tolist() == df.ts[2:7].tolist()


def test_bad_candles_and_times_are_refused(tmp_path: Path) -> None:
    df = candles(5, 60_000)
    path = tmp_path / "ABC_USDT-1m.csv"
    df.assign(high=np.where(df.index == 2, df.low - 1, df.high)).to_csv(path, index=False)
    with pytest.raises(ValueError, match="row 2"):
        read_candles(path)
    df.iloc[[0, 2, 1, 3, 4]].to_csv(path, index=False)
    with pytest.raises(ValueError, match="strictly increasing"):
        read_candles(path)
    df.drop(columns="volume").to_csv(path, index=False)
    with pytest.raises(ValueError, match="missing \\['volume'\\]"):
        read_candles(path)
