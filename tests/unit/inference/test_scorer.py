"""Scorer: onnxruntime only, refuses mismatched feature lists, batched scores equal the native model."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import numpy as np
import pytest

from inference.manifest import ManifestError
from inference.scorer import FeatureMismatch, Scorer, to_signal
from tests.kit.lightgbm_data import CFG, FEATURES, synthetic_frame
from training.export.lightgbm_onnx import export_lightgbm
from training.models.lightgbm_model import LightGBMModel
from training.registry import Parity, frame_hash, save_model, version_dir

SERVICE = "lightgbm_1h_v1"


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    frame = synthetic_frame(300)
    fit, held = frame.iloc[:600], frame.iloc[600:]
    model = LightGBMModel(CFG).fit_final(fit, 50, FEATURES)
    x = held[list(FEATURES)].to_numpy()
    exp = export_lightgbm(model, x)
    save_model(root, "lightgbm", files={"model.onnx": exp.onnx, **model.save(root / "native")},
               feature_service=SERVICE, features=FEATURES, train_start=fit.event_timestamp.min(),
               train_end=fit.event_timestamp.max(), data_hash=frame_hash(fit, FEATURES),
               seeds={"seed": CFG.seed}, config=CFG.to_dict(), metrics={"folds": [], "mean": {}},
               parity=Parity(exp.max_abs_diff, exp.tolerance, exp.checked_rows),
               now=lambda: datetime(2024, 1, 1, tzinfo=UTC))
    return root, model, held


def test_scores_equal_native_and_signals(registered) -> None:
    root, model, held = registered
    scorer = Scorer.from_registry(root, ["lightgbm"], {SERVICE: list(FEATURES)}, confidence_threshold=0.2)
    bar = held.iloc[:3]
    rows = {s: r for s, r in zip(bar.symbol, bar[list(FEATURES)].to_numpy(), strict=True)}
    out = scorer.score(rows)["lightgbm"]
    assert out.symbols == tuple(bar.symbol)
    np.testing.assert_allclose(out.probability, model.predict_proba(bar[list(FEATURES)].to_numpy()), atol=1e-5)
    np.testing.assert_allclose(out.confidence, np.abs(out.probability - 0.5) * 2)
    conf, sig = to_signal(np.array([0.9, 0.1, 0.55, np.nan]), 0.2)
    assert sig.tolist() == [1, 0, -1, -1]


@pytest.mark.parametrize("service, message", [
    (list(FEATURES[:-1]), "missing from service \\['f_const'\\]"),
    ([*FEATURES, "f_new"], "extra in service \\['f_new'\\]"),
    ([FEATURES[1], FEATURES[0], *FEATURES[2:]], "reordered \\['f_signal"),
])
def test_refuses_mismatched_feature_lists(registered, service, message) -> None:
    root, _, _ = registered
    with pytest.raises(FeatureMismatch, match=message):
        Scorer.from_registry(root, ["lightgbm"], {SERVICE: service})
    with pytest.raises(FeatureMismatch, match="not among"):
        Scorer.from_registry(root, ["lightgbm"], {"lstm_1h_v1": list(FEATURES)})


def test_refuses_tampered_files(registered, tmp_path) -> None:
    import shutil

    root, _, _ = registered
    copy = tmp_path / "reg"
    shutil.copytree(root, copy)
    d = version_dir(copy, "lightgbm")
    (d / "model.onnx").write_bytes((d / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(ManifestError, match="model.onnx"):
        Scorer.from_registry(copy, ["lightgbm"], {SERVICE: list(FEATURES)})


def test_no_training_library_on_the_scoring_path() -> None:
    code = ("import sys, inference.scorer, inference.manifest; "
            "bad = [m for m in ('lightgbm', 'torch', 'sklearn', 'onnxmltools', 'skl2onnx', 'training') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


class _Linear:
    """A stand-in row-wise model (not a service): P(up) = sigmoid(x . w)."""

    manifest = None

    def __init__(self, w: list[float]) -> None:
        self.w = np.asarray(w)

    def score(self, symbols, x, bar_ts=None) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(x @ self.w)))


def test_ensemble_takes_members_by_name_whatever_the_runner_order() -> None:
    from inference.runners import EnsembleScorer
    from inference.scorer import open_session
    from training.export.ensemble_onnx import export_ensemble
    from training.models.ensemble import Ensemble, EnsembleConfig

    members = ("a", "b", "c")
    runners = {"a": _Linear([1.0, 0.0, 0.0]), "b": _Linear([0.0, 2.0, 0.0]), "c": _Linear([0.0, 0.0, -1.0])}
    x = np.random.default_rng(0).normal(size=(7, 3))
    x[2, 1] = np.nan  # member b has no score for S2: the ensemble leaves it out
    probs = np.stack([runners[m].score((), x) for m in members], axis=1)
    ens = Ensemble(EnsembleConfig(members, (0.5, 0.3, 0.2), "confidence", threshold=0.1))
    onnx = export_ensemble(ens, probs).onnx
    rows = {f"S{i}": x[i] for i in range(len(x))}
    ordered = EnsembleScorer(Scorer(runners, 0.1), None, members, open_session(onnx))
    shuffled = EnsembleScorer(Scorer({k: runners[k] for k in "cab"}, 0.1), None, members, open_session(onnx))
    want = ordered.score(rows, bar_ts=0)
    assert list(want) == [*members, "ensemble"]
    for fam, m in enumerate(members):
        conf, sig = to_signal(probs[:, fam], 0.1)
        np.testing.assert_array_equal(want[m].probability, probs[:, fam])
        np.testing.assert_array_equal(want[m].confidence, conf)
        np.testing.assert_array_equal(want[m].signal, sig)
    p, c, s = ens.predict(probs)
    np.testing.assert_allclose(want["ensemble"].probability, p, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(want["ensemble"].signal, s)
    for order in ("cab", "bca"):  # a hot swap may rebuild the runners dict: the next bar follows it
        shuffled.scorer.runners = {k: runners[k] for k in order}
        got = shuffled.score(rows, bar_ts=0)
        for f in (*members, "ensemble"):
            assert got[f].symbols == tuple(rows)
            for field in ("probability", "confidence", "signal"):
                np.testing.assert_array_equal(getattr(got[f], field), getattr(want[f], field), err_msg=f)
