"""Observations of the RL policies, shared by the training environments and the live flow.

Numpy only: the live flow imports this module and must not pull in gymnasium,
torch or stable-baselines3.  Every rescaling of the state happens in here, so an
environment and the flow build the same vector from the same state.
"""

from __future__ import annotations

import math

import numpy as np

TACTICAL_STATE: tuple[str, ...] = ("position", "unrealized_pnl", "equity_change", "log1p_bars_held", "drawdown")
EXECUTION_STATE: tuple[str, ...] = ("remaining", "time_left", "drift_pct", "bar_return_pct", "range_pct",
                                    "log_volume_ratio", "filled_vs_arrival_pct")


def tactical_observation(features: np.ndarray, position: float, unrealized_pnl: float, equity_change: float,
                         bars_held: int, drawdown: float) -> np.ndarray:
    """Return the tactical policy's observation, float32 ``[F + 5]``.

    Args:
        features: the asset's market features at the bar's close, ``[F]``.
        position: current exposure, signed, as a fraction of equity (units * close / equity).
        unrealized_pnl: open position's unrealized P&L as a fraction of equity.
        equity_change: equity's return over the last bar (``E_t / E_{t-1} - 1``).
        bars_held: bars since the position was opened or flipped (0 when flat).
        drawdown: ``1 - E_t / max(E)``, in [0, 1].
    """
    n = features.shape[0]
    out = np.empty(n + 5, np.float32)
    out[:n] = features
    out[n:] = (position, unrealized_pnl, equity_change, math.log1p(bars_held), drawdown)
    return out


def strategic_observation(features: np.ndarray, weights: np.ndarray, regime: np.ndarray | None) -> np.ndarray:
    """Return the strategic policy's observation, float32 ``[A * F + A + R]``.

    Args:
        features: every asset's market features at the bar's close, ``[A, F]``.
        weights: current portfolio weights (signed fractions of equity), ``[A]``.
        regime: regime inputs ``[R]`` known at the bar's close, or None.
    """
    parts = [features.reshape(-1), weights.reshape(-1)]
    if regime is not None:
        parts.append(regime.reshape(-1))
    return np.concatenate(parts).astype(np.float32, copy=False)


def execution_observation(features: np.ndarray, remaining: float, time_left: float, drift: float,
                          bar_return: float, bar_range: float, volume_ratio: float,
                          filled_vs_arrival: float) -> np.ndarray:
    """Return the execution policy's observation, float32 ``[F + 7]``.

    Price terms are signed by the order's side (positive = the price moved against
    the order: up for a buy) and go in as fractions, out in percent.

    Args:
        features: the asset's market features at the last closed bar, ``[F]``.
        remaining: quantity still to work, fraction of the parent order.
        time_left: bars left to the deadline, fraction of the horizon.
        drift: last close / arrival price - 1, signed by side.
        bar_return: last bar's close / open - 1, signed by side.
        bar_range: last bar's (high - low) / close.
        volume_ratio: last bar's volume over its trailing mean (> 0).
        filled_vs_arrival: average fill price so far / arrival - 1, signed by side (0 if none).
    """
    n = features.shape[0]
    out = np.empty(n + 7, np.float32)
    out[:n] = features
    out[n:] = (remaining, time_left, 100.0 * drift, 100.0 * bar_return, 100.0 * bar_range,
               math.log(volume_ratio), 100.0 * filled_vs_arrival)
    return out


def strategic_weights(action: np.ndarray, n_assets: int, long_only: bool = True, gross_cap: float = 1.0,
                      logit_scale: float = 5.0) -> np.ndarray:
    """Map a strategic action to portfolio weights (fractions of equity), float64 ``[A]``.

    Long-only: ``action`` has ``A + 1`` entries in [-1, 1] (the last is cash); the
    weights are ``softmax(logit_scale * action)`` without the cash entry, so they are
    non-negative and sum to at most 1.  Long-short: ``action`` has ``A`` entries in
    [-1, 1], scaled down so that ``sum |w| <= gross_cap``.
    """
    a = np.clip(np.asarray(action, np.float64).reshape(-1), -1.0, 1.0)
    if long_only:
        if a.shape[0] != n_assets + 1:
            raise ValueError(f"long-only action needs {n_assets + 1} entries (assets + cash), got {a.shape[0]}")
        z = logit_scale * a
        e = np.exp(z - z.max())
        return (e / e.sum())[:n_assets]
    if a.shape[0] != n_assets:
        raise ValueError(f"long-short action needs {n_assets} entries, got {a.shape[0]}")
    gross = float(np.abs(a).sum())
    return a * (gross_cap / gross) if gross > gross_cap else a
