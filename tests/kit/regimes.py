"""A seeded market with regimes and the daily files of the regime classifier, for its tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HOUR_MS = 3_600_000
T0_MS = 1_600_000_000_000 // 86_400_000 * 86_400_000  # a midnight (UTC)


def regime_market(seed: int = 0, days: int = 150) -> tuple[np.ndarray, np.ndarray]:
    """Return hourly close times (ms) and closes whose drift and vol switch every 20 days (bull, bear, flat)."""
    rng = np.random.default_rng(seed)
    n = days * 24
    phase = (np.arange(n) // (20 * 24)) % 3
    drift = np.array([0.0006, -0.0006, 0.0])[phase]
    vol = np.array([0.006, 0.015, 0.004])[phase]
    logp = np.log(10_000.0) + np.cumsum(drift + vol * rng.standard_normal(n))
    return T0_MS + HOUR_MS * (1 + np.arange(n, dtype=np.int64)), np.exp(logp)


def write_daily(directory: Path, seed: int = 0, days: int = 150) -> Path:
    """Write ``funding_rates.csv`` and ``fear_greed.csv`` covering the market's days; return the directory."""
    rng = np.random.default_rng(seed + 1)
    dates = pd.date_range(pd.Timestamp(T0_MS, unit="ms"), periods=days + 1, freq="D").strftime("%Y-%m-%d")
    directory.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"date": dates, "funding_mean": rng.normal(1e-4, 1e-4, len(dates)),
                  "funding_abs": 2e-4}).to_csv(directory / "funding_rates.csv", index=False)
    pd.DataFrame({"date": dates, "fng": rng.integers(5, 95, len(dates))}).to_csv(directory / "fear_greed.csv",
                                                                                 index=False)
    return directory


def perturbed_after(times: np.ndarray, prices: np.ndarray, daily_dir: Path, t: int, out: Path, seed: int
                    ) -> tuple[np.ndarray, Path]:
    """Return prices and daily files where everything not yet known at close ``t`` is replaced by noise."""
    rng = np.random.default_rng(seed)
    p = prices.copy()
    after = times > t
    p[after] = p[after] * np.exp(rng.normal(0, 0.2, after.sum()))
    out.mkdir()
    for name, col in (("funding_rates.csv", "funding_mean"), ("fear_greed.csv", "fng")):
        df = pd.read_csv(daily_dir / name, float_precision="round_trip")
        known = pd.to_datetime(df["date"], utc=True).astype("int64") // 10**6 + 86_400_000
        late = (known >= t).to_numpy()  # a value known at t or later is not used at t
        df.loc[late, col] = rng.integers(0, 100, late.sum()) if col == "fng" else rng.normal(0, 0.01, late.sum())
        df.to_csv(out / name, index=False)
    return p, out
