"""What the pages show, computed from the store's bounded reads: pure functions of frames, no Streamlit.

P&L by symbol comes from the fills (quote received less paid less fees) plus the open
quantity at the latest price; slippage is the fill price against the decision price (the
close of the bar whose close was decided on), positive when the fill was worse.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from flows.risk.config import LimitsConfig

BREAKERS = frozenset({"stale_data", "price_gap", "volatility_spike"})
HALT_STEPS = ("halt", "probation", "release", "override")


def pnl_by_day(daily: pd.DataFrame) -> pd.DataFrame:
    """Return ``day, pnl``: each day's last equity less the day before's (the first day: less its first)."""
    if daily.empty:
        return pd.DataFrame({"day": pd.Series(dtype="datetime64[ns, UTC]"), "pnl": pd.Series(dtype=float)})
    before = daily["last"].shift(1).fillna(daily["first"])
    return pd.DataFrame({"day": pd.to_datetime(daily["day"], utc=True), "pnl": daily["last"] - before})


def prices_of(state: dict[str, Any] | None) -> dict[str, float]:
    """Return the latest price of each symbol held in a ``portfolio_state`` row's ``state``."""
    inner = (state or {}).get("state") or {}
    return {s: float(p) for s, p in (inner.get("prices") or {}).items()}


def pnl_by_symbol(flows: pd.DataFrame, state: dict[str, Any] | None) -> pd.DataFrame:
    """Return ``symbol, fills, fees, pnl``: sold less bought less fees plus the open quantity's value."""
    if flows.empty:
        return pd.DataFrame(columns=["symbol", "fills", "fees", "pnl"])
    prices = prices_of(state)
    held = flows["symbol"].map(prices).fillna(0.0) * flows["net_qty"].astype(float)
    pnl = flows["sold"].astype(float) - flows["bought"].astype(float) - flows["fees"].astype(float) + held
    return pd.DataFrame({"symbol": flows["symbol"], "fills": flows["fills"], "fees": flows["fees"].astype(float),
                         "pnl": pnl})


def positions(state: dict[str, Any] | None) -> pd.DataFrame:
    """Return ``symbol, qty, price, value, weight, avg_price, unrealized`` of the open positions."""
    cols = ["symbol", "qty", "price", "value", "weight", "avg_price", "unrealized"]
    if not state:
        return pd.DataFrame(columns=cols)
    inner = state.get("state") or {}
    qty = {s: float(q) for s, q in (state.get("positions") or inner.get("qty") or {}).items() if float(q) != 0.0}
    prices, avg = prices_of(state), inner.get("avg") or {}
    equity = float(state.get("equity") or 0.0)
    rows = []
    for s, q in sorted(qty.items()):
        p = prices.get(s, float("nan"))
        a = float(avg[s]) if s in avg else float("nan")
        rows.append((s, q, p, q * p, q * p / equity if equity else float("nan"), a, q * (p - a)))
    return pd.DataFrame(rows, columns=cols)


def slippage(fills: pd.DataFrame) -> pd.DataFrame:
    """Return the fills with ``slippage_bps``: against the decision price, positive when worse for the order."""
    out = fills.copy()
    sign = out["side"].map({"buy": 1.0, "sell": -1.0}).astype(float)
    out["slippage_bps"] = (out["price"].astype(float) / out["decision_price"].astype(float) - 1.0) * 1e4 * sign
    return out


def model_confidence(preds: pd.DataFrame) -> pd.DataFrame:
    """Return ``ts, symbol, model, prob_up, confidence`` for the ensemble and each member in the payload."""
    rows: list[tuple[Any, ...]] = []
    for ts, sym, model, p, conf, payload in zip(preds["ts"], preds["symbol"], preds["model"], preds["prob_up"],
                                                preds["confidence"], preds["payload"], strict=True):
        rows.append((ts, sym, model, p, conf))
        members = (json.loads(payload) if isinstance(payload, str) else payload or {}).get("members") or {}
        for name, mp in members.items():
            if mp is not None and mp == mp:
                rows.append((ts, sym, name, float(mp), abs(float(mp) - 0.5) * 2))
    return pd.DataFrame(rows, columns=["ts", "symbol", "model", "prob_up", "confidence"])


def freshness_age(fresh: pd.DataFrame, now: pd.Timestamp) -> pd.DataFrame:
    """Return the freshness rows with ``age_s`` (seconds since the newest stored time; NaN when none)."""
    out = fresh.copy()
    out["age_s"] = (now - out["last"]).dt.total_seconds()
    return out


def headroom(state: dict[str, Any] | None, limits: LimitsConfig) -> pd.DataFrame:
    """Return ``limit, value, threshold, headroom, used`` for the portfolio limits at the latest row."""
    cols = ["limit", "value", "threshold", "headroom", "used"]
    if not state:
        return pd.DataFrame(columns=cols)
    equity = float(state.get("equity") or 0.0)
    pos = positions(state)
    largest = float(pos["weight"].abs().max()) if not pos.empty else 0.0
    daily_loss = max(0.0, -float(state.get("daily_pnl") or 0.0) / equity) if equity else 0.0
    figures = [("drawdown", float(state.get("drawdown") or 0.0), limits.max_drawdown),
               ("daily loss (24 h)", daily_loss, limits.max_daily_loss),
               ("gross leverage", float(state.get("leverage") or 0.0), limits.max_gross_leverage),
               ("largest position / equity", largest, limits.max_position_fraction)]
    return pd.DataFrame([(n, v, t, t - v, v / t) for n, v, t in figures], columns=cols)


def classify(rule: str) -> str:
    """Return what a risk event is: ``halt`` (halts, probations, releases), ``breaker`` or ``rejection``."""
    if ":" in rule and rule.rsplit(":", 1)[1] in HALT_STEPS:
        return "halt"
    return "breaker" if rule in BREAKERS else "rejection"
