"""Platt calibration of the ensemble: fitted on out-of-sample rows, inside the exported graph, old configs intact."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from training.export.ensemble_onnx import export_ensemble
from training.models.ensemble import Ensemble, EnsembleConfig, calibrate, fit_platt
from training.train import calibrate_on


def _data(n: int = 20_000, a: float = 0.4, b: float = 0.1, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = rng.uniform(0.2, 0.8, n)  # an overconfident model: the truth is a flatter map of its logit
    truth = calibrate(raw, (a, b))
    return raw, (rng.uniform(size=n) < truth).astype(float)


def test_platt_recovers_a_known_map() -> None:
    raw, y = _data()
    a, b = fit_platt(raw, y)
    assert a == pytest.approx(0.4, abs=0.08) and b == pytest.approx(0.1, abs=0.04)


def test_the_check_is_honest_and_calibration_helps_an_overconfident_model() -> None:
    raw, y = _data()
    (a, b), check = calibrate_on(raw, y)
    assert check["rows_checked"] == pytest.approx(6000)
    assert check["brier_calibrated"] < check["brier_raw"] and check["logloss_calibrated"] < check["logloss_raw"]
    assert calibrate_on(raw, y, enabled=False) == ((1.0, 0.0), {})


def test_the_exported_graph_calibrates_with_parity_and_keeps_the_raw_probability() -> None:
    raw, y = _data(4000)
    members = np.stack([raw, np.clip(raw + 0.05, 0, 1)], axis=1)
    members[::97, 0] = np.nan
    members[::389] = np.nan  # rows without any member
    cfg = EnsembleConfig(("lightgbm", "lstm"), (0.5, 0.5), "fixed", 0.1, {}, (0.4, 0.1))
    ens = Ensemble(cfg)
    exp = export_ensemble(ens, members)
    sess = ort.InferenceSession(exp.onnx, providers=["CPUExecutionProvider"])
    prob, prob_raw = sess.run(["prob", "prob_raw"], {"probs": members})
    np.testing.assert_allclose(prob, ens.predict_proba(members), atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(prob_raw, ens.predict_raw(members), atol=1e-12, equal_nan=True)
    ok = np.isfinite(prob)
    order = np.argsort(prob_raw[ok])
    assert np.isnan(prob[::389]).all() and (np.diff(prob[ok][order]) >= -1e-12).all()  # the ranking is kept


def test_a_config_from_before_calibration_loads_as_the_identity() -> None:
    old = {"members": ["lightgbm"], "weights": [1.0], "method": "fixed", "threshold": 0.1, "source": {}}
    cfg = EnsembleConfig.from_dict(old)
    assert cfg.calibration == (1.0, 0.0)
    p = np.array([[0.3], [0.55], [np.nan]])
    np.testing.assert_array_equal(Ensemble(cfg).predict_proba(p), Ensemble(cfg).predict_raw(p))
    assert EnsembleConfig.from_dict(cfg.to_dict()) == cfg
