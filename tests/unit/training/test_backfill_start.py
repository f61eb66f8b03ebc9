"""Backfills of one candle file started at different bars agree from their first feature row (issue 17, defect 10).

The EMAs and Wilder means are seeded with their first value; a feature row is emitted
only once every seed weighs less than 1e-10 (``features.WARMUP`` bars), so a history
started at bar 0 and one started at bar 1500 give the same features where both have
them: what a flow started afresh computes is what training saw.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flows.operators.features import FEATURES, WARMUP
from flows.records import FeatureRow
from training.backfill import bars_from_frame, operator_records
from training.history_features import history_records

STARTS = (0, 17, 400, 1500)


def _rows(records) -> dict[int, np.ndarray]:
    return {r.ts: np.array([r.values[f] for f in FEATURES]) for r in records
            if isinstance(r, FeatureRow) and r.table == "bar_features"}


@pytest.fixture(scope="module")
def candles(shared_data) -> pd.DataFrame:
    df = pd.read_parquet(shared_data / "binance-spot-1h" / "BTC_USDT-1h.parquet").iloc[:1500 + WARMUP + 200]
    df["ts"] = df["ts"].astype("int64") // 1_000_000 if df["ts"].dtype.kind == "M" else df["ts"]
    return df.reset_index(drop=True)


@pytest.mark.parametrize("path", [operator_records, history_records], ids=["operators", "history"])
def test_backfills_from_different_bars_agree_from_their_first_row(candles, path) -> None:
    runs = {s: _rows(path({"BTC/USDT": bars_from_frame("BTC/USDT", "1h", candles.iloc[s:])}, "1h")) for s in STARTS}
    full = runs[0]
    for s in STARTS[1:]:
        got = runs[s]
        assert min(got) == int(candles["ts"].iloc[s + WARMUP - 1]) + 3_600_000  # the first row: bar s + WARMUP - 1
        assert len(got) >= 200
        for ts, row in got.items():
            want = full[ts]
            worst = np.abs(row - want).max()
            assert worst <= 1e-6, (s, ts, dict(zip(FEATURES, (row - want).tolist(), strict=True)))
