"""A walk-forward result directory written by hand (equity, fills, windows, summary), for the gate's tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def write_run(out: Path, drift: float, seed: int = 3, bars: int = 24 * 400, windows: int = 4,
              config_hash: str | None = None) -> Path:
    """Write a 1h run whose equity drifts by ``drift`` per bar (with noise) and round trips that win if drift > 0."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2022-01-01", periods=bars, freq="h", tz="UTC")
    r = drift + rng.normal(0.0, 0.002, bars)
    r[0] = 0.0
    equity = 10_000 * np.cumprod(1 + r)
    basket = np.cumprod(1 + rng.normal(0.0001, 0.01, bars))
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"ts": [t.isoformat() for t in ts], "equity": equity, "strategy_growth": equity / equity[0],
                  "buy_and_hold_growth": basket}).to_csv(out / "equity.csv", index=False)
    rows = []
    for k, t in enumerate(range(0, bars - 24, 48)):
        entry = 100.0
        exit_ = entry * (1 + (0.01 if (drift > 0) == (k % 5 != 0) else -0.01))
        rows += [(ts[t].isoformat(), f"c{k}a", "BTC/USDT", "buy", 1.0, entry, 0.1, "taker"),
                 (ts[t + 24].isoformat(), f"c{k}b", "BTC/USDT", "sell", 1.0, exit_, 0.1, "taker")]
    pd.DataFrame(rows, columns=["ts", "client_order_id", "symbol", "side", "qty", "price", "fee", "liquidity"]
                 ).to_csv(out / "fills.csv", index=False)
    edges = np.linspace(0, bars - 1, windows + 1).astype(int)
    rets = [equity[b] / equity[a] - 1 for a, b in zip(edges[:-1], edges[1:], strict=True)]
    pd.DataFrame({"window": range(windows), "return": rets}).to_csv(out / "windows.csv", index=False)
    summary = {"timeframe": "1h", "data_hash": "f" * 64}
    if config_hash:
        summary["decision_config_hash"] = config_hash
    (out / "summary.json").write_text(json.dumps(summary))
    return out
