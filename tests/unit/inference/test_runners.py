"""LSTM, GNN and ensemble runners: registry -> scorer equals the native models bar by bar; no torch."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from inference import graph as inference_graph
from inference.runners import EnsembleScorer
from inference.scorer import Scorer
from tests.kit.lstm_data import FEATS
from tests.kit.registries import (
    LSTM_CFG,
    SERVICES,
    registered,  # noqa: F401  (fixtures)
    )
from training.export.ensemble_onnx import export_ensemble
from training.models import graph as training_graph
from training.models.ensemble import Ensemble, EnsembleConfig
from training.registry import Parity, save_model

FEED = ["f2", "x_extra", "ret_1", "f1"]  # a wider vector in another order: runners pick by name










def _bars(held: pd.DataFrame, feed: list[str]):
    wide = held.assign(x_extra=123.0)
    for _t, bar in wide.groupby("event_timestamp", sort=True):
        yield bar.index.to_numpy(), {s: r for s, r in zip(bar.symbol, bar[feed].to_numpy(), strict=True)}


def test_lstm_and_gnn_from_the_registry_equal_the_native_models(registered) -> None:  # noqa: F811
    root, held, native = registered
    scorer = Scorer.from_registry(root, ["lightgbm", "lstm", "gnn"], SERVICES)
    got = {f: np.full(len(held), np.nan) for f in native}
    for idx, rows in _bars(held, FEATS):
        out = scorer.score(rows)
        for f in native:
            got[f][idx] = out[f].probability
    for f in native:
        np.testing.assert_array_equal(np.isnan(got[f]), np.isnan(native[f]), err_msg=f)
        np.testing.assert_allclose(got[f], native[f], atol=1e-5, equal_nan=True, err_msg=f)
    assert np.isfinite(got["lstm"]).sum() == len(held) - 3 * LSTM_CFG.burn_in


def test_an_lstm_of_the_windowed_design_is_refused_at_load(registered, tmp_path) -> None:  # noqa: F811
    import shutil

    from inference.lstm_stream import LstmRunner
    from inference.manifest import ManifestError, read_manifest, resolve_version_dir

    reg = tmp_path / "reg"
    shutil.copytree(registered[0], reg)
    d = resolve_version_dir(reg, "lstm")
    m = read_manifest(d)
    with pytest.raises(ManifestError, match=r"windowed design \(extra has 'window'\) without 'burn_in'"):
        LstmRunner(replace(m, extra={"window": 32, "best_epoch": 1}), d)
    with pytest.raises(ManifestError, match="without 'burn_in'"):
        LstmRunner(replace(m, extra={}), d)
    (d / "seq.onnx").unlink()
    with pytest.raises(ManifestError, match="seq.onnx is missing"):
        LstmRunner(m, d)


def test_ensemble_scorer_with_a_wider_feed(registered, tmp_path) -> None:  # noqa: F811
    import shutil

    root, held, native = registered
    reg = tmp_path / "reg"
    shutil.copytree(root, reg)
    members = ("lightgbm", "lstm", "gnn")
    ens = Ensemble(EnsembleConfig(members, (0.5, 0.25, 0.25), "confidence", threshold=0.05))
    probs = np.stack([native[m] for m in members], axis=1)
    exp = export_ensemble(ens, probs)
    versions = {m: (reg / m / "latest").read_text().strip() for m in members}
    save_model(reg, "ensemble", files={"ensemble.onnx": exp.onnx}, feature_service="ensemble_1h_v1",
               features=members, train_start=held.event_timestamp.min(), train_end=held.event_timestamp.max(),
               data_hash="-", seeds={}, config=ens.config.to_dict(), metrics={"folds": [], "mean": {}},
               parity=Parity(exp.max_abs_diff, exp.tolerance, exp.checked_rows),
               extra={"members": versions, "ensemble": ens.config.to_dict()})
    scorer = EnsembleScorer.from_registry(reg, SERVICES, feed=FEED)
    got = np.full(len(held), np.nan)
    sig = np.zeros(len(held), np.int64)
    for idx, rows in _bars(held, FEED):
        out = scorer.score(rows)
        assert set(out) == {*members, "ensemble"}
        got[idx], sig[idx] = out["ensemble"].probability, out["ensemble"].signal
    want_p, _, want_s = ens.predict(probs)
    np.testing.assert_allclose(got, want_p, atol=1e-5, equal_nan=True)
    assert (sig == want_s).mean() > 0.99  # float32 members can flip a signal sitting on the threshold


def test_correlation_adjacency_equals_an_independent_numpy_computation() -> None:
    r = np.random.default_rng(0).normal(size=(7, 30, 5))
    r[0, :, 2] = 0.0  # a constant series: no edges
    r[1, 3, 1] = np.nan  # missing: a zero return
    r[2, :, 3] = r[2, :, 0] * -2.0 + 1e-3  # perfectly anti-correlated with asset 0
    got = inference_graph.correlation_adjacency(r, 0.2)
    assert training_graph.correlation_adjacency is inference_graph.correlation_adjacency  # one definition
    want = np.empty((7, 5, 5))
    for k, window in enumerate(np.nan_to_num(r)):
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.nan_to_num(np.corrcoef(window, rowvar=False), nan=0.0)
        corr[np.abs(corr) < 0.2] = 0.0
        np.fill_diagonal(corr, 1.0)
        want[k] = corr
    assert got.dtype == np.float32 and got.shape == (7, 5, 5)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert (got == np.swapaxes(got, -1, -2)).all()
    assert got[0, 2].tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert got[2, 0, 3] == pytest.approx(-1.0, abs=1e-6)


def test_no_training_library_when_loading_runners() -> None:
    code = ("import sys, inference.scorer, inference.runners; "
            "bad = [m for m in ('lightgbm', 'torch', 'sklearn', 'onnxmltools', 'skl2onnx', 'training') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
