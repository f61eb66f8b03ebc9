"""Ensemble: weighting methods, normalisation, missing members, signals, and its ONNX export."""

from __future__ import annotations

import numpy as np
import pytest

from training.models.ensemble import (
    Ensemble,
    EnsembleConfig,
    normalise,
    performance_weights,
    predict_with_threshold,
)

MEMBERS = ("lightgbm", "lstm", "gnn")


def test_fixed_weights_are_normalised_and_combine_linearly() -> None:
    cfg = EnsembleConfig(MEMBERS, (2.0, 1.0, 1.0))
    assert cfg.weights == (0.5, 0.25, 0.25)
    p = np.array([[0.8, 0.4, 0.6], [0.2, 0.2, 0.2]])
    np.testing.assert_allclose(Ensemble(cfg).predict_proba(p), [0.65, 0.2])


def test_zero_negative_and_mismatched_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="all ensemble weights are zero"):
        EnsembleConfig(MEMBERS, (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="non-negative"):
        normalise([1.0, -0.5])
    with pytest.raises(ValueError, match="3 members but 2 weights"):
        EnsembleConfig(MEMBERS, (1.0, 1.0))
    with pytest.raises(ValueError, match="method"):
        EnsembleConfig(MEMBERS, (1.0, 1.0, 1.0), method="vote")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        Ensemble(EnsembleConfig(MEMBERS, (1, 1, 1))).predict_proba(np.zeros((2, 2)))


def test_performance_weights_follow_the_edge() -> None:
    means = {"lightgbm": {"roc_auc": 0.56, "sharpe": 1.0}, "lstm": {"roc_auc": 0.48, "sharpe": -0.2},
             "gnn": {"roc_auc": 0.52, "sharpe": 3.0}}
    np.testing.assert_allclose(performance_weights(means, MEMBERS), [0.75, 0.0, 0.25])
    np.testing.assert_allclose(performance_weights(means, MEMBERS, "sharpe"), [0.25, 0.0, 0.75])
    with pytest.raises(ValueError, match="no member has a positive roc_auc edge"):
        performance_weights({m: {"roc_auc": 0.5} for m in MEMBERS}, MEMBERS)
    with pytest.raises(ValueError, match="'gnn' has no walk-forward mean"):
        performance_weights({"lightgbm": {"roc_auc": 0.6}, "lstm": {"roc_auc": 0.6}}, MEMBERS)


def test_confidence_weighting_favours_the_sure_member_and_falls_back_at_half() -> None:
    ens = Ensemble(EnsembleConfig(MEMBERS, (1, 1, 1), "confidence"))
    p = np.array([[0.9, 0.45, 0.5], [0.5, 0.5, 0.5]])
    # row 0: confidences 0.8, 0.1, 0 -> (0.9*0.8 + 0.45*0.1) / 0.9
    np.testing.assert_allclose(ens.predict_proba(p), [(0.72 + 0.045) / 0.9, 0.5])


def test_missing_members_are_left_out_and_all_missing_is_nan() -> None:
    ens = Ensemble(EnsembleConfig(MEMBERS, (0.5, 0.25, 0.25)))
    p = np.array([[0.8, np.nan, 0.6], [np.nan, np.nan, np.nan]])
    out = ens.predict_proba(p)
    np.testing.assert_allclose(out[0], (0.5 * 0.8 + 0.25 * 0.6) / 0.75)
    assert np.isnan(out[1])


def test_predict_with_threshold() -> None:
    p = np.array([0.9, 0.1, 0.55, 0.45, np.nan, 0.5])
    assert predict_with_threshold(p, 0.2).tolist() == [1, 0, -1, -1, -1, -1]
    assert predict_with_threshold(p, 0.0).tolist() == [1, 0, 1, 0, -1, 0]
    prob, conf, sig = Ensemble(EnsembleConfig(MEMBERS, (1, 1, 1), threshold=0.2)).predict(
        np.array([[0.9, 0.8, 0.7]]))
    np.testing.assert_allclose(conf, [0.6])
    assert sig.tolist() == [1]


def test_config_round_trip() -> None:
    cfg = EnsembleConfig(MEMBERS, (3, 1, 0), "performance", 0.15, {"metric": "roc_auc"})
    assert EnsembleConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("method", ["fixed", "performance", "confidence"])
def test_onnx_export_matches_native_on_held_out_rows(method) -> None:
    from training.export.ensemble_onnx import export_ensemble, onnx_predict

    rng = np.random.default_rng(5)
    p = rng.uniform(0, 1, size=(500, 3))
    p[::17, 1] = np.nan
    p[::53] = np.nan
    p[7] = 0.5
    p[11, :] = [0.6, 0.55, 0.45]  # ensemble confidence exactly near the threshold
    ens = Ensemble(EnsembleConfig(MEMBERS, (0.5, 0.2, 0.3), method, threshold=0.1))
    exp = export_ensemble(ens, p)
    assert exp.max_abs_diff <= 1e-5 and exp.checked_rows == 500 and exp.outputs == ("prob", "confidence", "signal", "prob_raw")
    prob, conf, sig = onnx_predict(exp.onnx, p)
    nprob, nconf, nsig = ens.predict(p)
    np.testing.assert_allclose(prob, nprob, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(conf, nconf, atol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(sig, nsig)
    assert (sig == -1).any() and (sig == 0).any() and (sig == 1).any()


def test_onnx_export_rejects_a_graph_that_differs(monkeypatch) -> None:
    from training.export import ExportRejected, ensemble_onnx

    ens = Ensemble(EnsembleConfig(MEMBERS, (1, 1, 1)))
    other = Ensemble(EnsembleConfig(MEMBERS, (1, 0, 0)))
    blob = ensemble_onnx.to_onnx(other)
    monkeypatch.setattr(ensemble_onnx, "to_onnx", lambda _e: blob)
    with pytest.raises(ExportRejected, match="max \\|diff\\|"):
        ensemble_onnx.export_ensemble(ens, np.random.default_rng(0).uniform(size=(50, 3)))
