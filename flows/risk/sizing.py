"""Position sizing: Kelly fraction from recent trades, scaled by confidence and a volatility target.

After the seed's ``PositionSizer``:

- ``kelly = (p * W - (1 - p)) / W`` with ``p`` the win rate and ``W`` the mean
  win over the mean loss of the last ``lookback_trades`` closed trades (the
  prior ``prior_win_rate``/``prior_avg_win``/``prior_avg_loss`` while fewer than
  ``min_trades`` closed), clipped to ``[0, kelly_cap]``, times 1, 1/2 or 1/4
  (full, half, quarter Kelly); ``fixed_fraction`` ignores the trades.  No losing
  trade in the sample means ``p = 1``: the cap.
- the position, as a fraction of equity, is
  ``kelly * confidence * min(1, vol_target / annual_vol)``, divided by
  ``stop_loss_pct`` when set (the Kelly fraction is then the equity at risk), and
  capped at ``max_position_fraction``.  Unknown volatility: no volatility scaling.

The size is non-decreasing in confidence and never above the cap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from flows.risk.config import KELLY_MULTIPLIER, SizingConfig

YEAR_MS = 365 * 86_400_000


def kelly_fraction(trade_returns: Sequence[float], cfg: SizingConfig) -> float:
    """Return the (multiplied) Kelly fraction of equity from recent closed trades' returns."""
    if cfg.method == "fixed_fraction":
        return cfg.fixed_fraction
    recent = trade_returns[-cfg.lookback_trades:]
    if len(recent) < cfg.min_trades:
        p, avg_win, avg_loss = cfg.prior_win_rate, cfg.prior_avg_win, cfg.prior_avg_loss
    else:
        wins = [r for r in recent if r > 0]
        losses = [-r for r in recent if r <= 0]
        if not wins:
            return 0.0
        if not losses or sum(losses) == 0.0:
            return cfg.kelly_cap * KELLY_MULTIPLIER[cfg.method]
        p = len(wins) / len(recent)
        avg_win, avg_loss = sum(wins) / len(wins), sum(losses) / len(losses)
    if avg_win <= 0.0:
        return 0.0
    full = p - (1.0 - p) * avg_loss / avg_win  # = (p * W - (1 - p)) / W with W = avg_win / avg_loss
    return min(cfg.kelly_cap, max(0.0, full)) * KELLY_MULTIPLIER[cfg.method]


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
