"""Performance of an equity curve and its trades: the one metrics module.

One convention everywhere (backtest, reports, RL evaluation, the gate):

* returns are **simple per-bar returns** of the equity curve, ``r_t = E_t / E_{t-1} - 1``,
  after fees (the curve is marked to market at each bar close);
* volatility is the **sample** standard deviation (``ddof=1``) of those returns;
* annualisation uses the **bars per year of the timeframe**, markets open 24/7:
  ``365 * 86400 s / bar seconds`` (8,760 for 1h, 105,120 for 5m);
* CAGR is ``(1 + total) ** (bars_per_year / n_returns) - 1`` (as quantstats counts years);
* drawdowns are measured on the equity curve including its starting value, so a loss
  in the first bar is a drawdown from the initial capital.

Trade statistics are per **round trip**: a symbol's position from flat back to flat
(a flip through zero closes one trip and opens the next), its P&L the cash flows of
its fills after fees.  Tests check every figure against quantstats on the same curves
(``tests/unit/training/test_performance.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

SECONDS_PER_YEAR = 365 * 86400


def bars_per_year(timeframe: str) -> float:
    """Return the bars in a year of a 24/7 market for a timeframe such as ``1h`` or ``5m``."""
    return SECONDS_PER_YEAR / pd.Timedelta(timeframe).total_seconds()


def sharpe_ratio(returns: Any, per_year: float, min_vol: float = 0.0) -> float:
    """Return the annualised Sharpe ratio of per-period returns: ``mean / std(ddof=1) * sqrt(per_year)``.

    NaN when there are fewer than 2 returns or the annualised volatility is at or below
    ``min_vol`` (0: only a curve without variance); the one implementation every report uses.
    """
    r = np.asarray(returns, np.float64)
    if len(r) < 2:
        return math.nan
    sd = float(r.std(ddof=1))
    if not math.isfinite(sd) or sd * math.sqrt(per_year) <= min_vol:
        return math.nan
    return float(r.mean() / sd * math.sqrt(per_year))


def returns_of(equity: pd.Series) -> pd.Series:
    """Return the simple per-bar returns of an equity curve (one fewer than its points)."""
    values = equity.astype(float)
    return (values / values.shift(1) - 1.0).iloc[1:]


def drawdown_of(equity: pd.Series) -> pd.Series:
    """Return the drawdown at each point: equity / running peak - 1 (0 at a new high, negative below it)."""
    values = equity.astype(float)
    return values / values.cummax() - 1.0


@dataclass(frozen=True)
class Metrics:
    """Figures of one equity curve (fractions, not percent; ratios annualised)."""

    bars: int
    total_return: float
    cagr: float
    volatility: float
    sharpe: float
    sortino: float
    calmar: float
    max_drawdown: float
    max_drawdown_bars: int
    max_drawdown_days: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def metrics(equity: pd.Series, timeframe: str) -> Metrics:
    """Compute the curve's figures under the module's convention."""
    per_year = bars_per_year(timeframe)
    r = returns_of(equity)
    n = len(r)
    if n == 0:
        return Metrics(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0.0)
    total = float(equity.iloc[-1] / equity.iloc[0] - 1.0)
    cagr = (1.0 + total) ** (per_year / n) - 1.0 if total > -1.0 else -1.0
    ratio = sharpe_ratio(r, per_year)
    mean = float(r.mean())
    downside = math.sqrt(float((r[r < 0] ** 2).sum()) / n)
    dd = drawdown_of(equity)
    mdd = float(dd.min())
    bars = _longest_underwater(dd)
    days = bars * pd.Timedelta(timeframe).total_seconds() / 86400
    sd = float(r.std(ddof=1)) if n > 1 else 0.0
    return Metrics(
        bars=n, total_return=total, cagr=cagr, volatility=sd * math.sqrt(per_year),
        sharpe=ratio if math.isfinite(ratio) else 0.0,  # a curve without variance: no risk-adjusted return, 0
        sortino=mean / downside * math.sqrt(per_year) if downside > 0 else 0.0,
        calmar=cagr / -mdd if mdd < 0 else 0.0,
        max_drawdown=mdd, max_drawdown_bars=bars, max_drawdown_days=days)


def _longest_underwater(dd: pd.Series) -> int:
    """Return the longest run of consecutive points below a previous peak."""
    under = dd.to_numpy() < 0
    pos = np.arange(len(under))
    last_peak = np.maximum.accumulate(np.where(under, -1, pos))
    return int((pos - last_peak)[under].max()) if under.any() else 0


def round_trips(fills: pd.DataFrame) -> pd.DataFrame:
    """Return one row per round trip (flat to flat) of each symbol from its fills.

    ``fills``: columns ``ts`` (time), ``symbol``, ``qty`` (signed: + buy, - sell),
    ``price`` and ``fee`` (quote currency).  A trip still open at the end is left out.
    Columns: symbol, open_ts, close_ts, side (+1 long, -1 short), pnl (after fees),
    fees and notional (the absolute cost of the trip's entries).
    """
    out = []
    for symbol, g in fills.sort_values("ts", kind="stable").groupby("symbol", sort=True):
        pos, cash, fees, opened, side, notional, peak = 0.0, 0.0, 0.0, None, 0, 0.0, 0.0
        for ts, qty, price, fee in zip(g["ts"], g["qty"].astype(float), g["price"].astype(float),
                                       g["fee"].astype(float), strict=True):
            while qty != 0.0:
                if pos == 0.0:
                    opened, side, cash, fees, notional, peak = ts, int(np.sign(qty)), 0.0, 0.0, 0.0, 0.0
                # the part of this fill that closes or extends the open trip; a flip opens the next one
                take = qty if np.sign(qty) == side or abs(qty) <= abs(pos) else -pos
                share = take / qty
                cash -= take * price
                fees += fee * share
                if np.sign(take) == side:
                    notional += abs(take) * price
                pos += take
                peak = max(peak, abs(pos))
                qty -= take
                fee -= fee * share
                if abs(pos) <= 1e-9 * peak:  # flat, up to the rounding of summed quantities
                    out.append((symbol, opened, ts, side, cash - fees, fees, notional))
                    pos = 0.0
    cols = ["symbol", "open_ts", "close_ts", "side", "pnl", "fees", "notional"]
    return pd.DataFrame(out, columns=cols)


def trade_stats(trips: pd.DataFrame) -> dict[str, float]:
    """Return win rate, profit factor, expectancy and average holding time (hours) of round trips."""
    n = len(trips)
    if n == 0:
        return {"round_trips": 0.0, "win_rate": 0.0, "profit_factor": 0.0, "expectancy": 0.0,
                "avg_holding_hours": 0.0}
    pnl = trips["pnl"].astype(float)
    gains, losses = float(pnl[pnl > 0].sum()), float(-pnl[pnl < 0].sum())
    held = (pd.to_datetime(trips["close_ts"]) - pd.to_datetime(trips["open_ts"])).dt.total_seconds() / 3600
    return {"round_trips": float(n), "win_rate": float((pnl > 0).mean()),
            "profit_factor": gains / losses if losses > 0 else math.inf if gains > 0 else 0.0,
            "expectancy": float(pnl.mean()), "avg_holding_hours": float(held.mean())}


def exposure_stats(positions: pd.DataFrame, equity: pd.Series, fills: pd.DataFrame, timeframe: str
                   ) -> dict[str, float]:
    """Return exposure (share of bars holding anything), mean gross leverage, annual turnover and fees paid.

    ``positions``: position value (quote currency, signed) per bar (rows) and symbol (columns),
    on the equity curve's index.  Turnover: traded notional / mean equity, per year.
    """
    gross = positions.abs().sum(axis=1).reindex(equity.index).fillna(0.0)
    traded = float((fills["qty"].abs() * fills["price"]).sum()) if len(fills) else 0.0
    years = max(len(equity) - 1, 1) / bars_per_year(timeframe)
    return {"exposure": float((gross > 0).mean()), "gross_leverage": float((gross / equity).mean()),
            "turnover": traded / float(equity.mean()) / years, "fees_paid": float(fills["fee"].sum())
            if len(fills) else 0.0}


def monthly_returns(equity: pd.Series) -> pd.Series:
    """Return the compounded return of each calendar month (UTC), indexed by the month's start.

    Each month runs from the last value of the month before (the first month from the
    curve's first value) to its own last value.
    """
    month_end = equity.astype(float).resample("MS").last().dropna()
    base = month_end.shift(1)
    if len(base):
        base.iloc[0] = float(equity.iloc[0])
    return month_end / base - 1.0


def regime_labels(equity: pd.DataFrame, model: Any = None) -> pd.Series:
    """Return the regime label known at each close of a result's ``equity.csv`` frame (point in time).

    The run's own labels when it recorded them (its ``regime`` column: the decision step's
    regime, :mod:`flows.operators.regime`); otherwise the classifier ``model`` (default:
    :class:`~flows.operators.regime.RuleRegime`, prices alone) run over the basket's growth
    (``buy_and_hold_growth``) at the closes.  A close with no label yet is ``warm-up``.
    """
    from flows.operators.regime import RuleRegime, classify

    if "regime" in equity.columns:
        return equity["regime"].astype(object).where(equity["regime"].notna() & (equity["regime"] != ""), "warm-up")
    basket = equity["buy_and_hold_growth"].astype(float)
    times = pd.DatetimeIndex(basket.index).as_unit("ms").asi8
    states = classify(times, basket.to_numpy(float), model or RuleRegime())
    return pd.Series([s.label if s else "warm-up" for s in states], index=basket.index, dtype=object)


def by_group(equity: pd.Series, labels: pd.Series, timeframe: str) -> pd.DataFrame:
    """Return per label: bars, compounded return, annualised Sharpe of the bars carrying it.

    A bar's return (from t-1 to t) is credited to the label known at t-1, when the
    position that earned it was held.
    """
    r = returns_of(equity)
    known = labels.reindex(equity.index).shift(1).reindex(r.index)
    rows = {}
    for label, g in r.groupby(known, sort=True):
        sd = float(g.std(ddof=1)) if len(g) > 1 else 0.0
        rows[label] = {"bars": len(g), "return": float((1 + g).prod() - 1),
                       "sharpe": float(g.mean() / sd * math.sqrt(bars_per_year(timeframe))) if sd > 0 else 0.0}
    return pd.DataFrame.from_dict(rows, orient="index")


def benchmarks(close: pd.DataFrame, timeframe: str, vol_target: float, vol_bars: int, capital: float
               ) -> dict[str, pd.Series]:
    """Return the benchmark equity curves on the same bars: buy-and-hold, volatility-targeted buy-and-hold, cash.

    Buy-and-hold is equal weight, bought at the first close, never rebalanced.  The
    volatility-targeted version holds the same basket scaled each bar to the annual
    ``vol_target`` using the basket's realised volatility over the previous ``vol_bars``
    bars (known before the bar; at most fully invested, no leverage, no costs).
    """
    basket = (close / close.iloc[0]).mean(axis=1)
    return {"buy_and_hold": capital * basket, "vol_target_buy_and_hold": vol_targeted(basket, timeframe, vol_target,
                                                                                      vol_bars, capital),
            "cash": pd.Series(capital, index=close.index, dtype=float)}


def vol_targeted(basket: pd.Series, timeframe: str, vol_target: float, vol_bars: int, capital: float) -> pd.Series:
    """Return the equity of holding ``basket`` scaled each bar to the annual ``vol_target`` (known before the bar).

    The weight is ``min(1, vol_target / realised)`` with the realised volatility of the
    previous ``vol_bars`` bars; 0 until that window fills.  No leverage, no costs.
    """
    r = basket.pct_change().fillna(0.0)
    realised = r.rolling(vol_bars).std().shift(1) * math.sqrt(bars_per_year(timeframe))
    weight = (vol_target / realised).clip(upper=1.0).fillna(0.0)
    return capital * (1 + weight * r).cumprod()


def summary(equity: pd.Series, timeframe: str, fills: pd.DataFrame | None = None,
            positions: pd.DataFrame | None = None) -> dict[str, float]:
    """Return every figure of the module for one run as a flat dict (for JSON, tables and the gate)."""
    out = metrics(equity, timeframe).as_dict()
    if fills is not None:
        out.update(trade_stats(round_trips(fills)))
        if positions is not None:
            out.update(exposure_stats(positions, equity, fills, timeframe))
    return out


def format_table(rows: Mapping[str, Mapping[str, float]]) -> str:
    """Render named summaries side by side as a Markdown table (rows: figures, columns: runs)."""
    names = list(rows)
    keys = [k for k in next(iter(rows.values()))] if rows else []
    pct = {"total_return", "cagr", "volatility", "max_drawdown", "win_rate", "exposure"}
    lines = ["| figure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for k in keys:
        cells = []
        for n in names:
            v = rows[n].get(k, float("nan"))
            cells.append(f"{v:.2%}" if k in pct else f"{v:,.2f}" if abs(v) < 1e6 else f"{v:,.0f}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
