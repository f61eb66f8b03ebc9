"""LSTM, GNN and ensemble runners: registry -> scorer equals the native models bar by bar; no torch."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict, replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from inference import graph as inference_graph
from inference.runners import EnsembleScorer
from inference.scorer import Scorer
from tests.unit.training.test_lstm import FEATS, synth
from training.export.ensemble_onnx import export_ensemble
from training.export.lightgbm_onnx import export_lightgbm
from training.export.torch_onnx import export_gnn, export_lstm_seq, export_lstm_step
from training.models import graph as training_graph
from training.models.ensemble import Ensemble, EnsembleConfig
from training.models.gnn import GnnClassifier, GnnConfig
from training.models.graph import GraphConfig
from training.models.lightgbm_model import LightGBMConfig, LightGBMModel
from training.models.lstm import LstmClassifier, LstmConfig
from training.registry import Parity, frame_hash, save_model

SERVICES = {"lightgbm_1h_v1": FEATS, "lstm_1h_v1": FEATS, "gnn_1h_v1": FEATS}
FEED = ["f2", "x_extra", "ret_1", "f1"]  # a wider vector in another order: runners pick by name
LSTM_CFG = LstmConfig(bptt=6, burn_in=6, segment=48, hidden=8, layers=2, dropout=0.1, max_epochs=3, patience=2,
                      batch_size=16)
GNN_CFG = GnnConfig(hidden=8, heads=2, max_epochs=3, patience=2, batch_size=32)
GRAPH = GraphConfig(window=10, threshold=0.3)
LGB_CFG = LightGBMConfig(params={"num_leaves": 7, "min_data_in_leaf": 20}, max_rounds=50, seed=3)


def _save(root, family, files, service, features, exp, fit, extra, config):
    return save_model(root, family, files=files, feature_service=service, features=features,
                      train_start=fit.event_timestamp.min(), train_end=fit.event_timestamp.max(),
                      data_hash=frame_hash(fit, features), seeds={"seed": 0}, config=config,
                      metrics={"folds": [], "mean": {}},
                      parity=Parity(exp.max_abs_diff, exp.tolerance, exp.checked_rows), extra=extra,
                      now=lambda: datetime(2024, 1, 1, tzinfo=UTC))


def lstm_extra(model: LstmClassifier) -> dict[str, int]:
    """The manifest ``extra`` of an LSTM, as ``training.train`` writes it."""
    c = model.config
    return {"burn_in": c.burn_in, "bptt": c.bptt, "segment": c.segment, "best_epoch": model.best_epoch}


def synth_split(n: int, cut: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Synthetic bars of three assets (``n`` bar times) with ``fwd_ret``; (fit, held) split at the ``cut``-th time."""
    frame = synth(n)
    frame["fwd_ret"] = frame.groupby("symbol")["ret_1"].shift(-1).fillna(0.0)
    times = frame.event_timestamp.unique()
    fit, held = frame[frame.event_timestamp < times[cut]], frame[frame.event_timestamp >= times[cut]]
    return fit.reset_index(drop=True), held.reset_index(drop=True)


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    fit, held = synth_split(260, 200)

    lstm = LstmClassifier(FEATS, LSTM_CFG).fit(fit)
    seqs = lstm.sequences(held, 20)
    exp, seq = export_lstm_step(lstm, seqs), export_lstm_seq(lstm, seqs)
    _save(root, "lstm", {"step.onnx": exp.onnx, "seq.onnx": seq.onnx}, "lstm_1h_v1", FEATS, exp, fit,
          lstm_extra(lstm), asdict(LSTM_CFG))

    gnn = GnnClassifier(FEATS, GNN_CFG, GRAPH).fit(fit)
    gs = gnn.graphs(held, "label")
    exp = export_gnn(gnn, gs.x, gs.adj)
    _save(root, "gnn", {"model.onnx": exp.onnx}, "gnn_1h_v1", FEATS, exp, fit,
          {"symbols": list(gnn.symbols), "graph": asdict(GRAPH)}, asdict(GNN_CFG))

    lgbm = LightGBMModel(LGB_CFG).fit_final(fit, 30, FEATS)
    exp = export_lightgbm(lgbm, held[FEATS].to_numpy())
    _save(root, "lightgbm", {"model.onnx": exp.onnx}, "lightgbm_1h_v1", FEATS, exp, fit, {}, LGB_CFG.to_dict())
    return root, held, {"lstm": lstm.predict_proba(held), "gnn": gnn.predict_proba(held),
                        "lightgbm": lgbm.predict_proba(held[FEATS])}


def _bars(held: pd.DataFrame, feed: list[str]):
    wide = held.assign(x_extra=123.0)
    for _t, bar in wide.groupby("event_timestamp", sort=True):
        yield bar.index.to_numpy(), {s: r for s, r in zip(bar.symbol, bar[feed].to_numpy(), strict=True)}


def test_lstm_and_gnn_from_the_registry_equal_the_native_models(registered) -> None:
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


def test_an_lstm_of_the_windowed_design_is_refused_at_load(registered, tmp_path) -> None:
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


def test_ensemble_scorer_with_a_wider_feed(registered, tmp_path) -> None:
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


def test_inference_graph_equals_training_graph() -> None:
    r = np.random.default_rng(0).normal(size=(7, 30, 5))
    r[0, :, 2] = 0.0
    r[1, 3, 1] = np.nan
    np.testing.assert_array_equal(inference_graph.correlation_adjacency(r, 0.2),
                                  training_graph.correlation_adjacency(r, 0.2))


def test_no_training_library_when_loading_runners() -> None:
    code = ("import sys, inference.scorer, inference.runners; "
            "bad = [m for m in ('lightgbm', 'torch', 'sklearn', 'onnxmltools', 'skl2onnx', 'training') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
