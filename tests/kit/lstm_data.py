"""Synthetic bars of three correlated assets for the torch model tests (LSTM, GNN, exports) and a small LSTM config."""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.models.lstm import LstmConfig

FEATS = ["ret_1", "f1", "f2"]
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")


def synth(n: int = 200, seed: int = 0) -> pd.DataFrame:
    """Three correlated assets; the label depends on the next return and on f1."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC")
    common = rng.normal(size=n)
    parts = []
    for s in SYMBOLS:
        r = 0.6 * common + 0.8 * rng.normal(size=n)
        d = pd.DataFrame({"ret_1": r, "f1": rng.normal(size=n), "f2": 5 + 3 * rng.normal(size=n)})
        d["label"] = (np.r_[r[1:], 0] + d["f1"] > 0).astype(np.int8)
        d["symbol"], d["event_timestamp"] = s, ts
        parts.append(d)
    return pd.concat(parts).sort_values(["event_timestamp", "symbol"]).reset_index(drop=True)


CFG = LstmConfig(bptt=8, burn_in=8, segment=48, hidden=8, layers=2, dropout=0.1, max_epochs=4, patience=2,
                 batch_size=8)


def gappy(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` without one ETH bar (index 100 of its rows) and without SOL's bars 40-42."""
    eth = frame.index[frame.symbol == "ETH/USDT"][100]
    sol = frame.index[frame.symbol == "SOL/USDT"][40:43]
    return frame.drop(index=[eth, *sol]).reset_index(drop=True)
