"""A rerun of the main job continues the synthetic market after the last stored time (issue 18, item 8)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from flows.bootstrap import LIVE_START
from flows.main import resume_start, synthetic_start
from flows.settings import load_settings
from flows.stores import open_stores
from tests.kit.dashboard_store import fill_store


def test_fresh_data_dir_starts_at_the_live_start() -> None:
    assert resume_start([None, pd.NaT]) == LIVE_START == datetime(2024, 1, 1, tzinfo=timezone.utc)


def test_rerun_starts_the_minute_after_the_latest_stored_time() -> None:
    last_state = pd.Timestamp("2024-01-01 03:00:00", tz="UTC")
    last_bar = pd.Timestamp("2024-01-01 03:01:00", tz="UTC")  # a bar open after the last decision
    assert resume_start([last_state, last_bar]) == datetime(2024, 1, 1, 3, 2, tzinfo=timezone.utc)
    assert resume_start([pd.Timestamp("2024-01-01 03:00:30")]) == datetime(2024, 1, 1, 3, 1, tzinfo=timezone.utc)


def test_times_before_the_live_start_do_not_move_it() -> None:
    assert resume_start([pd.Timestamp("2023-12-31 23:59", tz="UTC")]) == LIVE_START


def test_synthetic_start_follows_the_stored_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYPTOSTREAM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CRYPTOSTREAM_PROFILE", "local")
    settings = load_settings(None, symbols="BTC/USDT")
    assert synthetic_start(settings) == LIVE_START  # a fresh data directory
    # A first run's 120 bars from 2024-01-01 00:00 (the last opens at 01:59, its decision row is at 02:00).
    fill_store(open_stores(settings), ["BTC/USDT"], 120, run_id="first")
    assert open_stores(settings).monitor_reader().runs()["last"].max() == pd.Timestamp("2024-01-01 02:00", tz="UTC")
    assert synthetic_start(settings) == datetime(2024, 1, 1, 2, 1, tzinfo=timezone.utc)
