"""Backfill from files: every supported format, idempotent, equal to the flow's operators."""

from __future__ import annotations

import gc

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from flows.operators.features import WARMUP
from flows.records import Bar
from training.backfill import bars_from_frame, main

N = WARMUP + 90  # candles per file: past the features' warm-up


def _candles(n: int = N, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
    ts = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC")
    return pd.DataFrame({"date": ts, "open": open_, "high": high, "low": low, "close": close,
                         "volume": rng.uniform(1, 10, n)})


def _rows(var, table: str) -> pd.DataFrame:
    files = sorted((var / "offline" / table).glob("*.parquet"))
    return pd.concat([pq.read_table(f).to_pandas() for f in files]).sort_values(["symbol", "ts"]).reset_index(drop=True)


def test_parquet_csv_and_feather_backfill_twice_gives_the_same_rows(tmp_path, monkeypatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _candles(seed=1).rename(columns={"date": "ts"}).to_parquet(src / "BTC_USDT-1h.parquet")
    _candles(seed=2).to_csv(src / "ETH_USDT-1h.csv", index=False)
    _candles(seed=3).to_feather(src / "SOL_USDT-1h.feather")
    monkeypatch.setenv("CRYPTOSTREAM_DATA_DIR", str(tmp_path / "var"))
    paths = [str(p) for p in sorted(src.iterdir())]
    assert main(["files", *paths]) == 0
    first = {t: _rows(tmp_path / "var", t) for t in ("bars_1h", "bar_features_1h", "cross_asset_features_1h")}
    assert len(first["bars_1h"]) == 3 * N
    assert len(first["bar_features_1h"]) == 3 * (N - (WARMUP - 1))
    assert len(first["cross_asset_features_1h"]) == 3 * (N - 1 - 59)
    assert main(["files", *paths]) == 0  # again: idempotent
    for t, df in first.items():
        pd.testing.assert_frame_equal(_rows(tmp_path / "var", t), df)


def test_bad_file_name_and_bad_time_are_clear_errors(tmp_path, capsys) -> None:
    bad = tmp_path / "btc.parquet"
    _candles().to_parquet(bad)
    assert main(["files", str(bad)]) == 2
    assert "BASE_QUOTE-TF" in capsys.readouterr().err
    assert main(["files", str(bad), "--start", "yesterday-ish"]) == 2
    assert "--start/--end" in capsys.readouterr().err


def test_bars_made_in_batches_are_the_same_bars_and_the_collector_is_left_as_it_was() -> None:
    df = _candles(50).rename(columns={"date": "ts"})
    df["ts"] = df["ts"].astype("int64") // 1_000_000
    kline = df.assign(quote_volume=df.volume * df.close, trade_count=np.arange(50), taker_buy_volume=df.volume / 3)
    was = gc.isenabled()
    try:
        for enabled in (True, False):
            gc.enable() if enabled else gc.disable()
            for frame in (df, kline):
                whole = list(bars_from_frame("BTC/USDT", "1h", frame))
                assert len(whole) == 50 and all(type(b) is Bar for b in whole)
                assert [Bar(*b) for b in whole] == whole  # the same tuples as the namedtuple's constructor gives
                for batch in (1, 7, 50, 64):
                    assert list(bars_from_frame("BTC/USDT", "1h", frame, batch=batch)) == whole
                assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()
