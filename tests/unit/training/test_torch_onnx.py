"""ONNX export parity (windowed LSTM, LSTM step, GAT) on held-out rows, rejection, and the runners."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from inference.gnn_stream import GnnRunner
from inference.lstm_stream import LstmStreamRunner
from tests.unit.training.test_lstm import synth  # one synthetic market for the torch tests
from training.export.torch_onnx import (
    ExportRejected,
    export_gnn,
    export_lstm_step,
    export_lstm_window,
)
from training.models.gnn import GnnClassifier, GnnConfig
from training.models.graph import GraphConfig
from training.models.lstm import LstmClassifier, LstmConfig, gather, window_index

FEATS = ["ret_1", "f1", "f2"]
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
WINDOW = 8




@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return synth(160, 0)


@pytest.fixture(scope="module")
def held_out() -> pd.DataFrame:
    return synth(60, 7)  # rows the models never saw


@pytest.fixture(scope="module")
def lstm(train: pd.DataFrame) -> LstmClassifier:
    cfg = LstmConfig(window=WINDOW, hidden=8, max_epochs=2, batch_size=64)
    return LstmClassifier(FEATS, cfg).fit(train)


@pytest.fixture(scope="module")
def gnn(train: pd.DataFrame) -> GnnClassifier:
    return GnnClassifier(FEATS, GnnConfig(hidden=8, heads=2, max_epochs=2),
                         GraphConfig(window=20)).fit(train)


def _windows(frame: pd.DataFrame) -> np.ndarray:
    order, ends = window_index(frame, WINDOW)
    return gather(frame[FEATS].to_numpy(np.float32)[order], ends, WINDOW)


def test_windowed_lstm_parity(lstm: LstmClassifier, held_out: pd.DataFrame) -> None:
    exp = export_lstm_window(lstm, _windows(held_out))
    assert exp.checked_rows == len(SYMBOLS) * (60 - WINDOW + 1)
    assert exp.max_abs_diff <= 1e-5 and exp.inputs == ("x",) and exp.outputs == ("prob",)


def test_lstm_step_parity_along_sequences(lstm: LstmClassifier, held_out: pd.DataFrame) -> None:
    exp = export_lstm_step(lstm, _windows(held_out)[:40])
    assert exp.max_abs_diff <= 1e-5 and exp.outputs == ("prob", "h_out", "c_out")


def test_gnn_parity(gnn: GnnClassifier, held_out: pd.DataFrame) -> None:
    gs = gnn.graphs(held_out)
    exp = export_gnn(gnn, gs.x, gs.adj)
    assert exp.checked_rows == len(gs.times) and exp.max_abs_diff <= 1e-5


def test_export_is_rejected_beyond_tolerance(lstm: LstmClassifier, held_out: pd.DataFrame) -> None:
    with pytest.raises(ExportRejected, match="max \\|diff\\|"):
        export_lstm_window(lstm, _windows(held_out), tolerance=-1.0)


def test_onnx_stream_runner_equals_windowed_model(lstm: LstmClassifier,
                                                  held_out: pd.DataFrame) -> None:
    step = export_lstm_step(lstm, _windows(held_out)[:8])
    runner = LstmStreamRunner.from_onnx(step.onnx, WINDOW, bar_ns=pd.Timedelta("1h").value)
    expected = lstm.predict_proba(held_out)
    got = np.full(len(held_out), np.nan)
    for _, g in held_out.groupby("event_timestamp", sort=True):
        got[g.index] = runner.step(list(g.symbol), g[FEATS].to_numpy(np.float32),
                                   pd.DatetimeIndex(g.event_timestamp).asi8)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert np.nanmax(np.abs(got - expected)) <= 1e-5


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
