"""A small seeded set of daily provider files (the shapes of ``../shared/data/daily-onchain-sentiment``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def write_daily_files(folder: Path, start: str = "2022-10-01", days: int = 200, seed: int = 7) -> Path:
    """Write fear_greed.csv, hashrate.csv, difficulty.csv and funding_rates.csv with ``days`` days; return folder."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    dates = pd.date_range(start, periods=days, freq="D").strftime("%Y-%m-%d")
    fng = np.clip(50 + 35 * np.sin(np.arange(days) / 9) + rng.normal(0, 6, days), 1, 99).round().astype(int)
    hashrate = 3e8 * np.exp(np.cumsum(rng.normal(0.002, 0.05, days)))
    difficulty = 4e13 * np.exp(np.repeat(np.cumsum(rng.normal(0.01, 0.03, days // 14 + 1)), 14)[:days])
    mean = rng.normal(1e-4, 1e-4, days)
    pd.DataFrame({"date": dates, "fng": fng}).to_csv(folder / "fear_greed.csv", index=False)
    pd.DataFrame({"date": dates, "hashrate": hashrate}).to_csv(folder / "hashrate.csv", index=False)
    pd.DataFrame({"date": dates, "difficulty": difficulty}).to_csv(folder / "difficulty.csv", index=False)
    pd.DataFrame({"date": dates, "funding_mean": mean, "funding_abs": np.abs(mean)}).to_csv(
        folder / "funding_rates.csv", index=False)
    return folder
