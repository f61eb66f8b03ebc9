"""python -m training.tune: seeded search on development windows only, with DSR and PBO reported."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from flows.settings import SettingsError
from training.tune import main, parse_space, trial_job
from training.walkforward import WalkForwardJob


def test_the_space_is_parsed_and_bad_entries_are_named() -> None:
    dims = parse_space(["scoring.confidence_threshold=float:0:0.3", "train.horizon=int:1:12",
                        "risk.sizing.method=choice:half_kelly,fixed_fraction"])
    assert [(d.path, d.kind) for d in dims] == [("scoring.confidence_threshold", "float"), ("train.horizon", "int"),
                                                ("risk.sizing.method", "choice")]
    assert dims[2].choices == ("half_kelly", "fixed_fraction")
    for bad, why in (("x=float:1:0", "LOW must be below"), ("x=normal:0:1", "path=float"),
                     ("train.num_leaves=int:2:9", "train.horizon")):
        with pytest.raises(SettingsError, match=why):
            parse_space([bad])


def test_trials_share_models_unless_they_change_model_parameters(tmp_path: Path) -> None:
    base = WalkForwardJob((), tmp_path, "2021-01-01", "2021-07-01", "2021-09-01")
    a = trial_job(base, {"scoring.confidence_threshold": 0.1}, tmp_path / "t0")
    b = trial_job(base, {"scoring.confidence_threshold": 0.2}, tmp_path / "t1")
    c = trial_job(base, {"train.horizon": 4}, tmp_path / "t2")
    d = trial_job(base, {"train.lgb.num_leaves": 15}, tmp_path / "t3")
    assert a.models_dir == b.models_dir != c.models_dir and c.horizon == 4
    assert d.lgb_params == {"num_leaves": 15} and d.models_dir not in (a.models_dir, c.models_dir)
    assert parse_space(["train.lgb.learning_rate=log:0.01:0.2"])[0].kind == "log"
    assert a.overrides == {"scoring.confidence_threshold": 0.1}


def test_tuning_refuses_to_reach_the_holdout(tmp_path: Path) -> None:
    assert main(["x.parquet", "--train-start", "2021-01-01", "--start", "2023-07-01", "--end", "2024-03-01",
                 "--holdout-start", "2024-01-01", "--space", "scoring.confidence_threshold=float:0:0.3",
                 "--out", str(tmp_path)]) == 2


def test_a_small_seeded_search_reports_trials_dsr_and_pbo(shared_data: Path, tmp_path: Path) -> None:
    files = [str(shared_data / "binance-spot-1h" / f"{s}_USDT-1h.parquet") for s in ("BTC", "ETH")]
    args = [*files, "--train-start", "2021-01-01", "--start", "2021-07-01", "--end", "2021-09-01", "--every", "month",
            "--folds", "2", "--holdout-start", "2022-01-01", "--trials", "3", "--set", "scoring.policy_family=",
            "--space", "scoring.confidence_threshold=float:0.0:0.3"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    trials = pd.read_csv(tmp_path / "a" / "trials.csv")
    assert len(trials) == 3 and trials["scoring.confidence_threshold"].between(0, 0.3).all()
    best = json.loads((tmp_path / "a" / "best.json").read_text())
    assert best["trials"] == 3 and 0.0 <= best["pbo"] <= 1.0 and 0.0 <= best["dsr_probability"] <= 1.0
    assert best["best_sharpe"] == pytest.approx(trials["sharpe"].max()) and best["deflated_sharpe"] < best["best_sharpe"]
    assert len(list((tmp_path / "a").glob("models-*"))) == 1  # the three trials shared the windows' models
    report = (tmp_path / "a" / "REPORT.md").read_text()
    assert "3 trials" in report and "probability of backtest overfitting" in report
    assert main([*args, "--out", str(tmp_path / "b")]) == 0  # same seed, same trials
    again = pd.read_csv(tmp_path / "b" / "trials.csv")
    pd.testing.assert_frame_equal(trials, again)
