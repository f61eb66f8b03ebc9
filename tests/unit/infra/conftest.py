"""Fixtures for the replay exchange tests: real data if present, tiny candle files always."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.kit.replay import make_candles

PROJECT_ROOT = Path(__file__).resolve().parents[3]
SHARED_DATA = PROJECT_ROOT / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Return ../shared/data from the project root, or skip saying why."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"needs the real market data at {SHARED_DATA.resolve()} (absent in a fresh clone)")
    return SHARED_DATA


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    """Write 48 hourly candles as ``ABC_USDT-1h.csv`` (ISO times) and return its path."""
    df = make_candles(48, 3_600_000)
    df["ts"] = pd.to_datetime(df["ts"], unit="ms", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    path = tmp_path / "ABC_USDT-1h.csv"
    df.to_csv(path, index=False)
    return path
