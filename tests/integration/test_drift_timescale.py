"""The drift check on the ``timescale`` profile: features, bars and predictions read from TimescaleDB."""

from __future__ import annotations

from pathlib import Path

from flows.settings import load_settings
from tests.kit.drift import fill, register
from training.drift import DriftMetrics, run_check


def test_the_check_reads_the_database_and_flags_the_shifted_feature(tmp_path: Path, migrated_dsn: str,
                                                                    redis_url: str) -> None:
    env = {"CRYPTOSTREAM_PROFILE": "timescale", "CRYPTOSTREAM_DATA_DIR": str(tmp_path / "data"),
           "CRYPTOSTREAM_SYMBOLS": "BTC/USDT,ETH/USDT", "TIMESCALE_DSN": migrated_dsn, "REDIS_URL": redis_url}
    settings = load_settings(env=env)
    register(settings)
    fill(settings, shift=2.0, prob=0.9)
    report = run_check(settings, DriftMetrics())
    flagged = {(r["symbol"], r["feature"]) for r in report["features"] if r["psi"] > 0.25}
    assert flagged == {("BTC/USDT", "ret_1")}
    assert report["calibration"]["rows"] >= 1000 and report["calibration"]["ece"] > 0.3
    assert report["data_end"].startswith("2024-01-05")


def test_a_decision_table_read_from_a_time_on_equals_the_whole_table_cut_there(tmp_path: Path, migrated_dsn: str,
                                                                                redis_url: str) -> None:
    import pandas as pd

    from flows.stores import open_stores

    env = {"CRYPTOSTREAM_PROFILE": "timescale", "CRYPTOSTREAM_DATA_DIR": str(tmp_path / "data"),
           "CRYPTOSTREAM_SYMBOLS": "BTC/USDT,ETH/USDT", "TIMESCALE_DSN": migrated_dsn, "REDIS_URL": redis_url}
    settings = load_settings(env=env)
    fill(settings, live_bars=300)
    reader = open_stores(settings).decision_reader()
    whole = reader.table("predictions")
    since = pd.Timestamp("2024-01-05 02:00", tz="UTC")
    part = reader.table("predictions", since)
    assert 0 < len(part) < len(whole)
    key = ["ts", "symbol", "model"]  # rows of one time come in no set order from the database
    pd.testing.assert_frame_equal(part.sort_values(key).reset_index(drop=True),
                                  whole[whole["ts"] >= since].sort_values(key).reset_index(drop=True))
