"""Per-fold classification metrics and the after-fee Sharpe ratio of trading the sign.

Classification: accuracy (p > 0.5), log loss (p clipped to [1e-15, 1 - 1e-15]),
ROC AUC (Mann-Whitney with average ranks for ties; NaN with one class only) and
Brier score, all numpy.

Trading: each symbol holds position +1 if p > 0.5 else -1 from decision time t
for ``horizon`` bars and earns ``position * fwd_ret`` (a log return).  Changing
position costs ``fee_bps`` basis points per unit of change (flipping +1 -> -1 is
2 units; the first position of a symbol is 1 unit from flat).  With
``horizon > 1`` consecutive decisions' label windows overlap, so only
non-overlapping decisions are traded: times whose offset from the fold's first
time is a multiple of ``horizon`` bars.  The portfolio return per decision time
is the equal-weight mean over the symbols decided then.

Annualisation and the ratio are :mod:`training.performance`'s (the one convention):
a 24/7 year of ``365 * 24 h / (horizon * bar)`` holding periods (8760 for 1h bars,
horizon 1; this module used 365.25 days before) and
``sharpe = mean / std * sqrt(periods_per_year)`` of the per-period portfolio returns
(sample std, ddof=1; NaN when fewer than 2 periods or zero variance).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from flows.execution.costs import COSTS
from training.performance import bars_per_year, sharpe_ratio

METRICS = ("accuracy", "log_loss", "roc_auc", "brier", "sharpe", "turnover", "n")


@dataclass(frozen=True)
class TradingConfig:
    """Sign-trading settings for the Sharpe ratio: fee per unit position change, bar and holding horizon."""

    fee_bps: float = COSTS.fee_bps
    timeframe: str = "1h"
    horizon: int = 1


def periods_per_year(timeframe: str, horizon: int = 1) -> float:
    """Return holding periods per 24/7 year for a bar length and horizon (bars)."""
    return bars_per_year(timeframe) / horizon


def accuracy(y: ArrayLike, p: ArrayLike) -> float:
    """Return the share of rows where (p > 0.5) equals the label."""
    return float(np.mean((np.asarray(p) > 0.5) == (np.asarray(y) > 0.5)))


def log_loss(y: ArrayLike, p: ArrayLike) -> float:
    """Return the mean binary cross-entropy (natural log)."""
    pc = np.clip(np.asarray(p, np.float64), 1e-15, 1 - 1e-15)
    yy = np.asarray(y, np.float64)
    return float(-np.mean(yy * np.log(pc) + (1 - yy) * np.log(1 - pc)))


def brier(y: ArrayLike, p: ArrayLike) -> float:
    """Return the mean squared error of the probability."""
    return float(np.mean((np.asarray(p, np.float64) - np.asarray(y, np.float64)) ** 2))


def roc_auc(y: ArrayLike, p: ArrayLike) -> float:
    """Return ROC AUC via average ranks; NaN when only one class is present."""
    yy = np.asarray(y) > 0.5
    n_pos, n_neg = int(yy.sum()), int((~yy).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(np.asarray(p, np.float64)).rank(method="average").to_numpy()
    return float((ranks[yy].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def sign_trading_returns(p: ArrayLike, fwd_ret: ArrayLike, symbols: Sequence[str] | ArrayLike,
                         times: ArrayLike, cfg: TradingConfig) -> tuple[pd.Series, float]:
    """Return per-period after-fee portfolio returns (indexed by time) and mean turnover per symbol-period."""
    df = pd.DataFrame({"p": np.asarray(p, np.float64), "r": np.asarray(fwd_ret, np.float64),
                       "s": np.asarray(symbols), "t": pd.to_datetime(pd.Series(np.asarray(times)), utc=True)})
    step = pd.Timedelta(cfg.timeframe) * cfg.horizon
    df = df[((df.t - df.t.min()) % step) == pd.Timedelta(0)].sort_values(["s", "t"], kind="mergesort")
    df["pos"] = np.where(df.p > 0.5, 1.0, -1.0)
    change = df.groupby("s")["pos"].diff().abs().fillna(1.0)  # first position: one unit from flat
    df["net"] = df.pos * df.r - change * cfg.fee_bps * 1e-4
    per_period = df.groupby("t")["net"].mean().sort_index()
    return per_period, float(change.mean()) if len(change) else float("nan")


def sharpe(returns: pd.Series | np.ndarray, timeframe: str, horizon: int = 1) -> float:
    """Return the annualised Sharpe ratio of per-period returns (see module docstring)."""
    return sharpe_ratio(returns, periods_per_year(timeframe, horizon))


def fold_metrics(y: ArrayLike, p: ArrayLike, fwd_ret: ArrayLike, symbols: Sequence[str] | ArrayLike,
                 times: ArrayLike, cfg: TradingConfig) -> dict[str, float]:
    """Return every metric of one test fold (keys in :data:`METRICS`)."""
    rets, turnover = sign_trading_returns(p, fwd_ret, symbols, times, cfg)
    return {"accuracy": accuracy(y, p), "log_loss": log_loss(y, p), "roc_auc": roc_auc(y, p),
            "brier": brier(y, p), "sharpe": sharpe(rets, cfg.timeframe, cfg.horizon),
            "turnover": turnover, "n": float(len(np.asarray(y)))}


def mean_metrics(folds: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Return the mean of each metric over folds, ignoring NaN (NaN if all are NaN)."""
    keys = [k for k in folds[0]] if folds else []
    out = {}
    for k in keys:
        v = np.array([f[k] for f in folds], np.float64)
        out[k] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
    return out
