"""Helpers shared by the replay exchange tests (imported by name; pytest puts this folder on sys.path)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import numpy as np
import pandas as pd

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run a coroutine to completion on a fresh event loop, failing after ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def make_candles(n: int, interval_ms: int, seed: int = 1, start_ms: int = 1_704_067_200_000) -> pd.DataFrame:
    """Return ``n`` valid candles on a 0.01 price grid and 0.001 volume grid, one with zero volume."""
    rng = np.random.default_rng(seed)
    close = np.round(100 * np.exp(np.cumsum(rng.normal(0, 0.01, n))), 2)
    open_ = np.round(np.concatenate([[100.0], close[:-1]]), 2)
    high = np.round(np.maximum(open_, close) + rng.integers(0, 50, n) / 100, 2)
    low = np.round(np.minimum(open_, close) - rng.integers(0, 50, n) / 100, 2)
    volume = np.round(rng.uniform(0.5, 40, n), 3)
    volume[3] = 0.0
    high[3] = low[3] = close[3] = open_[3]
    open_[4] = close[3]
    high[4], low[4] = max(high[4], open_[4]), min(low[4], open_[4])
    ts = start_ms + interval_ms * np.arange(n)
    return pd.DataFrame({"ts": ts, "open": open_, "high": high, "low": low, "close": close, "volume": volume})
