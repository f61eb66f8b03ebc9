"""Correlation graph builder and dense GAT: graph properties, PyG agreement, determinism, save/load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from training.models.gnn import DenseGATLayer, GnnClassifier, GnnConfig
from training.models.graph import GraphConfig, build_graphs, correlation_adjacency

FEATS = ["ret_1", "f1", "f2"]
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT")
GRAPH = GraphConfig(window=20, threshold=0.3)
CFG = GnnConfig(hidden=8, heads=2, max_epochs=5, patience=3, batch_size=32)


def synth(n: int = 200, seed: int = 0) -> pd.DataFrame:
    """Four assets, three correlated and one independent; labels from own next return and f1."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC")
    common = rng.normal(size=n)
    parts = []
    for k, s in enumerate(SYMBOLS):
        r = (0.7 * common if k < 3 else 0.0) + 0.7 * rng.normal(size=n)
        d = pd.DataFrame({"ret_1": r, "f1": rng.normal(size=n), "f2": rng.normal(size=n)})
        d["label"] = (np.r_[r[1:], 0] + d["f1"] > 0).astype(np.int8)
        d["symbol"], d["event_timestamp"] = s, ts
        parts.append(d)
    return pd.concat(parts).sort_values(["event_timestamp", "symbol"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synth()


@pytest.fixture(scope="module")
def model(frame: pd.DataFrame) -> GnnClassifier:
    return GnnClassifier(FEATS, CFG, GRAPH).fit(frame)


def test_graph_is_symmetric_with_self_loops_and_threshold(frame: pd.DataFrame) -> None:
    gs = build_graphs(frame, FEATS, GRAPH)
    assert gs.adj.shape == (len(frame.event_timestamp.unique()) - GRAPH.window + 1, 4, 4)
    assert gs.symbols == tuple(sorted(SYMBOLS)) and gs.x.shape[1:] == (4, len(FEATS))
    np.testing.assert_array_equal(gs.adj, np.swapaxes(gs.adj, 1, 2))
    np.testing.assert_array_equal(np.diagonal(gs.adj, axis1=1, axis2=2), 1.0)
    off = gs.adj[:, ~np.eye(4, dtype=bool)]
    assert ((off == 0) | (np.abs(off) >= GRAPH.threshold)).all() and (off != 0).any()
    assert (np.abs(off) <= 1).all()


def test_graph_edges_are_pandas_correlations_of_the_trailing_window(frame: pd.DataFrame) -> None:
    gs = build_graphs(frame, FEATS, GRAPH)
    wide = frame.pivot(index="event_timestamp", columns="symbol", values="ret_1")
    t = 57  # graph at decision time gs.times[t] uses the window of bars ending there
    end = wide.index.get_loc(gs.times[t])
    corr = wide.iloc[end - GRAPH.window + 1:end + 1].corr().to_numpy()
    expected = np.where(np.abs(corr) >= GRAPH.threshold, corr, 0.0)
    np.testing.assert_allclose(gs.adj[t], expected, atol=1e-6)
    np.testing.assert_array_equal(gs.y[t], frame[frame.event_timestamp == gs.times[t]].label)


def test_constant_series_has_only_a_self_loop() -> None:
    r = np.random.default_rng(1).normal(size=(30, 3))
    r[:, 2] = 0.5
    adj = correlation_adjacency(r, 0.0)
    np.testing.assert_array_equal(adj[2], [0.0, 0.0, 1.0])


def test_dense_layer_equals_pyg_gatconv() -> None:
    gat_conv = pytest.importorskip("torch_geometric.nn").GATConv
    torch.manual_seed(0)
    n, f, d, heads = 5, 3, 4, 2
    dense = DenseGATLayer(f, d, heads, concat=True, dropout=0.0, residual=False).eval()
    conv = gat_conv(f, d, heads=heads, concat=True, add_self_loops=False).eval()
    with torch.no_grad():
        conv.lin.weight.copy_(dense.lin.weight)
        conv.att_src.copy_(dense.att_src[None])
        conv.att_dst.copy_(dense.att_dst[None])
        conv.bias.copy_(dense.bias)
        x = torch.randn(n, f)
        adj = torch.from_numpy(correlation_adjacency(np.random.default_rng(2).normal(size=(20, n)), 0.2))
        dst, src = adj.nonzero(as_tuple=True)
        ours = dense(x[None], adj[None])[0]
        theirs = conv(x, torch.stack([src, dst]))
    assert float((ours - theirs).abs().max()) < 1e-5


def test_same_seed_gives_identical_predictions(frame: pd.DataFrame, model: GnnClassifier) -> None:
    again = GnnClassifier(FEATS, CFG, GRAPH).fit(frame)
    p = model.predict_proba(frame)
    np.testing.assert_array_equal(p, again.predict_proba(frame))
    assert np.isnan(p).sum() == len(SYMBOLS) * (GRAPH.window - 1)
    best = min(h["val_loss"] for h in model.history)
    assert model.history[model.best_epoch]["val_loss"] == best


def test_save_load_round_trip(tmp_path, frame: pd.DataFrame, model: GnnClassifier) -> None:
    model.save(tmp_path / "gnn.pt")
    loaded = GnnClassifier.load(tmp_path / "gnn.pt")
    assert loaded.symbols == model.symbols and loaded.graph == GRAPH
    np.testing.assert_array_equal(model.predict_proba(frame), loaded.predict_proba(frame))


def test_missing_asset_row_gets_no_prediction_and_no_loss(frame: pd.DataFrame,
                                                          model: GnnClassifier) -> None:
    gone = frame.drop(index=frame.index[frame.symbol == "XRP/USDT"][150])
    p = model.predict_proba(gone)
    assert len(p) == len(gone)
    gs = model.graphs(gone, label="label")
    assert (~gs.present).sum() == 1


def test_predicting_in_batches_gives_the_one_pass_probabilities(frame: pd.DataFrame, model: GnnClassifier) -> None:
    gs = model.graphs(frame)
    whole = model.predict_graphs(gs.x, gs.adj, batch=len(gs.x))
    np.testing.assert_allclose(model.predict_graphs(gs.x, gs.adj, batch=7), whole, rtol=0, atol=1e-6)


_PEAK = """
import resource, numpy as np
from training.models.gnn import GnnClassifier, GnnConfig, GnnNet
m = GnnClassifier([f"f{i}" for i in range(25)], GnnConfig(hidden=32))
m.net = GnnNet(25, 32, m.config.heads, 0.0).eval()
x, adj = np.random.rand(37_500, 5, 25).astype(np.float32), np.ones((37_500, 5, 5), np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
m.predict_graphs(x, adj)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def test_predicting_a_history_of_graphs_keeps_the_activations_small() -> None:
    """Five assets' 37k hourly graphs: one forward pass over all of them added ~430 MB to training.train gnn's peak."""
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run([sys.executable, "-c", _PEAK], capture_output=True, text=True, check=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[3])
    assert float(out.stdout.strip()) < 150.0  # MB above the inputs
