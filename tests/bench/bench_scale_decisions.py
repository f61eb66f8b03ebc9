"""Section 2 of ``bench_scale.py``, the decision step: cost per close of the portfolio key at N symbols.

The live flow's decision step (:class:`flows.operators.decisions.DecisionStep` on ``build_deps``'
components: paper broker, portfolio, risk engine, the configured strategy; local profile) at N
symbols of the universe, every symbol predicted at every close (a seeded random walk, seeded
probabilities: dozens of orders per close at 200 symbols, protective legs off), median ms per close after a
warm-up.  Same run:

- ``before``: the key as it was (the order book scanning every open order for each symbol's bar;
  the gross and correlated caps of the held book only), against ``book_index`` (the book's
  per-symbol index alone: the digest of its fills equals ``before``'s) and ``after`` (the index,
  and caps that count the positions the close's earlier orders will hold: fewer orders where
  many symbols signal at once, so other fills) and ``caps_per_decision`` (``after`` with the caps'
  loops in Python over the other symbols at each decision, as before session 11: the gross cap's
  sum, the correlated symbols' lookups; the digest of its fills must equal ``after``'s, checked);
- the share of the key's time that depends on one symbol's state only (``parts``: ``after`` with
  timers): the breakers (stale data, price gap, volatility spike: fed each bar,
  asked at each decision) could shard by symbol exactly; the strategy's target is per symbol too,
  but its context is the position and equity after the same close's fills and marks, which the
  portfolio key makes (the rest: broker fills, marks, correlations, sizing, caps, orders, rows).

The timed closes (after the warm-up) find the seeded portfolio halted by its daily loss, flat at 200
symbols: the caps are not computed there.  ``*_trading_ms`` is the median over warm-up closes 10 to
100, while ~150 positions are held and the caps count them.
"""

from __future__ import annotations

import hashlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_scale import universe_symbols

from flows.execution.book import OrderBook
from flows.execution.orders import Order
from flows.operators.decisions import DecisionStep
from flows.records import Bar, Close, Fill, Prediction
from flows.risk import limits
from flows.settings import load_settings
from flows.wiring import build_deps

TF = 60_000
WARM = 100  # closes before timing: positions and open orders build up


def closes_of(symbols: tuple[str, ...], n_closes: int, seed: int = 7) -> list[Close]:
    """Return seeded closes: a random walk per symbol and a prediction of every symbol at each."""
    rng = np.random.default_rng(seed)
    n = len(symbols)
    px = np.linspace(10.0, 1000.0, n)
    out = []
    for k in range(n_closes):
        rets = rng.normal(0.0, 0.003, n)
        px = px * np.exp(rets)
        bars = tuple(Bar(s, "1m", k * TF, p, p * 1.001, p * 0.999, p, 100.0, 100.0 * p, 10, p, 50.0)
                     for s, p in zip(symbols, px.tolist(), strict=True))
        probs = rng.uniform(0.3, 0.7, n).tolist()
        preds = tuple(Prediction(s, "1m", (k + 1) * TF, {}, q, abs(q - 0.5) * 2, 1 if q > 0.55 else 0 if q < 0.45 else -1,
                                 float("nan"), {}, r, 0.004)
                      for s, q, r in zip(symbols, probs, rets.tolist(), strict=True))
        out.append(Close((k + 1) * TF, bars, preds))
    return out


def _scanning(book: OrderBook, symbol: str | None = None) -> list[Order]:
    """The order book's ``open_orders`` before the per-symbol index (the same orders, same order)."""
    orders = (book.orders[c] for c in book._open)
    return [o for o in orders if symbol in (None, o.intent.symbol)]


def _timed(spent: dict[str, float], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*a: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*a)
        finally:
            spent[name] += time.perf_counter() - t0

    return wrapped


class _SummedEachTime:
    """The gross cap's sums as before ``flows.risk.engine._Sums``: a ``sum()`` over the others at each decision."""

    def __init__(self, book: dict[str, float | None]) -> None:
        self.book, self.without = book, self
        self.names, self.at = list(book), {s: k for k, s in enumerate(book)}
        self.unmarked = [s for s in book if book[s] is None]
        self.total = 0.0  # not read: get sums the others whether or not the symbol is in the book

    def get(self, sym: str, total: float) -> float:
        return sum([v for s, v in self.book.items() if s != sym])  # type: ignore[misc]  # the engine's old sum


def _sums_each_time(risk: Any) -> None:
    book_of = risk._book

    def book(*a: Any) -> Any:
        out = book_of(*a)
        if not isinstance(risk._sums, _SummedEachTime) or risk._sums.book is not out:
            risk._sums = _SummedEachTime(out)
        return out

    risk._book = book


