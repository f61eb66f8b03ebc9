"""Fixtures of the RL environment tests: hand-made markets, perturbing the future, the checkers."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

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


def _agree_until(make_env: Callable[[MarketData], Any], mds: tuple[MarketData, MarketData], actions: Any, k: int,
                 options: dict[str, Any] | None = None) -> int:
    """Run the same actions on two markets; assert equal observations and rewards up to bar ``k``.

    Returns how many steps (the reset included) ended at or before bar ``k``; asserts the runs
    do differ later, so the perturbation was not a no-op.
    """
    runs = []
    for md in mds:
        env = make_env(md)
        obs, _ = env.reset(options=options)
        out = [(env.t, obs, 0.0)]
        for a in actions:
            obs, r, terminated, truncated, _ = env.step(a)
            out.append((env.t, obs, r))
            if terminated or truncated:
                break
        runs.append(out)
    compared = 0
    for (t, o1, r1), (t2, o2, r2) in zip(*runs, strict=False):
        if t > k:
            break
        assert t == t2
        np.testing.assert_array_equal(o1, o2)
        assert r1 == r2
        compared += 1
    assert not np.array_equal(runs[0][-1][1], runs[1][-1][1]) or runs[0][-1][2] != runs[1][-1][2]
    return compared


@pytest.fixture
def agree_until() -> Callable[..., int]:
    """Return the no-lookahead comparison of two runs."""
    return _agree_until


@pytest.fixture
def env_checkers() -> Callable[[Any], None]:
    """Return a function running gymnasium's and stable-baselines3's environment checkers."""

    def run(env: Any) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unbounded observation boxes: market features are not bounded
            check_env(env, skip_render_check=True)
            sb3_check_env(env)

    return run
