"""Fixtures of the RL tests: hand-made markets and a perturbation of everything after a bar."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import pytest

from training.rl.data import MarketData

Builder = Callable[..., MarketData]


def _make(open_: Sequence[float], close: Sequence[float], high: Sequence[float] | None = None,
          low: Sequence[float] | None = None, volume: Sequence[float] | None = None, n_features: int = 2,
          timeframe: str = "1h") -> MarketData:
    """Build a one- or several-asset market from literal prices (lists of rows, or flat for one asset)."""
    o = np.asarray(open_, np.float64).reshape(len(open_), -1)
    c = np.asarray(close, np.float64).reshape(o.shape)
    h = np.maximum(o, c) if high is None else np.asarray(high, np.float64).reshape(o.shape)
    lo = np.minimum(o, c) if low is None else np.asarray(low, np.float64).reshape(o.shape)
    v = np.full(o.shape, 100.0) if volume is None else np.asarray(volume, np.float64).reshape(o.shape)
    t, a = o.shape
    feats = (np.arange(t * a * n_features, dtype=np.float32).reshape(t, a, n_features) / 100.0)
    return MarketData(tuple(f"S{i}/USDT" for i in range(a)), timeframe,
                      np.arange(t, dtype=np.int64) * 3_600_000_000_000, o, h, lo, c, v, feats,
                      tuple(f"f{i}" for i in range(n_features)), "test")


@pytest.fixture
def handmade() -> Builder:
    """Return a builder of markets from literal prices."""
    return _make


def _perturb(md: MarketData, k: int, seed: int = 99) -> MarketData:
    """Return ``md`` with every price, volume, feature and regime input of rows after ``k`` changed."""
    rng = np.random.default_rng(seed)
    after = slice(k + 1, None)
    n = md.n_bars - k - 1
    scale = rng.uniform(0.5, 1.5, (n, len(md.symbols)))

    def arr(x: np.ndarray) -> np.ndarray:
        y = x.copy()
        y[after] = x[after] * scale
        return y

    feats = md.features.copy()
    feats[after] = rng.standard_normal(feats[after].shape).astype(np.float32)
    regime = None
    if md.regime is not None:
        regime = md.regime.copy()
        regime[after] = rng.standard_normal(regime[after].shape).astype(np.float32)
    hi = np.maximum(arr(md.high), np.maximum(arr(md.open), arr(md.close)))
    lo = np.minimum(arr(md.low), np.minimum(arr(md.open), arr(md.close)))
    return replace(md, open=arr(md.open), high=hi, low=lo, close=arr(md.close), volume=arr(md.volume),
                   features=feats, regime=regime)


@pytest.fixture
def perturb_after() -> Callable[..., MarketData]:
    """Return a function that changes everything after a bar."""
    return _perturb
