"""python -m training.walkforward: purged windows, scratch registries, one concatenated out-of-sample curve."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from flows.go_live import decision_config_hash
from flows.settings import SettingsError, load_settings
from training.walkforward import WalkForwardJob, main, windows


def _job(**changes) -> WalkForwardJob:
    base = {"paths": (), "out": Path("/nonexistent"), "train_start": "2021-01-01", "start": "2021-07-01",
            "end": "2022-01-01", "embargo_bars": 24, "horizon": 4}
    return WalkForwardJob(**{**base, **changes})


def test_quarterly_windows_are_purged_by_the_horizon_and_embargoed() -> None:
    ws = windows(_job(), "1h")
    assert [(w.test_start.month, w.test_end.month) for w in ws] == [(7, 10), (10, 1)]
    for w in ws:
        assert w.test_start - w.train_end == pd.Timedelta(hours=4 + 24)
        assert w.train_start == pd.Timestamp("2021-01-01", tz="UTC")  # expanding
    rolling = windows(_job(rolling_days=90, every="month"), "1h")
    assert len(rolling) == 6 and all(w.test_start - w.train_start == pd.Timedelta(days=90) for w in rolling)
    assert len(windows(_job(every_bars=24 * 30), "1h")) == 7  # 184 days in 30-day windows, the last one short


def test_a_window_without_training_data_is_refused() -> None:
    with pytest.raises(SettingsError, match="no training data"):
        windows(_job(train_start="2021-06-30"), "1h")


def test_a_two_window_run_concatenates_out_of_sample_equity(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    files = [shared_data / "binance-spot-1h" / f"{s}_USDT-1h.parquet" for s in ("BTC", "ETH")]
    out = tmp_path / "wf"
    user = tmp_path / "user-var"
    monkeypatch.setenv("CRYPTOSTREAM_DATA_DIR", str(user))  # the user's registry must stay untouched
    assert main([*map(str, files), "--train-start", "2021-01-01", "--start", "2021-07-01", "--end", "2021-09-01",
                 "--every", "month", "--folds", "2", "--out", str(out), "--set", "scoring.policy_family=",
                 "--set", "scoring.confidence_threshold=0.05", "--lgb", "num_leaves=15"]) == 0
    rows = pd.read_csv(out / "windows.csv")
    assert list(rows.window) == [0, 1] and (rows.fills > 0).all()
    eq = pd.read_csv(out / "equity.csv")
    assert eq.equity.iloc[-1] / eq.equity.iloc[0] - 1 == pytest.approx((1 + rows["return"]).prod() - 1, abs=1e-9)  # equity.csv: 6 decimals
    assert pd.Timestamp(eq.ts.iloc[0]) == pd.Timestamp("2021-07-01 01:00", tz="UTC")  # the first traded close
    summary = json.loads((out / "summary.json").read_text())
    versions = [w["ensemble"] for w in summary["windows"]]
    for k, v in enumerate(versions):
        assert (out / "registry" / f"window-{k}" / "ensemble" / v / "manifest.json").is_file()
        lgb = json.loads(next((out / "registry" / f"window-{k}" / "lightgbm").glob("*/manifest.json")).read_text())
        assert lgb["config"]["model"]["params"]["num_leaves"] == 15
    assert not (user / "registry").exists()
    before, after = summary["strategy_before_fees"], summary["strategy"]
    assert before["total_return"] > after["total_return"]  # it paid fees
    settings = load_settings(env={"CRYPTOSTREAM_SYMBOLS": "BTC/USDT,ETH/USDT", "CRYPTOSTREAM_BARS__TIMEFRAMES": "1h",
                                  "CRYPTOSTREAM_SCORING__POLICY_FAMILY": "",
                                  "CRYPTOSTREAM_SCORING__CONFIDENCE_THRESHOLD": "0.05"})
    assert summary["decision_config_hash"] == decision_config_hash(settings)
    fills = pd.read_csv(out / "fills.csv")
    closeouts = fills[fills.client_order_id.str.startswith("closeout-")]
    assert (closeouts.groupby("symbol").size() <= 2).all()  # at most one close-out per symbol and window
    assert "## Windows (after fees)" in (out / "REPORT.md").read_text()
