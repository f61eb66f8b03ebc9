"""``python -m infra.db retention`` on the ``local`` profile: whole parquet files older than the policy go."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from infra.retention import RetentionError, parse_interval, retention
from tests.kit.backups import fill, profile_env, run_db

NOW = datetime(2024, 3, 15, 12, 0, tzinfo=UTC)


def _touch(path: Path, mtime: datetime | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    if mtime:
        os.utime(path, (mtime.timestamp(), mtime.timestamp()))
    return path


def test_files_go_only_when_every_row_they_can_hold_is_older_than_the_policy(tmp_path: Path) -> None:
    feats = tmp_path / "offline" / "bar_features_1m"
    jan, feb = _touch(feats / "BTC_USDT-2024-01.parquet"), _touch(feats / "BTC_USDT-2024-02.parquet")
    bars = _touch(tmp_path / "offline" / "bars_1m" / "BTC_USDT-2023-01.parquet")
    preds = tmp_path / "decisions" / "predictions"
    old_day, edge_day = _touch(preds / "2024-02-13.parquet"), _touch(preds / "2024-02-14.parquet")
    fills = _touch(tmp_path / "decisions" / "fills" / "2020-01-01.parquet")
    quiet = _touch(tmp_path / "dead_letters" / "w0.jsonl", datetime(2024, 2, 1, tzinfo=UTC))
    busy = _touch(tmp_path / "dead_letters" / "w1.jsonl", datetime(2024, 3, 15, tzinfo=UTC))

    # 30 days before NOW is 2024-02-14 12:00: February's features may hold rows after it, the 13th's may not.
    lines = retention(tmp_path, "bar_features", "30 days", False, now=NOW)
    assert not jan.exists() and feb.exists() and lines == ["bar_features: dropped 1 file(s) older than 30 days: "
                                                            "BTC_USDT-2024-01.parquet"]
    retention(tmp_path, "predictions", "30 days", False, now=NOW)
    assert not old_day.exists() and edge_day.exists()

    lines = retention(tmp_path, None, None, True, dry_run=True, now=NOW)
    assert "dead_letters: would drop 1 file(s) older than 30 days: w0.jsonl" in lines
    assert "bars: kept (no retention policy)" in lines and "fills: kept (no retention policy)" in lines
    assert quiet.exists()
    retention(tmp_path, None, None, True, now=NOW)
    assert not quiet.exists() and busy.exists() and bars.exists() and fills.exists() and feb.exists()


def test_bad_tables_and_intervals_are_named() -> None:
    assert parse_interval("2 weeks").weeks == 2 and parse_interval("6 months").months == 6
    for bad in ("90", "ninety days", "0 days", "3 fortnights"):
        with pytest.raises(RetentionError, match="--older-than"):
            parse_interval(bad)
    with pytest.raises(RetentionError, match="not a table of the local profile"):
        retention(Path("/nonexistent"), "trades", "1 day", False, now=NOW)


def test_the_command_trims_the_local_profile_without_a_server(tmp_path: Path) -> None:
    env = profile_env(tmp_path)
    fill(env, bars_per_symbol=300)  # January 2024: older than 365 days by now
    feats = Path(env["CRYPTOSTREAM_DATA_DIR"]) / "offline" / "bar_features_1m"
    assert list(feats.glob("*.parquet"))
    done = run_db(env, "retention", "--all-default")
    assert done.returncode == 0, done.stderr
    assert "bar_features: dropped 2 file(s) older than 365 days" in done.stdout
    assert not list(feats.glob("*.parquet"))
    assert list((Path(env["CRYPTOSTREAM_DATA_DIR"]) / "offline" / "bars_1m").glob("*.parquet"))
    done = run_db(env, "retention", "--table", "bars", "--older-than", "soon")
    assert done.returncode == 2 and "--older-than 'soon'" in done.stderr
