"""RL training data from TimescaleDB: bars a plain OHLCV backfill stored (NULL extras) give the candle files' features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest

from flows.operators.features import WARMUP
from flows.settings import load_settings
from training.rl.data import load_market_data
from training.rl.runs import rl_features, stored_market_data

pytestmark = pytest.mark.integration
SYMBOLS = ("BTC/USDT", "ETH/USDT")


def test_stored_bars_with_null_extras_give_the_files_features(shared_data: Path, migrated_dsn: str, redis_url: str,
                                                               tmp_path: Path) -> None:
    frames = {s: pd.read_parquet(shared_data / "binance-spot-1h" / f"{s.replace('/', '_')}-1h.parquet").iloc[:WARMUP + 300]
              for s in SYMBOLS}
    with psycopg.connect(migrated_dsn, autocommit=True) as conn, conn.cursor() as cur:
        for s, df in frames.items():
            cur.executemany("INSERT INTO bars (symbol, timeframe, ts, open, high, low, close, volume) "
                            "VALUES (%s, '1h', %s, %s, %s, %s, %s, %s)",
                            [(s, r.ts.to_pydatetime(), r.open, r.high, r.low, r.close, r.volume)
                             for r in df.itertuples()])
    settings = load_settings(env={"CRYPTOSTREAM_PROFILE": "timescale", "TIMESCALE_DSN": migrated_dsn,
                                  "REDIS_URL": redis_url, "CRYPTOSTREAM_DATA_DIR": str(tmp_path)})
    features = rl_features(SYMBOLS)
    stored = stored_market_data(settings, SYMBOLS, "1h", None, None, features)
    end = (frames["BTC/USDT"].ts.iloc[-1] + pd.Timedelta(hours=1)).isoformat()
    files = load_market_data(shared_data / "binance-spot-1h", SYMBOLS, "1h", None, end, features=features)
    assert stored.n_bars == files.n_bars > 200
    np.testing.assert_array_equal(stored.times, files.times)
    np.testing.assert_array_equal(stored.close, files.close)
    np.testing.assert_allclose(stored.features, files.features, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="no stored 5m bars"):
        stored_market_data(settings, SYMBOLS, "5m", None, None, features)
