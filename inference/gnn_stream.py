"""Streaming graph attention network scoring: rolling returns -> adjacency -> GAT (onnxruntime + numpy).

The runner keeps the last ``window`` one-bar returns of every asset, builds the same
thresholded correlation adjacency as training (``correlation_adjacency``, numpy
only), and scores all assets of a bar in one call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from inference.graph import correlation_adjacency
from inference.scorer import open_session


class GnnRunner:
    """Rolling returns -> correlation adjacency -> GAT probabilities for all assets of a bar."""

    def __init__(self, onnx_bytes: bytes, symbols: Sequence[str], window: int, threshold: float
                 ) -> None:
        self.sess = open_session(onnx_bytes)
        self.symbols, self.window, self.threshold = tuple(symbols), window, threshold
        self._rets = np.full((0, len(self.symbols)), np.nan, np.float64)

    def score(self, x: np.ndarray, returns: np.ndarray) -> np.ndarray:
        """Push one bar and return P(up) ``[N]`` (NaN until ``window`` bars are held).

        Args:
            x: raw node features ``[N, F]`` in ``symbols`` and manifest order (0 for a missing asset).
            returns: this bar's one-bar return per asset ``[N]`` (NaN if missing).
        """
        self._rets = np.vstack([self._rets, np.asarray(returns, np.float64)[None]])[-self.window:]
        if len(self._rets) < self.window:
            return np.full(len(self.symbols), np.nan)
        adj = correlation_adjacency(self._rets, self.threshold)[None]
        feats = np.nan_to_num(np.asarray(x, np.float32))[None]
        return self.sess.run(["prob"], {"x": feats, "adj": adj})[0][0].astype(np.float64)
