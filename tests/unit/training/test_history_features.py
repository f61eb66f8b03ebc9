"""History features over whole arrays equal the flow's streaming operators bit for bit, record for record."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flows.records import Bar
from training.backfill import bars_from_frame, operator_records
from training.history_features import history_records

ASSETS = ("BTC", "ETH", "SOL", "BNB", "XRP")


def _same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert type(x) is type(y)
        assert x == y, (x, y)  # every float with ==: bit for bit (no NaN after warm-up)


def _bars(symbol: str, n: int, seed: int, start: int = 0, tf_ms: int = 3_600_000) -> list[Bar]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    return [Bar(symbol, "1h", start + i * tf_ms, c, c * 1.01, c * 0.99, c, float(v), c * v, i % 7, c, v / 3)
            for i, (c, v) in enumerate(zip(close.tolist(), rng.uniform(0, 10, n).round(0).tolist(), strict=True))]


def test_history_records_equal_the_operators_on_real_candles(shared_data) -> None:
    frames = {f"{a}/USDT": pd.read_parquet(shared_data / "binance-spot-1h" / f"{a}_USDT-1h.parquet").iloc[:4000]
              for a in ASSETS}
    for df in frames.values():
        df["ts"] = df["ts"].astype("int64") // 1_000_000 if df["ts"].dtype.kind == "M" else df["ts"]

    def streams() -> dict:
        return {s: bars_from_frame(s, "1h", df) for s, df in frames.items()}

    want, got = list(operator_records(streams(), "1h")), list(history_records(streams(), "1h"))
    assert sum(1 for r in want if getattr(r, "table", "") == "cross_asset_features") > 3000 * len(ASSETS)
    _same(want, got)


def test_flat_prices_zero_volume_and_a_late_symbol_match_too() -> None:
    flat = [b._replace(close=50.0, high=50.0, low=50.0, volume=0.0, vwap=50.0) for b in _bars("BTC/USDT", 150, 1)]
    cases = [
        {"BTC/USDT": flat, "ETH/USDT": _bars("ETH/USDT", 150, 2)},  # constant series: rsi 50, %b 0.5, corr 0
        {"BTC/USDT": _bars("BTC/USDT", 150, 3), "ETH/USDT": _bars("ETH/USDT", 100, 4, start=50 * 3_600_000)},
        {"ETH/USDT": _bars("ETH/USDT", 40, 5), "BTC/USDT": _bars("BTC/USDT", 140, 6)},  # never warm; no reference first
    ]
    gap = _bars("SOL/USDT", 200, 7)
    cases.append({"BTC/USDT": _bars("BTC/USDT", 200, 8), "SOL/USDT": gap[:120] + gap[121:]})  # a hole stops cross
    for case in cases:
        want = list(operator_records({s: iter(b) for s, b in case.items()}, "1h"))
        _same(want, list(history_records({s: iter(b) for s, b in case.items()}, "1h")))
