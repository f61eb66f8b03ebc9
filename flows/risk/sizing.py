"""Position sizing: Kelly fraction from recent trades, scaled by confidence and a volatility target.

After the seed's ``PositionSizer``, with the trade record shrunk toward a prior:

- ``kelly = p - (1 - p) * L / W`` with ``p`` the win rate, ``W`` the mean win and
  ``L`` the mean loss.  Each is a Bayesian estimate over the last ``lookback_trades``
  closed trades: the prior (``prior_win_rate``, ``prior_avg_win``, ``prior_avg_loss``)
  counts as ``prior_trades`` trades (Beta prior on the win rate, pseudo-trades of
  the prior's mean win and loss), so the estimate moves from the prior to the
  record as trades accumulate, instead of switching at a trade count.  Why: a hard
  switch after 20 one-bar trades turned a few early losses into Kelly = 0, and
  with it size 0 and no more trades (a permanent, silent lock).  ``prior_trades=0``
  is the raw record (the seed's formula).  Clipped to ``[0, kelly_cap]``, times 1,
  1/2 or 1/4 (full, half, quarter Kelly); ``fixed_fraction`` ignores the trades.
- the fraction never falls below ``probation_fraction`` of the prior's Kelly: a
  record whose estimate is not positive (:func:`kelly_estimate` reports it as
  halted) still trades that small size, so its record keeps updating and the
  estimate can recover; the risk engine reports the halt and its release.
- the position, as a fraction of equity, is
  ``kelly * confidence * min(1, vol_target / annual_vol)``, divided by
  ``stop_loss_pct`` when set (the Kelly fraction is then the equity at risk), and
  capped at ``max_position_fraction``.  Unknown volatility: no volatility scaling.

The size is non-decreasing in confidence and never above the cap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from flows.risk.config import KELLY_MULTIPLIER, SizingConfig

YEAR_MS = 365 * 86_400_000


class KellyEstimate(NamedTuple):
    """The Kelly fraction to size with, and whether the record's own estimate was not positive (a halt)."""

    fraction: float
    halted: bool
    raw: float  # the full (unmultiplied, unclipped) Kelly of the shrunk estimates


def _full_kelly(p: float, avg_win: float, avg_loss: float) -> float:
    return p - (1.0 - p) * avg_loss / avg_win if avg_win > 0 else -math.inf


def kelly_estimate(trade_returns: Sequence[float], cfg: SizingConfig) -> KellyEstimate:
    """Return the (multiplied) Kelly fraction of equity from recent closed trades' returns."""
    mult = KELLY_MULTIPLIER.get(cfg.method, 1.0)
    if cfg.method == "fixed_fraction":
        return KellyEstimate(cfg.fixed_fraction, False, cfg.fixed_fraction)
    recent = trade_returns[-cfg.lookback_trades:]
    k, p0 = cfg.prior_trades, cfg.prior_win_rate
    wins = [r for r in recent if r > 0]
    losses = [-r for r in recent if r <= 0]
    kw, kl = k * p0, k * (1.0 - p0)
    n = len(recent) + k
    if n <= 0:  # no record and no prior weight: the prior as it is
        p, avg_win, avg_loss = p0, cfg.prior_avg_win, cfg.prior_avg_loss
    else:
        p = (len(wins) + kw) / n
        avg_win = (sum(wins) + kw * cfg.prior_avg_win) / (len(wins) + kw) if wins or kw > 0 else 0.0
        avg_loss = (sum(losses) + kl * cfg.prior_avg_loss) / (len(losses) + kl) if losses or kl > 0 else 0.0
    if avg_loss <= 0.0 and p > 0:  # no loss anywhere: the cap
        return KellyEstimate(cfg.kelly_cap * mult, False, math.inf)
    full = _full_kelly(p, avg_win, avg_loss)
    prior = min(cfg.kelly_cap, max(0.0, _full_kelly(p0, cfg.prior_avg_win, cfg.prior_avg_loss)))
    floor = cfg.probation_fraction * prior  # never below it, so a bad record is still measured
    return KellyEstimate(max(floor, min(cfg.kelly_cap, full)) * mult, full <= 0, full)


def kelly_fraction(trade_returns: Sequence[float], cfg: SizingConfig) -> float:
    """Return the Kelly fraction :func:`kelly_estimate` sizes with."""
    return kelly_estimate(trade_returns, cfg).fraction


def annual_vol(bar_vol: float | None, cfg: SizingConfig, bar_ms: int | None) -> float | None:
    """Return the annualized volatility of a per-bar volatility, or None when either is unknown."""
    if bar_vol is None or not (math.isfinite(bar_vol) and bar_vol > 0):
        return None
    per_year = cfg.bars_per_year or (YEAR_MS / bar_ms if bar_ms else None)
    return None if per_year is None else bar_vol * math.sqrt(per_year)


def position_fraction(kelly: float, confidence: float, vol_annual: float | None, cfg: SizingConfig) -> float:
    """Return the position size as a fraction of equity (>= 0, at most ``max_position_fraction``)."""
    conf = min(1.0, max(0.0, confidence)) if math.isfinite(confidence) else 0.0
    frac = kelly * conf
    if vol_annual is not None:
        frac *= min(1.0, cfg.vol_target / vol_annual)
    if cfg.stop_loss_pct is not None:
        frac /= cfg.stop_loss_pct
    return min(cfg.max_position_fraction, max(0.0, frac))
