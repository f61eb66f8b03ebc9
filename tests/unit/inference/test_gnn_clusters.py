"""The GAT on correlated clusters of a large universe (issue 21): dense below the setting, per cluster above it.

Above ``cluster_size`` assets :class:`inference.gnn_stream.GnnRunner` scores block-diagonally:
each cluster's scores must equal the same network run dense on that cluster alone (a fresh
runner over just those assets, fed the same bars), and the clusters must follow the window's
correlations.  At or below it the scores are the dense runner's, bit for bit.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

from flows.settings import ScoringSettings
from inference.gnn_stream import GnnRunner
from inference.graph import correlation_clusters
from training.export.torch_onnx import export_gnn
from training.models.gnn import GnnNet

FEATS, WINDOW, THRESHOLD = 6, 30, 0.3


@pytest.fixture(scope="module")
def onnx() -> bytes:
    """A small GAT with seeded random weights, exported with its dynamic node axis."""
    torch.manual_seed(0)
    net = GnnNet(FEATS, 8, 2, 0.0).eval()
    rng = np.random.default_rng(1)
    return export_gnn(net, rng.normal(size=(2, 6, FEATS)), np.ones((2, 6, 6)), 1e-4).onnx


def _market(n: int, groups: int, bars: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return returns ``[bars, n]`` driven by ``groups`` factors (asset i in group i % groups) and features."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(0, 0.01, (bars, groups))
    rets = factors[:, np.arange(n) % groups] + rng.normal(0, 0.003, (bars, n))
    return rets, rng.normal(size=(bars, n, FEATS))


def _scores(runner: GnnRunner, rets: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.stack([runner.score(x[t], rets[t]) for t in range(len(rets))])


def test_clusters_follow_the_correlations_and_are_deterministic() -> None:
    rets, _ = _market(45, 3, WINDOW, seed=4)
    clusters = correlation_clusters(rets, 15)
    assert [c.tolist() for c in clusters] == [list(range(g, 45, 3)) for g in range(3)]  # the factor groups
    mixed = correlation_clusters(rets, 20)
    placed = mixed[mixed < 45]
    assert sorted(placed.tolist()) == list(range(45)) and mixed.shape == (3, 20)  # a partition, padded with 45
    assert np.array_equal(mixed, correlation_clusters(rets.copy(), 20))


def test_at_or_below_the_setting_the_scores_are_the_dense_ones_bit_for_bit(onnx) -> None:
    assert ScoringSettings().gnn_cluster_size == 20
    rets, x = _market(20, 4, WINDOW + 10, seed=5)
    dense = _scores(GnnRunner(onnx, [f"S{i}" for i in range(20)], WINDOW, THRESHOLD, 0), rets, x)
    same = _scores(GnnRunner(onnx, [f"S{i}" for i in range(20)], WINDOW, THRESHOLD, 20), rets, x)
    assert np.array_equal(dense, same, equal_nan=True) and np.isfinite(dense[-10:]).all()


def test_above_the_setting_each_cluster_scores_as_the_dense_network_on_it_alone(onnx) -> None:
    n, k = 47, 10
    rets, x = _market(n, 5, WINDOW + 8, seed=6)
    symbols = [f"S{i}" for i in range(n)]
    runner = GnnRunner(onnx, symbols, WINDOW, THRESHOLD, k)
    for t in range(WINDOW - 1):
        runner.score(x[t], rets[t])
    for t in range(WINDOW - 1, len(rets)):
        got = runner.score(x[t], rets[t])
        clusters = runner.clusters
        assert clusters is not None and clusters.shape == (5, k)
        assert np.array_equal(clusters, correlation_clusters(rets[t - WINDOW + 1:t + 1], k))
        for c in clusters:
            c = c[c < n]
            alone = GnnRunner(onnx, [symbols[i] for i in c], WINDOW, THRESHOLD, 0)
            want = _scores(alone, rets[t - WINDOW + 1:t + 1][:, c], x[t - WINDOW + 1:t + 1][:, c])[-1]
            np.testing.assert_allclose(got[c], want, rtol=0, atol=1e-6)
    dense = GnnRunner(onnx, symbols, WINDOW, THRESHOLD, 0)
    assert not np.allclose(_scores(dense, rets, x)[-1], got, atol=1e-6)  # the clusters do change the graph


def test_a_graph_with_a_fixed_node_count_cannot_score_clusters() -> None:
    torch.manual_seed(0)
    net = GnnNet(FEATS, 8, 2, 0.0).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter warns that it is deprecated
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 30, FEATS), torch.ones(1, 30, 30)), buf, dynamo=False,
                          input_names=["x", "adj"], output_names=["prob"], dynamic_axes={"x": {0: "b"}, "adj": {0: "b"}})
    with pytest.raises(ValueError, match="GNN_CLUSTER_SIZE"):
        GnnRunner(buf.getvalue(), [f"S{i}" for i in range(30)], WINDOW, THRESHOLD, 20)
