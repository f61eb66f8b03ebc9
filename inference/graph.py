"""Correlation adjacency of asset returns, numpy only, for the scorer.

The one definition: ``training.models.graph`` (which the GAT is trained on) imports
it from here, so the scoring path imports no training module;
``tests/unit/inference/test_runners.py`` checks it against ``np.corrcoef``.
:func:`window_adjacency` is the streaming GAT's per-bar form of it (one window, fewer
numpy calls), equal bit for bit too (``tests/unit/inference/test_gnn_stream.py``).
"""

from __future__ import annotations

import numpy as np


def correlation_adjacency(returns: np.ndarray, threshold: float) -> np.ndarray:
    """Return thresholded correlation adjacency of return windows.

    Args:
        returns: ``[..., window, N]`` one-bar returns; NaN (missing) counts as 0 return.
        threshold: edges with ``|corr| < threshold`` are dropped.

    Returns:
        ``[..., N, N]`` float32, symmetric, diagonal 1; a constant series has no edges.
    """
    r = np.nan_to_num(np.asarray(returns, dtype=np.float64))
    d = r - r.mean(axis=-2, keepdims=True)
    return _thresholded(np.einsum("...wi,...wj->...ij", d, d), threshold)


def sliding_adjacency(returns: np.ndarray, window: int, threshold: float) -> np.ndarray:
    """Return :func:`correlation_adjacency` of every ``window`` consecutive rows of ``returns``, bit for bit.

    The GNN's history run (``flows.operators.model_bank.gnn_many``) scores a chunk of bar
    times at once, each on the window that ends at it.  ``correlation_adjacency`` of those
    windows stacked (``[B, window, N]``, the assets the contiguous axis) sums each window's
    mean and covariance row after row: its reduce and its einsum iterate the window axis
    outside the assets.  Here the same sums in the same order run with the windows along the
    contiguous axis (``[N, window, B]``), so each numpy call has ``B`` elements in its inner
    loop instead of ``N``: the same doubles, several times fewer cycles for a few assets.
    ``tests/unit/inference/test_graph.py`` checks it against ``correlation_adjacency``.

    Args:
        returns: ``[T, N]`` one-bar returns in time order (``T >= window``); NaN counts as 0.
        window: rows per window.
        threshold: edges with ``|corr| < threshold`` are dropped.

    Returns:
        ``[T - window + 1, N, N]`` float32: the adjacency of rows ``[t, t + window)`` at ``t``.
    """
    r = np.nan_to_num(np.asarray(returns, dtype=np.float64)).T.copy()  # [N, T]
    rows = np.lib.stride_tricks.sliding_window_view(r, r.shape[1] - window + 1, axis=1)  # [N, window, B]: row k
    d = rows - (np.add.reduce(rows, axis=1) / window)[:, None, :]  # of each window; its mean as ndarray.mean
    cov = np.add.reduce(d[:, None] * d[None, :], axis=2)  # [N, N, B]; a reduce over an outer axis adds row by row
    return np.ascontiguousarray(_thresholded(cov.transpose(2, 0, 1), threshold))


def _thresholded(cov: np.ndarray, threshold: float) -> np.ndarray:
    """Return the thresholded float32 correlations ``[..., N, N]`` of covariances ``cov``."""
    sd = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
    denom = sd[..., :, None] * sd[..., None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(denom > 1e-18, cov / np.where(denom > 1e-18, denom, 1.0), 0.0)
    corr = np.clip(corr, -1.0, 1.0)
    adj = np.where(np.abs(corr) >= threshold, corr, 0.0)
    n = adj.shape[-1]
    eye = np.eye(n, dtype=bool)
    adj = np.where(eye, 1.0, adj)
    adj = 0.5 * (adj + np.swapaxes(adj, -1, -2))  # exact symmetry against rounding
    return adj.astype(np.float32)


def window_adjacency(returns: np.ndarray, threshold: float, out: np.ndarray | None = None) -> np.ndarray:
    """Return :func:`correlation_adjacency` of one window, bit for bit, with fewer numpy calls.

    The streaming GAT calls this once per bar on a small ``[window, N]`` array, where
    numpy's per-call overhead, not arithmetic, is the cost: the same operations in the
    same order, without the batch axis, the NaN pass and the ``np.where`` copies.

    Args:
        returns: ``[window, N]`` C-contiguous one-bar returns, NaN already replaced as
            ``np.nan_to_num`` does (missing = 0).
        threshold: edges with ``|corr| < threshold`` are dropped.
        out: optional ``[N, N]`` float32 array to write into.

    Returns:
        ``out`` (or a new array): ``[N, N]`` float32, symmetric, diagonal 1.
    """
    d = returns - np.add.reduce(returns, axis=0) / returns.shape[0]  # what ndarray.mean computes
    cov = np.einsum("wi,wj->ij", d, d)
    sd = np.sqrt(cov.diagonal())
    denom = np.multiply.outer(sd, sd)
    corr = np.divide(cov, denom, out=np.zeros_like(cov), where=denom > 1e-18)
    np.minimum(np.maximum(corr, -1.0, out=corr), 1.0, out=corr)
    corr[np.abs(corr) < threshold] = 0.0
    corr.ravel()[::len(corr) + 1] = 1.0  # the diagonal (ravel of a contiguous array is a view)
    adj = corr + corr.T
    adj *= 0.5
    if out is None:
        return adj.astype(np.float32)
    out[...] = adj
    return out


def correlation_clusters(returns: np.ndarray, size: int) -> np.ndarray:
    """Return clusters of at most ``size`` assets chosen from one window's correlations, deterministically.

    Greedy: the lowest-numbered asset not yet placed seeds a cluster and takes the ``size - 1``
    unplaced assets most correlated with it (largest ``|corr|``, ties to the lower number),
    until every asset is placed.  Only the seed's correlations are computed (one product of
    the standardised window per cluster, no ``N x N`` matrix, no BLAS): ``N / size`` element-wise
    passes over the window and as many partial sorts.

    Args:
        returns: ``[window, N]`` one-bar returns, NaN already replaced by 0.
        size: most assets in one cluster (at least 1).

    Returns:
        ``[ceil(N / size), size]`` int array of asset numbers, each cluster in ascending order;
        the last cluster's unused places hold ``N`` (no asset).
    """
    n = returns.shape[1]
    d = returns - np.add.reduce(returns, axis=0) / returns.shape[0]
    sd = np.sqrt(np.add.reduce(d * d, axis=0))
    z = np.divide(d, sd, out=np.zeros_like(d), where=sd > 1e-9)  # a constant series correlates with nothing
    free = np.ones(n, bool)
    out = np.full((-(-n // size), size), n, np.intp)
    for c in range(len(out)):
        seed = int(np.argmax(free))
        free[seed] = False
        cand = np.flatnonzero(free)
        corr = np.abs(np.add.reduce(z[:, cand] * z[:, seed:seed + 1], axis=0))
        take = cand[np.argsort(-corr, kind="stable")[:size - 1]]  # stable: ties to the lower number
        members = np.sort(np.append(take, seed))
        out[c, :len(members)] = members
        free[members] = False
    return out
