"""Candle files of one symbol: several are joined in time order; overlapping bar times must agree."""

from __future__ import annotations

import pandas as pd
import pytest

from flows.settings import SettingsError
from training.backfill import _files


def _candles(path, start: str, n: int, bump: float = 0.0) -> None:
    ts = pd.date_range(start, periods=n, freq="h", tz="UTC")
    close = [100.0 + i + bump for i in range(n)]
    pd.DataFrame({"ts": ts, "open": close, "high": close, "low": close, "close": close,
                  "volume": 1.0}).to_parquet(path)


def test_two_files_of_one_symbol_are_joined_and_deduplicated(tmp_path) -> None:
    a, b = tmp_path / "a" / "BTC_USDT-1h.parquet", tmp_path / "b" / "BTC_USDT-1h.parquet"
    a.parent.mkdir()
    b.parent.mkdir()
    _candles(a, "2024-01-01", 48)
    _candles(b, "2024-01-02", 48, bump=24.0)  # its first 24 hours are a's last 24, same candles
    streams, tf = _files([b, a], None, None)
    bars = list(streams["BTC/USDT"])
    assert tf == "1h" and len(bars) == 72  # was 48: the last file read replaced the first
    assert [x.ts for x in bars] == sorted({x.ts for x in bars})
    assert bars[-1].close == 100.0 + 71


def test_files_that_disagree_on_a_bar_time_stop_with_an_error(tmp_path) -> None:
    a, b = tmp_path / "a" / "BTC_USDT-1h.parquet", tmp_path / "b" / "BTC_USDT-1h.parquet"
    a.parent.mkdir()
    b.parent.mkdir()
    _candles(a, "2024-01-01", 48)
    _candles(b, "2024-01-02", 48, bump=25.0)  # a different close for the same hours
    with pytest.raises(SettingsError, match="hold different candles for 2024-01-02 00:00:00"):
        _files([a, b], None, None)
