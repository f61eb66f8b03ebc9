"""Backtest overfitting: the deflated Sharpe ratio and the probability of backtest overfitting.

- :func:`probabilistic_sharpe` (Bailey & López de Prado 2012): the probability that the
  true Sharpe ratio exceeds a benchmark ``sr0``, given the observed per-period Sharpe
  ratio, the sample length and the returns' skewness and kurtosis.
- :func:`expected_max_sharpe` (Bailey & López de Prado 2014, eq. 10 with the
  Euler-Mascheroni constant): the largest Sharpe ratio ``n`` independent trials with
  Sharpe variance ``var`` are expected to show by luck alone.
- :func:`deflated_sharpe`: the observed Sharpe ratio against that expected maximum:
  ``excess = SR - SR0`` and ``probability = PSR(SR0)`` (the DSR).
- :func:`pbo_cscv` (Bailey, Borwein, López de Prado & Zhu 2015): combinatorially
  symmetric cross-validation over a matrix of trial returns; the probability of
  backtest overfitting is the share of splits where the in-sample best trial ranks
  below the median out of sample.

All Sharpe ratios here are per period (not annualised) unless a name says otherwise.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import NamedTuple

import numpy as np
from scipy import stats

EULER_GAMMA = 0.5772156649015329


class Deflated(NamedTuple):
    """The deflated Sharpe ratio of one series (per period)."""

    sharpe: float  # observed
    sr0: float  # expected maximum of the trials under no skill
    excess: float  # sharpe - sr0
    probability: float  # DSR: P(true Sharpe > sr0)


def probabilistic_sharpe(sharpe: float, n_obs: int, skew: float, kurtosis: float, sr0: float = 0.0) -> float:
    """Return P(true Sharpe > ``sr0``) for an observed per-period ``sharpe`` over ``n_obs`` returns.

    ``kurtosis`` is the plain (not excess) kurtosis: 3 for normal returns.  When the sample skew
    and kurtosis make the Sharpe ratio's variance estimate negative (very sparse returns), the
    normal case is used.
    """
    if n_obs < 2:
        return float("nan")
    denom = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if denom <= 0:  # sample moments of very sparse returns can make the variance estimate negative:
        denom = 1.0 + sharpe**2 / 2.0  # fall back to normal returns (skew 0, kurtosis 3)
    return float(stats.norm.cdf((sharpe - sr0) * math.sqrt(n_obs - 1) / math.sqrt(denom)))


def expected_max_sharpe(n_trials: int, sharpe_var: float) -> float:
    """Return the Sharpe ratio the best of ``n_trials`` skill-less trials is expected to show."""
    if n_trials <= 1 or sharpe_var <= 0:
        return 0.0
    z1 = stats.norm.ppf(1.0 - 1.0 / n_trials)
    z2 = stats.norm.ppf(1.0 - 1.0 / (n_trials * math.e))
    return float(math.sqrt(sharpe_var) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2))


def deflated_sharpe(returns: np.ndarray, n_trials: int, trial_sharpe_std: float) -> Deflated:
    """Return the deflated Sharpe ratio of per-period ``returns`` picked as the best of ``n_trials``.

    ``trial_sharpe_std``: the standard deviation of the trials' per-period Sharpe ratios.
    """
    r = np.asarray(returns, dtype=float)
    r = r[np.isfinite(r)]
    sd = float(r.std(ddof=1)) if len(r) > 1 else 0.0
    if sd == 0.0:  # a curve that never moved (no trades) shows no skill: probability 0
        sr0 = expected_max_sharpe(n_trials, trial_sharpe_std**2)
        return Deflated(0.0, sr0, -sr0, 0.0)
    sr = float(r.mean() / sd)
    sr0 = expected_max_sharpe(n_trials, trial_sharpe_std**2)
    skew = float(stats.skew(r))
    kurt = float(stats.kurtosis(r, fisher=False))
    return Deflated(sr, sr0, sr - sr0, probabilistic_sharpe(sr, len(r), skew, kurt, sr0))


def pbo_cscv(returns: np.ndarray, n_splits: int = 16) -> float:
    """Return the probability of backtest overfitting of trials ``returns`` (rows: periods, columns: trials).

    The rows are cut into ``n_splits`` (even) blocks; every half of the blocks is in
    sample once, the rest out of sample.  For each split the trial with the best
    in-sample Sharpe ratio is ranked out of sample; the PBO is the share of splits where
    its relative rank ``w`` gives a logit ``log(w / (1 - w)) <= 0`` (below the median).
    """
    m = np.asarray(returns, dtype=float)
    if m.ndim != 2 or m.shape[1] < 2:
        raise ValueError("returns must be periods x trials with at least two trials")
    if n_splits % 2 or n_splits < 2:
        raise ValueError("n_splits must be even and at least 2")
    # per block and trial: count, sum and sum of squares; a split's Sharpe ratios come from their sums
    blocks = np.array_split(m, n_splits)
    n = np.array([len(b) for b in blocks], dtype=float)
    s1 = np.stack([b.sum(axis=0) for b in blocks])
    s2 = np.stack([(b * b).sum(axis=0) for b in blocks])
    n_trials = m.shape[1]
    below = total = 0
    for chosen in combinations(range(n_splits), n_splits // 2):
        ins = np.zeros(n_splits, dtype=bool)
        ins[list(chosen)] = True
        best = int(np.argmax(_sharpes(n[ins].sum(), s1[ins].sum(axis=0), s2[ins].sum(axis=0))))
        oos_sr = _sharpes(n[~ins].sum(), s1[~ins].sum(axis=0), s2[~ins].sum(axis=0))
        rank = float(stats.rankdata(oos_sr)[best]) / (n_trials + 1)  # in (0, 1)
        below += math.log(rank / (1.0 - rank)) <= 0.0
        total += 1
    return below / total


def _sharpes(count: float, total: np.ndarray, squares: np.ndarray) -> np.ndarray:
    """Return each column's mean / sample standard deviation from its count, sum and sum of squares."""
    mean = total / count
    var = np.maximum(squares - count * mean * mean, 0.0) / max(count - 1.0, 1.0)
    sd = np.sqrt(var)
    return np.where(sd > 0, mean / np.where(sd > 0, sd, 1.0), 0.0)
