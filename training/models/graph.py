"""Rolling correlation graphs of assets, as dense adjacency matrices per decision time.

At decision time t the graph uses the one-bar returns of the ``window`` bars ending
at t (all known at t).  Edge i-j carries the Pearson correlation of the two return
series when ``|corr| >= threshold``, else there is no edge; every node has a
self-loop of weight 1.  The result is symmetric with a unit diagonal.  Numpy only,
so the scorer can build the same graph online without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from inference.graph import correlation_adjacency  # one definition, shared with the scorer


@dataclass(frozen=True)
class GraphConfig:
    """Correlation graph settings: return column, window in bars, |corr| threshold."""

    return_col: str = "ret_1"
    window: int = 60
    threshold: float = 0.3

    def __post_init__(self) -> None:
        if self.window < 3:
            raise ValueError("window must be at least 3 bars")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError("threshold must be in [0, 1]")


@dataclass(frozen=True)
class GraphSet:
    """Node features, adjacency and labels per decision time (assets in ``symbols`` order).

    Attributes:
        times: decision times (UTC), ``[T]``.
        symbols: asset order of the node axis.
        x: node features ``[T, N, F]`` (0 where an asset has no row at a time).
        adj: adjacency ``[T, N, N]``.
        y: labels ``[T, N]`` (NaN where missing).
        present: ``[T, N]`` True where the asset has a feature row at the time.
    """

    times: pd.DatetimeIndex
    symbols: tuple[str, ...]
    x: np.ndarray
    adj: np.ndarray
    y: np.ndarray
    present: np.ndarray


def build_graphs(frame: pd.DataFrame, features: list[str], config: GraphConfig | None = None,
                 symbols: tuple[str, ...] | None = None, label: str | None = "label") -> GraphSet:
    """Build node features and a correlation graph for every decision time with a full window.

    Args:
        frame: long rows ``(symbol, event_timestamp, features..., [label])``.
        features: node feature columns, in model order.
        config: graph settings.
        symbols: node order (default: sorted symbols of ``frame``).
        label: label column, or None at scoring time.

    Returns:
        A :class:`GraphSet`; the first ``window - 1`` decision times are dropped.
    """
    cfg = config or GraphConfig()
    symbols = tuple(symbols) if symbols else tuple(sorted(frame["symbol"].unique()))
    cols = list(dict.fromkeys([*features, cfg.return_col] + ([label] if label else [])))
    long = frame.assign(event_timestamp=pd.to_datetime(frame["event_timestamp"], utc=True))
    wide = long.pivot_table(index="event_timestamp", columns="symbol", values=cols,
                            aggfunc="last", dropna=False).sort_index()
    times = pd.DatetimeIndex(wide.index)
    n_t, n = len(times), len(symbols)

    def panel(col: str) -> np.ndarray:
        if col not in wide.columns.get_level_values(0):
            return np.full((n_t, n), np.nan)
        return wide[col].reindex(columns=list(symbols)).to_numpy(np.float64)

    x = np.stack([panel(f) for f in features], axis=-1)  # [T, N, F]
    present = ~np.isnan(x).any(axis=-1)
    rets = panel(cfg.return_col)
    y = panel(label) if label else np.full((n_t, n), np.nan)
    if n_t < cfg.window:
        empty = np.zeros((0, n, n), np.float32)
        return GraphSet(times[:0], symbols, np.zeros((0, n, len(features)), np.float32), empty,
                        y[:0], present[:0])
    win = np.lib.stride_tricks.sliding_window_view(rets, cfg.window, axis=0)  # [T-w+1, N, w]
    adj = correlation_adjacency(np.swapaxes(win, -1, -2), cfg.threshold)
    keep = slice(cfg.window - 1, None)
    x = np.nan_to_num(x[keep]).astype(np.float32)
    return GraphSet(times[keep], symbols, x, adj, y[keep], present[keep])


def to_rows(graphs: GraphSet, values: np.ndarray, name: str = "proba") -> pd.DataFrame:
    """Return per-node ``values`` ``[T, N]`` as long rows ``(symbol, event_timestamp, name)`` for present nodes."""
    t_idx, n_idx = np.nonzero(graphs.present)
    return pd.DataFrame({"symbol": np.asarray(graphs.symbols, dtype=object)[n_idx],
                         "event_timestamp": graphs.times[t_idx],
                         name: values[t_idx, n_idx]})
