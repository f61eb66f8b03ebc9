"""A store filled the way a paper run fills it, through the profile's own writers, for the dashboard's test and bench.

Bars of a seeded random walk for each symbol, the features table's newest rows, and at
every ``decide_every``-th bar close: an ensemble prediction per symbol, a market order and
its fill at the next bar's open (slippage and fee), a risk event now and then, and a
``portfolio_state`` row at every close, all in the stored column order of
``flows.stores.schema``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from flows.feature_catalog import BAR_FEATURES
from flows.stores import Stores

START = datetime(2024, 1, 1, tzinfo=UTC)
RULES = ("max_position", "stale_data", "max_drawdown:halt", "max_drawdown:release", "kill_switch")


def bar_rows(symbols: Sequence[str], n: int, seed: int = 7, start: datetime = START) -> Iterator[list[tuple[Any, ...]]]:
    """Yield 1m bar rows, a day of every symbol at a time (``n`` bars per symbol)."""
    rng = random.Random(seed)
    price = {s: 100.0 * (i + 1) for i, s in enumerate(symbols)}
    day: list[tuple[Any, ...]] = []
    for k in range(n):
        ts = start + timedelta(minutes=k)
        for s in symbols:
            o = price[s]
            c = o * math.exp(rng.gauss(0.0, 0.001))
            price[s] = c
            v = 1.0 + rng.random()
            day.append((s, "1m", ts, o, max(o, c) * 1.0005, min(o, c) * 0.9995, c, v, v * c, 10, (o + c) / 2, v / 2))
        if len(day) >= 1440 * len(symbols) or k == n - 1:
            yield day
            day = []


def feature_rows(bars: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Return ``bar_features`` rows for bars (known at the bar's close; the values are placeholders)."""
    out = []
    for b in bars:
        known = b[2] + timedelta(minutes=1)
        out.append((b[0], b[1], known, known, *([0.1] * len(BAR_FEATURES))))
    return out


def decision_rows(bars: list[tuple[Any, ...]], state: dict[str, Any], run_id: str, decide_every: int,
                  order_confidence: float = 0.1) -> dict[str, list[tuple[Any, ...]]]:
    """Return the decision tables' rows of a batch of bars (``state`` carries the book between batches)."""
    out: dict[str, list[tuple[Any, ...]]] = {t: [] for t in ("predictions", "orders", "fills", "risk_events",
                                                             "portfolio_state")}
    rng = state.setdefault("rng", random.Random(11))
    book: dict[str, float] = state.setdefault("qty", {})
    prices: dict[str, float] = state.setdefault("prices", {})
    pending: list[tuple[Any, ...]] = state.setdefault("pending", [])
    by_time: dict[datetime, list[tuple[Any, ...]]] = {}
    for b in bars:
        by_time.setdefault(b[2], []).append(b)
    for ts, group in by_time.items():
        close_ts = ts + timedelta(minutes=1)
        opens = {b[0]: b[3] for b in group}
        for cid, sym, side, qty, decided in pending:  # orders of the previous close fill at this bar's open
            px = opens[sym] * (1 + (0.0002 if side == "buy" else -0.0002))
            fee = qty * px * 0.001
            state["cash"] -= (qty * px if side == "buy" else -qty * px) + fee
            book[sym] = book.get(sym, 0.0) + (qty if side == "buy" else -qty)
            out["fills"].append((f"f-{cid}", cid, ts, sym, side, qty, px, fee, "USDT", "taker", run_id))
            out["orders"].append((cid, decided, sym, side, "market", qty, None, "filled", None,
                                  "entry: signal", "paper", run_id, ts))
        pending.clear()
        for b in group:
            prices[b[0]] = b[6]
        state["n"] = n = state.get("n", 0) + 1
        if n % decide_every == 0:
            for b in group:
                p = min(0.99, max(0.01, 0.5 + rng.gauss(0.0, 0.08)))
                members = {"lightgbm": p + rng.gauss(0, 0.02), "lstm": p + rng.gauss(0, 0.03),
                           "gnn": p + rng.gauss(0, 0.03)}
                payload = orjson.dumps({"members": members, "rl_target": rng.uniform(-1, 1),
                                        "versions": {"ensemble": "v7", "lightgbm": "v3"}})
                conf = abs(p - 0.5) * 2
                out["predictions"].append((b[0], "1m", close_ts, "ensemble", "v7", p, conf, 1 if p > 0.5 else 0,
                                           payload, run_id))
                if conf > order_confidence:
                    side = "buy" if p > 0.5 else "sell"
                    cid = f"cs-{b[0].replace('/', '')}-{int(close_ts.timestamp())}"
                    pending.append((cid, b[0], side, 0.5 / b[6] * 100, close_ts))
                    out["orders"].append((cid, close_ts, b[0], side, "market", 0.5 / b[6] * 100, None, "new", None,
                                          "entry: signal", "paper", run_id, close_ts))
                if rng.random() < 0.05:
                    rule = RULES[rng.randrange(len(RULES))]
                    out["risk_events"].append((b[0], close_ts, rule, f"{rule} tripped at {b[6]:.2f}",
                                               1.0, 0.5, run_id))
        net = sum(q * prices[s] for s, q in book.items())
        gross = sum(abs(q) * prices[s] for s, q in book.items())
        equity = state["cash"] + net
        state["peak"] = peak = max(state.get("peak", equity), equity)
        out["portfolio_state"].append((close_ts, run_id, equity, state["cash"], gross, net, (peak - equity) / peak,
                                       0.0, 0.0, equity - state["initial"], orjson.dumps(book), gross / equity,
                                       orjson.dumps({"prices": prices, "qty": book})))
    return {t: rows for t, rows in out.items() if rows}


def fill_store(stores: Stores, symbols: Sequence[str], bars_per_symbol: int, run_id: str = "dash-run",
               decide_every: int = 1, initial_cash: float = 10_000.0, features_days: int = 1,
               events: bool = False, order_confidence: float = 0.1) -> int:
    """Write bars, the last ``features_days`` of features and the decision tables; return the bars written.

    ``events`` also publishes the decision rows to the profile's event bus (Redis streams).
    """
    history, decisions = stores.history_writer(), stores.decision_writer()
    bus = stores.event_bus() if events else None
    state: dict[str, Any] = {"cash": initial_cash, "initial": initial_cash}
    feature_from = START + timedelta(minutes=bars_per_symbol) - timedelta(days=features_days)
    written = 0
    try:
        for day in bar_rows(symbols, bars_per_symbol):
            tables: dict[str, list[tuple[Any, ...]]] = {"bars": day}
            if day[-1][2] >= feature_from:
                tables["bar_features"] = feature_rows([b for b in day if b[2] >= feature_from])
            history.write(tables)
            history.flush()
            rows = decision_rows(day, state, run_id, decide_every, order_confidence)
            decisions.write(rows)
            if bus is not None:
                bus.publish({t: bus.encode(t, r) for t, r in rows.items()})
            written += len(day)
    finally:
        history.close()
        decisions.close()
        if bus is not None:
            bus.close()
    return written
