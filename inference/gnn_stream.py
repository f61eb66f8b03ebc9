"""Streaming graph attention network scoring: rolling returns -> adjacency -> GAT (onnxruntime + numpy).

The runner keeps the last ``window`` one-bar returns of every asset, builds the same
thresholded correlation adjacency as training (``correlation_adjacency``, numpy
only), and scores all assets of a bar in one call.

Per bar it only writes one row: the returns live in a ring of ``2 * window`` rows
where each bar is written twice (slots ``k`` and ``k + window``), so the last
``window`` bars are always one contiguous slice in time order, the same array
``np.vstack(...)[-window:]`` gave, without copying the window.

A large universe (issue 21): with ``cluster_size`` k > 0 and more than k assets, each bar
scores the assets block-diagonally, on clusters of at most k chosen from the window's
correlations (:func:`inference.graph.correlation_clusters`): the graph attends within
a cluster only, and all clusters go through one batched session run (``[clusters, k, F]``;
the graph's node axis must be dynamic, as ``training.export.torch_onnx.export_gnn``
writes it).  The dense ``N x N`` attention costs O(N^2) per bar; the clusters O(N k).
Up to k assets the graph runs dense over all of them, as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from inference.graph import correlation_adjacency, correlation_clusters, window_adjacency
from inference.scorer import open_session


class GnnRunner:
    """Rolling returns -> correlation adjacency -> GAT probabilities for all assets of a bar.

    The graph runs on fixed buffers bound to the session once (onnxruntime io binding):
    :attr:`nodes` (``[1, N, F]`` float32) and the adjacency in, the probabilities out.
    """

    def __init__(self, onnx_bytes: bytes, symbols: Sequence[str], window: int, threshold: float,
                 cluster_size: int = 0) -> None:
        self.sess = open_session(onnx_bytes)
        self.symbols, self.window, self.threshold = tuple(symbols), window, threshold
        n = len(self.symbols)
        self.cluster_size = cluster_size if 0 < cluster_size < n else 0  # 0: dense over all assets
        self.clusters: np.ndarray | None = None  # the last bar's clusters (clustered form only)
        self._ring = np.zeros((2 * window, n), np.float64)  # returns with NaN as 0, each bar at k and k + window
        self._next = 0  # ring slot of the next bar
        self._held = 0  # bars held, at most window
        x = next(i for i in self.sess.get_inputs() if i.name == "x")
        if not isinstance(x.shape[2], int):
            raise ValueError(f"the GAT graph's input x {x.shape} has no fixed feature count for its buffers")
        if self.cluster_size and isinstance(x.shape[1], int):
            raise ValueError(f"the GAT graph's input x {x.shape} has a fixed node count: it cannot score clusters of "
                             f"{self.cluster_size} of its {n} assets (scoring.gnn_cluster_size, "
                             "CRYPTOSTREAM_SCORING__GNN_CLUSTER_SIZE): set it to 0 (dense) or retrain the gnn")
        self.nodes = np.zeros((1, n, x.shape[2]), np.float32)
        self._adj = np.zeros((1, n, n), np.float32)
        self._prob = np.zeros((1, n), np.float32)
        self._binding = self.sess.io_binding()  # reads and writes the buffers above in place
        self._binding.bind_cpu_input("x", self.nodes)
        self._binding.bind_cpu_input("adj", self._adj)
        self._binding.bind_output("prob", "cpu", 0, np.float32, [1, n], self._prob.ctypes.data)

    @property
    def returns(self) -> np.ndarray:
        """The held returns ``[held, N]`` in time order (a copy; a missing return reads as 0)."""
        end = self._next + self.window
        return self._ring[end - self._held:end].copy()

    @returns.setter
    def returns(self, rows: np.ndarray) -> None:
        """Replace the held returns by ``rows`` ``[T, N]`` in time order (the last ``window`` are kept)."""
        rows = np.asarray(rows, np.float64).reshape(-1, len(self.symbols))[-self.window:]
        t, w, ring = len(rows), self.window, self._ring
        ring[:t] = rows  # what push does row by row from slot 0, in one assignment (the same values)
        if not np.isfinite(ring[:t]).all():
            np.nan_to_num(ring[:t], copy=False)
        ring[w:w + t] = ring[:t]
        self._next, self._held = t % w, t

    def push(self, returns: np.ndarray) -> None:
        """Add one bar's return per asset ``[N]`` (NaN if missing), dropping the oldest beyond ``window``."""
        k, w = self._next, self.window
        row = self._ring[k]
        row[:] = returns
        if not np.isfinite(row).all():
            np.nan_to_num(row, copy=False)  # as correlation_adjacency treats them
        self._ring[k + w] = row
        self._next = (k + 1) % w
        self._held = min(self._held + 1, w)

    def score(self, x: np.ndarray, returns: np.ndarray) -> np.ndarray:
        """Push one bar and return P(up) ``[N]`` (NaN until ``window`` bars are held).

        Args:
            x: raw node features ``[N, F]`` in ``symbols`` and manifest order (0 for a missing asset).
            returns: this bar's one-bar return per asset ``[N]`` (NaN if missing).
        """
        self.nodes[0] = x  # float64 -> float32 rounds as astype does
        return self.step(returns)

    def step(self, returns: np.ndarray) -> np.ndarray:
        """:meth:`score` with this bar's node features already written into :attr:`nodes`."""
        nodes = self.nodes
        if not np.isfinite(nodes).all():
            np.nan_to_num(nodes, copy=False)
        self.push(returns)
        if self._held < self.window:
            return np.full(len(self.symbols), np.nan)
        k = self._next  # the window is ring[k:k + window] after the push
        if self.cluster_size:
            return self._clustered(self._ring[k:k + self.window])
        window_adjacency(self._ring[k:k + self.window], self.threshold, out=self._adj[0])
        self.sess.run_with_iobinding(self._binding)
        return self._prob[0].astype(np.float64)

    def _clustered(self, window: np.ndarray) -> np.ndarray:
        """Score the nodes on the window's clusters in one batched run (padding: a zero node, no edges)."""
        n = len(self.symbols)
        members = self.clusters = correlation_clusters(window, self.cluster_size)  # [K, k]; n = no asset
        rets = np.zeros((self.window, n + 1))
        rets[:, :n] = window
        # a padding node's returns are constant: no edge to any asset, so the softmax of an asset ignores it
        adj = correlation_adjacency(rets[:, members].transpose(1, 0, 2), self.threshold)
        nodes = np.zeros((n + 1, self.nodes.shape[2]), np.float32)
        nodes[:n] = self.nodes[0]
        prob = self.sess.run(["prob"], {"x": nodes[members], "adj": adj})[0]
        out = np.empty(n + 1)
        out[members] = prob
        return out[:n]