def _peers_looped(others: Any, index: dict[str, int], ok: list[bool]) -> list[str]:
    """``flows.risk.limits._peers_among`` as it was: a loop in Python over the other symbols."""
    return [s for s in others if (j := index.get(s)) is not None and ok[j]]


def _looping(on_closes: Callable[..., Any]) -> Callable[..., Any]:
    def run(*a: Any) -> Any:
        fast, limits._peers_among = limits._peers_among, _peers_looped
        try:
            return on_closes(*a)
        finally:
            limits._peers_among = fast

    return run


def _held_book_only(decide: Callable[..., Any]) -> Callable[..., Any]:
    """The risk engine's decide without the close's pending orders: the caps of the held book alone."""
    return lambda *a: decide(*a[:9])  # (symbol, ts, fraction, confidence, price, vol, snapshot, kill, correlations)


VARIANTS = {  # name -> (book scans every open order, caps count the close's pending orders, parts timed)
    "before": (True, False, False),  # main before issue 21's changes to the key
    "book_index": (False, False, False),  # the per-symbol index alone: the same orders and fills as before
    "after": (False, True, False),
    "parts": (False, True, True),  # "after" with the per-symbol parts timed (their timers cost a little)
    "caps_per_decision": (False, True, False),  # "after" with the gross cap's sum taken at each decision
}


def step_of(symbols: tuple[str, ...], data_dir: Path, variant: str, spent: dict[str, float]) -> DecisionStep:
    """Return the decision step on ``build_deps``' components (local profile), as ``variant`` has it."""
    scans, pending, parts = VARIANTS[variant]
    settings = load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(data_dir / variant),
                                  "CRYPTOSTREAM_SYMBOLS": ",".join(symbols), "CRYPTOSTREAM_PROFILE": "local"})
    deps = build_deps(settings)
    risk: Any = deps.risk
    if scans:
        book = deps.broker.book  # type: ignore[attr-defined]
        book.open_orders = lambda symbol=None: _scanning(book, symbol)
    if not pending:
        risk.decide = _held_book_only(risk.decide)
    if variant == "caps_per_decision":
        _sums_each_time(risk)
    if parts:
        breakers, strategy = risk.breakers, deps.strategy
        breakers.on_bars = _timed(spent, "breakers", breakers.on_bars)
        breakers.tripped = _timed(spent, "breakers", breakers.tripped)
        strategy.decide = _timed(spent, "strategy", strategy.decide)  # type: ignore[method-assign]
    step = DecisionStep(symbols, TF, deps)
    if variant == "caps_per_decision":
        step.on_closes = _looping(step.on_closes)  # type: ignore[method-assign]
    return step


def decision_key_per_close(n: int, closes: int) -> dict[str, Any]:
    """Return the portfolio key's median ms per close at ``n`` symbols per variant, fills digests, part shares.

    The variants work each close in turn (lockstep), so a change of the machine's load hits all alike.
    """
    symbols = universe_symbols(n)
    data = closes_of(symbols, WARM + closes)
    spent = {"breakers": 0.0, "strategy": 0.0}
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    digests = {v: hashlib.sha256() for v in VARIANTS}
    fills = dict.fromkeys(VARIANTS, 0)
    with tempfile.TemporaryDirectory(prefix="bench_scale_decisions_") as d:
        steps = {v: step_of(symbols, Path(d), v, spent) for v in VARIANTS}
        for k, c in enumerate(data):
            if k == WARM:
                spent.update(dict.fromkeys(spent, 0.0))
            for v, step in steps.items():
                t0 = time.perf_counter()
                out = step.on_closes([c])
                times[v].append(time.perf_counter() - t0)
                done = [o for o in out if isinstance(o, Fill)]
                digests[v].update(repr(done).encode())
                fills[v] += len(done)
    res: dict[str, Any] = {f"{v}_ms": statistics.median(t[WARM:]) * 1e3 for v, t in times.items()}
    res.update({f"{v}_fills": f"{fills[v]} {h.hexdigest()[:12]}" for v, h in digests.items()})
    if res["after_fills"] != res["caps_per_decision_fills"]:
        raise AssertionError(f"the book's sums changed the fills: {res['after_fills']} vs "
                             f"{res['caps_per_decision_fills']} summed at each decision")
    res.update({f"{v}_trading_ms": statistics.median(t[10:WARM]) * 1e3 for v, t in times.items()})
    res["before_over_after"] = res["before_ms"] / res["after_ms"]
    res["caps_per_decision_over_after_trading"] = res["caps_per_decision_trading_ms"] / res["after_trading_ms"]
    res["before_over_book_index"] = res["before_ms"] / res["book_index_ms"]
    parts_total = sum(times["parts"][WARM:])
    res.update({f"{name}_share": t / parts_total for name, t in spent.items()})
    return res
