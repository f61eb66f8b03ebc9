"""Sliding-window correlation adjacency: bit for bit the batched one on the stacked windows."""

from __future__ import annotations

import numpy as np
import pytest

from inference.graph import correlation_adjacency, sliding_adjacency


def stacked(returns: np.ndarray, window: int, threshold: float) -> np.ndarray:
    """``correlation_adjacency`` of every window as the GNN's history run stacked them before (a view per window)."""
    wins = np.lib.stride_tricks.sliding_window_view(returns, window, axis=0)  # [T - w + 1, N, w]
    return correlation_adjacency(np.swapaxes(wins[np.arange(len(wins))], -1, -2), threshold)


@pytest.mark.parametrize(("rows", "window", "n"), [(285, 30, 5), (30, 30, 5), (100, 7, 3), (64, 12, 9)])
def test_sliding_adjacency_equals_the_stacked_windows_bit_for_bit(rows: int, window: int, n: int) -> None:
    rng = np.random.default_rng(rows + n)
    returns = rng.normal(0.0, 0.01, (rows, n))
    returns[3:window + 9, 1] = np.nan  # missing: 0 return
    returns[rows // 2:, n - 1] = 0.002  # a constant stretch: no edges
    returns[rows // 3:, 0] = returns[rows // 3:, 2] * 1.5  # perfectly correlated: |corr| clipped to 1
    got = sliding_adjacency(returns, window, 0.3)
    want = stacked(returns, window, 0.3)
    assert got.shape == want.shape == (rows - window + 1, n, n)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert got.tobytes() == want.tobytes()
