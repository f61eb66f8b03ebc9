"""A model registry of small native models (LightGBM, LSTM, GNN) exported to ONNX, for the scoring tests."""

from __future__ import annotations

import shutil
from dataclasses import asdict
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from tests.kit.lstm_data import FEATS, synth
from training.export.ensemble_onnx import export_ensemble
from training.export.lightgbm_onnx import export_lightgbm
from training.export.torch_onnx import export_gnn, export_lstm_seq, export_lstm_step
from training.models.ensemble import Ensemble, EnsembleConfig
from training.models.gnn import GnnClassifier, GnnConfig
from training.models.graph import GraphConfig
from training.models.lightgbm_model import LightGBMConfig, LightGBMModel
from training.models.lstm import LstmClassifier, LstmConfig
from training.registry import Manifest, Parity, frame_hash, save_model

MEMBERS = ("lightgbm", "lstm", "gnn")
SERVICES = {"lightgbm_1h_v1": FEATS, "lstm_1h_v1": FEATS, "gnn_1h_v1": FEATS}
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


_BUILT: dict[str, tuple] = {}  # the session's one registry: the modules that import the fixture share it


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """``(root, held, native)``: a registry of the three members, built once a session (tests only read it).

    A test that changes a registry copies it first (``reg``, :func:`champion_registry`).
    """
    if "registry" not in _BUILT:
        _BUILT["registry"] = _build(tmp_path_factory.mktemp("registry"))
    return _BUILT["registry"]


def _build(root):
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


def add_ensemble(reg, held, native, weights=(0.5, 0.25, 0.25), set_latest: bool = True) -> Manifest:
    """Register an ensemble (fixed ``weights``) over the latest members of ``reg``, as the scoring tests build it."""
    ens = Ensemble(EnsembleConfig(MEMBERS, weights, "fixed", threshold=0.05))
    exp = export_ensemble(ens, np.stack([native[m] for m in MEMBERS], axis=1))
    versions = {m: (reg / m / "latest").read_text().strip() for m in MEMBERS}
    return save_model(reg, "ensemble", files={"ensemble.onnx": exp.onnx}, feature_service="ensemble_1h_v1",
                      features=MEMBERS, train_start=held.event_timestamp.min(),
                      train_end=held.event_timestamp.max(), data_hash="-", seeds={}, config=ens.config.to_dict(),
                      metrics={"folds": [], "mean": {}}, set_latest=set_latest,
                      parity=Parity(exp.max_abs_diff, exp.tolerance, exp.checked_rows),
                      extra={"members": versions, "ensemble": ens.config.to_dict()})


@pytest.fixture(name="reg")
def champion_registry(registered, tmp_path):  # noqa: F811
    """Fixture ``reg``: a copy of the module's members with an ensemble over them: ``(root, held, native)``."""
    root, held, native = registered
    out = tmp_path / "reg"
    shutil.copytree(root, out)
    add_ensemble(out, held, native)
    return out, held, native
