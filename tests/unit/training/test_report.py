"""Walk-forward report: hold-out isolation, ensemble weights from earlier folds only, output files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.metrics import roc_auc
from training.models.ensemble import performance_weights
from training.report import write_report
from training.walkforward_report import (
    MEMBERS,
    MODELS,
    ReportConfig,
    ReportResult,
    baselines,
    ensemble_weights,
    run,
)

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
TINY_LSTM = {"bptt": 6, "burn_in": 6, "segment": 48, "hidden": 4, "layers": 1, "dropout": 0.0, "batch_size": 16, "max_epochs": 1,
             "patience": 1, "num_threads": 1}
TINY_GNN = {"hidden": 4, "heads": 1, "batch_size": 256, "max_epochs": 1, "patience": 1, "num_threads": 1}


def tiny(data: Path, out: Path, **kw) -> ReportConfig:
    return ReportConfig(data, out, SYMBOLS, kw.pop("start", "2023-10-15"), kw.pop("end", "2024-01-10"),
                        folds=2, threads=1, lstm=TINY_LSTM, gnn=TINY_GNN, graph_window=12, **kw)


@pytest.fixture(scope="module")
def result(shared_data, tmp_path_factory) -> ReportResult:
    return run(tiny(shared_data / "binance-spot-1h", tmp_path_factory.mktemp("report")), log=lambda _: None)


def test_first_fold_weights_are_equal_and_later_ones_come_from_earlier_folds_only() -> None:
    assert np.allclose(ensemble_weights([]), 1 / 3)
    hist = [{"lightgbm": 0.56, "lstm": 0.50, "gnn": 0.52}]
    np.testing.assert_allclose(ensemble_weights(hist), [0.75, 0.0, 0.25])
    assert np.allclose(ensemble_weights([{"lightgbm": 0.49, "lstm": 0.5, "gnn": 0.4}]), 1 / 3)  # no edge yet


def test_baselines_are_calibrated_on_the_training_side_only() -> None:
    train = pd.DataFrame({"label": [1, 1, 1, 0], "ret_1": [0.1, -0.1, 0.2, 0.3]})
    rows = pd.DataFrame({"label": [0, 0], "ret_1": [0.5, -0.5]})
    b = baselines(train, rows)
    np.testing.assert_allclose(b["always_up"], [0.75, 0.75])
    np.testing.assert_allclose(b["last_return_sign"], [0.501, 0.499])  # hit rate 0.5 -> floor 0.501
    assert (baselines(train.assign(label=0), rows)["always_up"] > 0.5).all()  # always long whatever the rate


def test_development_and_holdout_rows_are_split_at_the_holdout_start(result: ReportResult) -> None:
    t = pd.Timestamp(result.config.holdout_start, tz="UTC")
    assert (result.oos["event_timestamp"] < t).all() and (result.holdout["event_timestamp"] >= t).all()
    assert len(result.holdout) > 0 and sorted(result.oos["fold"].unique()) == [0, 1]
    for df in (result.oos, result.holdout):
        p = df[list(MODELS)].to_numpy()
        assert np.isfinite(p).all() and ((p > 0) & (p < 1)).all()


def test_ensemble_weights_of_each_fold_come_from_the_folds_before_it(result: ReportResult) -> None:
    assert result.weights["0"] == pytest.approx([1 / 3] * 3)
    f0 = result.oos[result.oos["fold"] == 0]
    aucs = {m: {"roc_auc": roc_auc(f0["label"], f0[m])} for m in MEMBERS}
    try:
        want = performance_weights(aucs, MEMBERS)
    except ValueError:
        want = np.full(3, 1 / 3)
    np.testing.assert_allclose(result.weights["1"], want)
    f1 = result.oos[result.oos["fold"] == 1]
    p = f1[list(MEMBERS)].to_numpy() @ np.asarray(result.weights["1"])
    np.testing.assert_allclose(f1["ensemble"], p, atol=1e-12)


def test_changing_the_holdout_candles_changes_no_development_figure(shared_data, tmp_path, result) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(5)
    for f in (shared_data / "binance-spot-1h").glob("*.parquet"):
        df = pd.read_parquet(f)
        late = df["ts"] >= pd.Timestamp(result.config.holdout_start, tz="UTC")  # bars opening in the hold-out
        df.loc[late, "close"] *= np.exp(rng.normal(0, 0.02, int(late.sum())))
        df.loc[late, "high"] = df.loc[late, ["high", "close"]].max(axis=1)
        df.loc[late, "low"] = df.loc[late, ["low", "close"]].min(axis=1)
        df.to_parquet(data / f.name)
    other = run(tiny(data, tmp_path / "out"), log=lambda _: None)
    pd.testing.assert_frame_equal(other.oos, result.oos)
    assert other.weights["holdout"] == result.weights["holdout"]
    assert not np.allclose(other.holdout["fwd_ret"], result.holdout["fwd_ret"])


def test_report_files(result: ReportResult) -> None:
    path = write_report(result, "python -m training.report (test)")
    text = path.read_text()
    for heading in ("## Development walk-forward, pooled over folds", "## Hold-out from 2024-01-01", "### Per-fold metrics"):
        assert heading in text
    assert all(f"| {m} |" in text for m in MODELS)
    assert result.config.run_id() in text
    for png in ("equity_walk_forward.png", "equity_holdout.png"):
        assert f"({png})" in text
        size = (path.parent / png).stat().st_size
        assert 5_000 < size < 250_000


def test_bad_settings_name_the_field(tmp_path) -> None:
    from flows.settings import SettingsError

    with pytest.raises(SettingsError, match="data_dir"):
        ReportConfig(tmp_path / "absent")
    with pytest.raises(SettingsError, match="folds"):
        ReportConfig(tmp_path, folds=1)
