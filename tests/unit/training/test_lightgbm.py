"""LightGBM baseline: walk-forward CV with carved early stopping, validated final rounds, determinism, save/load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.kit.lightgbm_data import CFG, FEATURES, synthetic_frame
from training.models.lightgbm_model import LightGBMConfig, LightGBMModel
from training.validation import WalkForward, WalkForwardConfig


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synthetic_frame()


def _splitter(frame: pd.DataFrame) -> WalkForward:
    return WalkForward(frame["event_timestamp"], "1h", WalkForwardConfig(n_splits=3, horizon=1, embargo=0))


def test_cross_validate_learns_and_records_folds(frame) -> None:
    model = LightGBMModel(CFG)
    cv = model.cross_validate(frame, _splitter(frame), FEATURES)
    assert len(cv.folds) == 3 and len(cv.best_iterations) == 3
    assert all(1 <= it < CFG.max_rounds for it in cv.best_iterations)  # early stopping bit
    for f in cv.folds:
        assert {"accuracy", "log_loss", "roc_auc", "brier", "sharpe", "best_iteration"} <= set(f)
    assert cv.mean["roc_auc"] > 0.6  # the signal is learnable
    assert cv.oos["fold"].nunique() == 3 and cv.oos["p"].between(0, 1).all()


def test_fit_final_uses_median_best_iteration(frame) -> None:
    model = LightGBMModel(CFG)
    cv = model.cross_validate(frame, _splitter(frame), FEATURES)
    model.fit_final(frame, cv.best_iterations)
    assert model.final_rounds == int(np.median(cv.best_iterations))
    assert model.booster is not None and model.booster.current_iteration() == model.final_rounds
    imp = model.feature_importance()
    assert imp.index[0] == "f_signal" and imp["f_const"] == 0.0
    p, pred, conf = model.predict_with_confidence(frame)
    np.testing.assert_array_equal(pred, (p > 0.5).astype(np.int8))
    np.testing.assert_allclose(conf, np.abs(p - 0.5) * 2)
    assert conf.min() >= 0 and conf.max() <= 1


def test_same_seed_same_predictions_different_seed_differs(frame) -> None:
    def run(seed: int) -> np.ndarray:
        cfg = LightGBMConfig(**{**CFG.to_dict(), "seed": seed})
        return LightGBMModel(cfg).fit_final(frame, 60, FEATURES).predict_proba(frame)

    a, b, c = run(3), run(3), run(4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)  # bagging/feature_fraction follow the seed


def test_save_load_round_trip(frame, tmp_path) -> None:
    model = LightGBMModel(CFG).fit_final(frame, 40, FEATURES)
    files = model.save(tmp_path / "m")
    assert set(files) == {"model.txt", "config.json"}
    loaded = LightGBMModel.load(tmp_path / "m")
    assert loaded.config == model.config and loaded.features == FEATURES and loaded.final_rounds == 40
    np.testing.assert_array_equal(loaded.predict_proba(frame), model.predict_proba(frame))


def test_regression_objective_and_bad_input(frame) -> None:
    cfg = LightGBMConfig(**{**CFG.to_dict(), "objective": "regression"})
    model = LightGBMModel(cfg)
    cv = model.cross_validate(frame, _splitter(frame), FEATURES)
    assert cv.mean["roc_auc"] > 0.6
    with pytest.raises(KeyError, match="f_missing"):
        LightGBMModel(CFG).prepare_data(frame, ["f_signal", "f_missing"])
    with pytest.raises(ValueError, match="objective"):
        LightGBMConfig(objective="multiclass")  # type: ignore[arg-type]


def test_metrics_known_values() -> None:
    # (kept here: training/metrics.py has no test module of its own in this change)
    from training.metrics import (
        TradingConfig,
        fold_metrics,
        periods_per_year,
        roc_auc,
        sign_trading_returns,
    )

    assert periods_per_year("1h") == pytest.approx(8760.0)  # training.performance: 365 days of 24 h
    assert periods_per_year("1h", 4) == pytest.approx(8760.0 / 4)
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert np.isnan(roc_auc([1, 1], [0.2, 0.3]))
    t = pd.date_range("2024-01-01", periods=4, freq="h", tz="UTC")
    # one symbol: long, long, short, short -> costs 1 (entry) + 2 (flip) units of 10 bps
    rets, turnover = sign_trading_returns([0.6, 0.7, 0.2, 0.4], [0.01, -0.02, -0.01, 0.03], ["A"] * 4, t,
                                          TradingConfig(fee_bps=10, timeframe="1h"))
    np.testing.assert_allclose(rets.to_numpy(), [0.01 - 0.001, -0.02, 0.01 - 0.002, -0.03])
    assert turnover == pytest.approx(3 / 4)
    # horizon 2: only every second decision is traded (non-overlapping)
    rets2, _ = sign_trading_returns([0.6, 0.7, 0.2, 0.4], [0.01, -0.02, -0.01, 0.03], ["A"] * 4, t,
                                    TradingConfig(fee_bps=0, timeframe="1h", horizon=2))
    np.testing.assert_allclose(rets2.to_numpy(), [0.01, 0.01])
    m = fold_metrics([1, 0, 0, 1], [0.6, 0.7, 0.2, 0.4], [0.01, -0.02, -0.01, 0.03], ["A"] * 4, t,
                     TradingConfig(fee_bps=10))
    assert m["accuracy"] == 0.5 and m["brier"] == pytest.approx((0.16 + 0.49 + 0.04 + 0.36) / 4)
    r = rets.to_numpy()
    assert m["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * np.sqrt(8760.0))


def test_onnx_export_parity_on_held_out_rows(frame) -> None:
    from training.export import ExportRejected
    from training.export.lightgbm_onnx import export_lightgbm, onnx_predict

    fit, held = frame.iloc[:900], frame.iloc[900:]
    model = LightGBMModel(CFG).fit_final(fit, 80, FEATURES)
    x = held[list(FEATURES)].to_numpy(np.float64)
    exp = export_lightgbm(model, x)  # float64 input, exact thresholds
    assert exp.max_abs_diff <= 1e-5 and exp.checked_rows == len(x) and exp.outputs == ("prob",)
    np.testing.assert_allclose(onnx_predict(exp.onnx, x), model.predict_proba(x), atol=1e-5)
    f32 = export_lightgbm(model, x, precision="float")  # float32 graph: measured after the cast
    assert f32.max_abs_diff <= 1e-5
    # float32 leaf sums are not bit-exact: a zero tolerance is refused, with the figures in the message
    with pytest.raises(ExportRejected, match=r"max \|diff\|"):
        export_lightgbm(model, x, tolerance=0.0, precision="float")
