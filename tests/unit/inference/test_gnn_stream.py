"""The streaming GAT's shortcuts change no result: ring window, cached row maps, window adjacency, bound buffers.

Each check compares bit for bit with the plain computation the runner replaced: every
bar's returns stacked with ``np.vstack`` and cut to the window, training's
``correlation_adjacency``, node features built row by row from a dict of the model's
symbols, and a fresh onnxruntime session run with new arrays.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from inference import graph as inference_graph
from inference.manifest import resolve_version_dir, verify
from inference.runners import GnnGraphRunner
from inference.scorer import open_session
from tests.kit.lstm_data import FEATS, SYMBOLS
from tests.kit.registries import synth_split
from training.export.torch_onnx import export_gnn
from training.models import graph as training_graph
from training.models.gnn import GnnClassifier, GnnConfig
from training.models.graph import GraphConfig
from training.registry import Parity, frame_hash, save_model

GRAPH = GraphConfig(window=7, threshold=0.3)
FEED = ["f2", "x_extra", "ret_1", "f1"]  # wider than the model's features and in another order


@pytest.fixture(scope="module")
def gat(tmp_path_factory):
    """A GAT trained briefly on three synthetic assets, registered; returns (version dir, later bars)."""
    root = tmp_path_factory.mktemp("registry")
    fit, held = synth_split(200, 150)
    model = GnnClassifier(FEATS, GnnConfig(hidden=8, heads=2, max_epochs=2, patience=1, batch_size=32, seed=1),
                          GRAPH).fit(fit)
    gs = model.graphs(held, "label")
    exp = export_gnn(model, gs.x, gs.adj)
    save_model(root, "gnn", files={"model.onnx": exp.onnx}, feature_service="gnn_1h_v1", features=FEATS,
               train_start=fit.event_timestamp.min(), train_end=fit.event_timestamp.max(),
               data_hash=frame_hash(fit, FEATS), seeds={"seed": 1}, config=asdict(model.config),
               metrics={"folds": [], "mean": {}}, parity=Parity(exp.max_abs_diff, exp.tolerance, exp.checked_rows),
               extra={"symbols": list(model.symbols), "graph": asdict(GRAPH)},
               now=lambda: datetime(2024, 1, 1, tzinfo=UTC))
    return resolve_version_dir(root, "gnn"), held.assign(x_extra=123.0)


class PlainGat:
    """The GAT step written out plainly, as the runner did before its shortcuts."""

    def __init__(self, version_dir, feed: list[str]) -> None:
        m = verify(version_dir)
        self.symbols = tuple(m.extra["symbols"])
        self.cols = [feed.index(f) for f in m.features]
        self.ret = m.features.index(m.extra["graph"]["return_col"])
        self.window, self.threshold = GRAPH.window, GRAPH.threshold
        self.sess = open_session((version_dir / "model.onnx").read_bytes())
        self.rets = np.full((0, len(self.symbols)), np.nan)

    def score(self, symbols: tuple[str, ...], x: np.ndarray) -> np.ndarray:
        x = x[:, self.cols]
        index = {s: i for i, s in enumerate(self.symbols)}
        nodes = np.zeros((len(self.symbols), x.shape[1]))
        rets = np.full(len(self.symbols), np.nan)
        for row, s in enumerate(symbols):
            if s in index:
                nodes[index[s]], rets[index[s]] = x[row], x[row, self.ret]
        self.rets = np.vstack([self.rets, rets[None]])[-self.window:]
        if len(self.rets) < self.window:
            return np.full(len(symbols), np.nan)
        adj = training_graph.correlation_adjacency(self.rets, self.threshold)[None]
        feats = np.nan_to_num(nodes.astype(np.float32))[None]
        p = self.sess.run(["prob"], {"x": feats, "adj": adj})[0][0].astype(np.float64)
        return np.array([p[index[s]] if s in index else np.nan for s in symbols])


def _bars(held: pd.DataFrame) -> list[tuple[tuple[str, ...], np.ndarray]]:
    """Bars in time order, with the shapes a live feed can take: all, reordered, one missing, an unknown extra, NaN."""
    out = []
    for i, (_t, bar) in enumerate(held.groupby("event_timestamp", sort=True)):
        bar = bar.set_index("symbol").loc[list(SYMBOLS)]
        kind = i % 6
        if kind == 1:
            bar = bar.iloc[::-1]  # same symbols, another order
        elif kind == 2:
            bar = bar.drop(index=SYMBOLS[1])  # a model asset missing from the bar
        elif kind == 3:
            extra = bar.iloc[[0]].rename(index={SYMBOLS[0]: "DOGE/USDT"})
            bar = pd.concat([extra, bar.iloc[[2, 0]]])  # an unknown symbol first, one asset missing
        elif kind == 4:
            bar = bar.copy()
            bar.loc[SYMBOLS[2], "ret_1"] = np.nan  # a NaN return counts as 0 in the window
            bar.loc[SYMBOLS[0], "f1"] = np.inf  # a non-finite feature becomes float32 max
        out.append((tuple(bar.index), bar[FEED].to_numpy(np.float64)))
    return out


def test_ring_window_and_row_maps_equal_the_plain_step(gat) -> None:
    version_dir, held = gat
    bars = _bars(held)
    assert len(bars) > 4 * GRAPH.window  # the ring wraps several times
    runner = GnnGraphRunner(verify(version_dir), version_dir, FEED)
    plain = PlainGat(version_dir, FEED)
    got, want = [], []
    for symbols, x in bars:
        got.append(runner.score(symbols, x))
        want.append(plain.score(symbols, x))
        np.testing.assert_array_equal(got[-1], want[-1])
        np.testing.assert_array_equal(runner.runner.returns, np.nan_to_num(plain.rets))
    for g, w in zip(got, want, strict=True):  # still equal after later bars: no output is a reused buffer
        np.testing.assert_array_equal(g, w)
    assert sum(int(np.isfinite(g).sum()) for g in got) > 2 * len(bars)
    assert len(runner._maps) == 4  # one row map per distinct symbol tuple, reused after


def test_returns_round_trip_continues_like_an_uninterrupted_runner(gat) -> None:
    version_dir, held = gat
    bars = _bars(held)
    whole = GnnGraphRunner(verify(version_dir), version_dir, FEED)
    want = [whole.score(s, x) for s, x in bars]
    for cut in (3, GRAPH.window + 2, 3 * GRAPH.window - 1):  # before the window fills, after wrapping
        first = GnnGraphRunner(verify(version_dir), version_dir, FEED)
        for s, x in bars[:cut]:
            first.score(s, x)
        resumed = GnnGraphRunner(verify(version_dir), version_dir, FEED)
        resumed.runner.returns = first.runner.returns.tolist()  # as a snapshot stores it
        for (s, x), w in zip(bars[cut:], want[cut:], strict=True):
            np.testing.assert_array_equal(resumed.score(s, x), w)
    long = GnnGraphRunner(verify(version_dir), version_dir, FEED)
    history = np.random.default_rng(0).normal(size=(3 * GRAPH.window, len(SYMBOLS)))
    long.runner.returns = history
    np.testing.assert_array_equal(long.runner.returns, history[-GRAPH.window:])
    long.runner.returns = history[:2]  # a shorter history replaces a full window
    np.testing.assert_array_equal(long.runner.returns, history[:2])


def test_window_adjacency_equals_the_training_adjacency_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    out = np.empty((6, 6), np.float32)
    for k in range(300):
        r = rng.normal(size=(20, 6)) * rng.choice([1e-12, 1e-4, 1.0, 1e3], size=6)
        r[:, k % 6] = 0.0 if k % 3 == 0 else r[:, k % 6]  # a constant series has no edges
        r[:, 4] = -2.0 * r[:, 1] if k % 4 == 0 else r[:, 4]  # exact +-1 correlations hit the clip
        r[rng.integers(0, 20, 5), rng.integers(0, 6, 5)] = np.nan
        want = training_graph.correlation_adjacency(r, 0.35)
        np.testing.assert_array_equal(inference_graph.window_adjacency(np.nan_to_num(r), 0.35), want)
        np.testing.assert_array_equal(inference_graph.window_adjacency(np.nan_to_num(r), 0.35, out=out), want)
