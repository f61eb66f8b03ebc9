"""ONNX export parity (LSTM step and sequence graphs, GAT) on held-out rows, rejection, and the runners."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from inference.gnn_stream import GnnRunner
from inference.lstm_stream import LstmStreamRunner
from tests.kit.lstm_data import gappy, synth  # one synthetic market for the torch tests
from training.export.torch_onnx import (
    ExportRejected,
    export_gnn,
    export_lstm_seq,
    export_lstm_step,
)
from training.models.gnn import GnnClassifier, GnnConfig
from training.models.graph import GraphConfig
from training.models.lstm import LstmClassifier, LstmConfig

FEATS = ["ret_1", "f1", "f2"]
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
BURN_IN = 8
HOUR = pd.Timedelta("1h")


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return synth(160, 0)


@pytest.fixture(scope="module")
def held_out() -> pd.DataFrame:
    return synth(60, 7)  # rows the models never saw


@pytest.fixture(scope="module")
def lstm(train: pd.DataFrame) -> LstmClassifier:
    cfg = LstmConfig(bptt=8, burn_in=BURN_IN, segment=48, hidden=8, max_epochs=2, batch_size=8)
    return LstmClassifier(FEATS, cfg).fit(train)


@pytest.fixture(scope="module")
def gnn(train: pd.DataFrame) -> GnnClassifier:
    return GnnClassifier(FEATS, GnnConfig(hidden=8, heads=2, max_epochs=2),
                         GraphConfig(window=20)).fit(train)


def test_lstm_seq_parity_with_a_carried_state(lstm: LstmClassifier, held_out: pd.DataFrame) -> None:
    seqs = lstm.sequences(held_out, 20, HOUR)
    exp = export_lstm_seq(lstm, seqs)
    assert seqs.shape == (len(SYMBOLS) * 3, 20, len(FEATS)) and exp.checked_rows == seqs.shape[0] * 20
    assert exp.max_abs_diff <= 1e-5 and exp.inputs == ("x", "h", "c") and exp.outputs == ("prob", "h_out", "c_out")


def test_lstm_step_parity_along_sequences(lstm: LstmClassifier, held_out: pd.DataFrame) -> None:
    exp = export_lstm_step(lstm, lstm.sequences(held_out, 20, HOUR))
    assert exp.max_abs_diff <= 1e-5 and exp.outputs == ("prob", "h_out", "c_out")


def test_gnn_parity(gnn: GnnClassifier, held_out: pd.DataFrame) -> None:
    gs = gnn.graphs(held_out)
    exp = export_gnn(gnn, gs.x, gs.adj)
    assert exp.checked_rows == len(gs.times) and exp.max_abs_diff <= 1e-5


def test_export_is_rejected_beyond_tolerance(lstm: LstmClassifier, held_out: pd.DataFrame) -> None:
    for export in (export_lstm_seq, export_lstm_step):
        with pytest.raises(ExportRejected, match="max \\|diff\\|"):
            export(lstm, lstm.sequences(held_out, 10, HOUR), tolerance=-1.0)


def test_onnx_stream_runner_equals_predict_proba_and_history_equals_stepping(
        lstm: LstmClassifier, held_out: pd.DataFrame) -> None:
    seqs = lstm.sequences(held_out, 10, HOUR)
    step, seq = export_lstm_step(lstm, seqs), export_lstm_seq(lstm, seqs)
    held = gappy(synth(160, 7))  # held-out rows with missing bars
    expected = lstm.predict_proba(held, bar=HOUR)
    bars = [(list(g.symbol), g[FEATS].to_numpy(np.float32), int(t.value), g.index)
            for t, g in held.groupby("event_timestamp", sort=True)]
    runner = LstmStreamRunner.from_onnx(step.onnx, BURN_IN, HOUR.value, seq.onnx)
    got = np.full(len(held), np.nan)
    for syms, x, t, idx in bars:
        got[idx] = runner.step(syms, x, np.full(len(syms), t))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert np.isnan(expected).sum() == (len(SYMBOLS) + 2) * BURN_IN
    assert np.nanmax(np.abs(got - expected)) <= 1e-5
    hist = LstmStreamRunner.from_onnx(step.onnx, BURN_IN, HOUR.value, seq.onnx)
    by_seq = np.full(len(held), np.nan)
    for a, b in ((0, 50), (50, len(bars))):
        part = bars[a:b]
        for (_, _, _, idx), p in zip(part, hist.history([q[0] for q in part], [q[1] for q in part],
                                                        [q[2] for q in part]), strict=True):
            by_seq[idx] = p
    np.testing.assert_array_equal(np.isnan(by_seq), np.isnan(got))
    assert np.nanmax(np.abs(by_seq - got)) <= 1e-6


def test_onnx_gnn_runner_equals_native_model(gnn: GnnClassifier, held_out: pd.DataFrame) -> None:
    gs = gnn.graphs(held_out)
    runner = GnnRunner(export_gnn(gnn, gs.x, gs.adj).onnx, gnn.symbols, gnn.graph.window,
                       gnn.graph.threshold)
    expected = gnn.predict_proba(held_out)
    got = np.full(len(held_out), np.nan)
    for _, g in held_out.groupby("event_timestamp", sort=True):
        g = g.set_index("symbol").reindex(list(gnn.symbols))
        probs = runner.score(g[FEATS].to_numpy(np.float32), g["ret_1"].to_numpy())
        got[held_out.index[held_out.event_timestamp == g.event_timestamp.iloc[0]]] = probs
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert np.nanmax(np.abs(got - expected)) <= 1e-5
