"""A store and registry with a known drift, for the drift checks' tests.

The lightgbm version is trained (by its manifest) on 2024-01-01 .. 2024-01-03; the feature rows of
that window are N(0, 1) for every symbol.  The live rows (from 2024-01-05) are the same distribution
for ETH/USDT and shifted by ``shift`` standard deviations for BTC/USDT's ``ret_1`` only.  The
ensemble's stored predictions say P(up) = ``prob`` at every close while the prices are a random
walk: with ``prob`` far from one half, the ensemble is miscalibrated.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from flows.feature_catalog import BAR_FEATURES
from flows.settings import Settings
from flows.stores import open_stores
from inference.manifest import Parity, TensorSpec
from training.registry import save_model

TRAIN_START = datetime(2024, 1, 1, tzinfo=UTC)
LIVE_START = datetime(2024, 1, 5, tzinfo=UTC)
SYMBOLS = ("BTC/USDT", "ETH/USDT")
FEATURES = ("ret_1", "ret_5", "rv_15", "rsi_14")


def register(settings: Settings, days: int = 2) -> str:
    """Register a lightgbm version trained on ``days`` days from TRAIN_START and an ensemble; return the version."""
    spec = (TensorSpec("x", (None, len(FEATURES))),), (TensorSpec("p", (None, 1)),)
    common: dict[str, Any] = dict(files={"model.onnx": b"onnx"}, feature_service="lightgbm_1m_v1", features=FEATURES,
                                  train_start=TRAIN_START, train_end=TRAIN_START + timedelta(days=days),
                                  data_hash="0" * 16, seeds={"seed": 0}, metrics={"folds": [], "mean": {}},
                                  parity=Parity(0.0, 1e-5, 10), inputs=spec[0], outputs=spec[1])
    man = save_model(settings.registry_root(), "lightgbm", config={"horizon": 1}, **common)
    save_model(settings.registry_root(), "ensemble", config={"members": ["lightgbm"]}, extra={"horizon": 1}, **common)
    return man.version


def _feature_rows(start: datetime, n: int, rng: np.random.Generator, shift: float) -> list[tuple[Any, ...]]:
    rows = []
    for s in SYMBOLS:
        values = rng.standard_normal((n, len(BAR_FEATURES)))
        if s == "BTC/USDT":
            values[:, BAR_FEATURES.index("ret_1")] += shift
        for k in range(n):
            ts = start + timedelta(minutes=k + 1)
            rows.append((s, "1m", ts, ts, *values[k].tolist()))
    return rows


def fill(settings: Settings, shift: float = 2.0, prob: float = 0.9, live_bars: int = 600, seed: int = 3) -> None:
    """Write the training-window and live feature rows, the live bars and the ensemble's predictions."""
    rng = np.random.default_rng(seed)
    stores = open_stores(settings)
    history, decisions = stores.history_writer(), stores.decision_writer()
    try:
        history.write({"bar_features": _feature_rows(TRAIN_START, 2 * 1440, rng, 0.0)})
        history.write({"bar_features": _feature_rows(LIVE_START, live_bars, rng, shift)})
        bars, preds = [], []
        for s in SYMBOLS:
            price = 100.0
            for k in range(live_bars + 2):
                ts = LIVE_START + timedelta(minutes=k)
                close = price * float(np.exp(rng.normal(0.0, 0.001)))
                bars.append((s, "1m", ts, price, max(price, close), min(price, close), close, 1.0, close, 1,
                             price, 0.5))
                price = close
                preds.append((s, "1m", ts, "ensemble", "v1", prob, abs(prob - 0.5) * 2, 1, b"{}", "drift-run"))
        history.write({"bars": bars})
        history.flush()
        decisions.write({"predictions": preds})
    finally:
        history.close()
        decisions.close()


def report_dir(settings: Settings) -> Path:
    """Return where the drift check writes its report."""
    return settings.data_dir / "drift"
