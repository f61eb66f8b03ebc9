"""Section 2 of ``bench_scale.py``, the decision step: cost per close of the portfolio key at N symbols.

The live flow's decision step (:class:`flows.operators.decisions.DecisionStep` on ``build_deps``'
components: paper broker, portfolio, risk engine, the configured strategy; local profile) at N
symbols of the universe, every symbol predicted at every close (a seeded random walk, seeded
probabilities: a few dozen orders per close, protective legs off), median ms per close after a
warm-up.  Same run:

- the baseline: the order book before its per-symbol index (every open order scanned for each
  symbol's bar), with the digest of both runs' fills (orders and fills identical);
- the share of the key's time that depends on one symbol's state only, timed in a third run
  inside the same closes: the breakers (stale data, price gap, volatility spike: fed each bar,
  asked at each decision) could shard by symbol exactly; the strategy's target is per symbol too,
  but its context is the position and equity after the same close's fills and marks, which the
  portfolio key makes (the rest: broker fills, marks, correlations, sizing, caps, orders, rows).
"""

from __future__ import annotations

import hashlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from bench_scale import universe_symbols

from flows.execution.book import OrderBook
from flows.execution.orders import Order
from flows.operators.decisions import DecisionStep
from flows.records import Bar, Close, Fill, Prediction
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


@contextmanager
def _book_scans() -> Iterator[None]:
    indexed = OrderBook.open_orders
    OrderBook.open_orders = _scanning  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        OrderBook.open_orders = indexed  # type: ignore[method-assign]


def _timed(spent: dict[str, float], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*a: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*a)
        finally:
            spent[name] += time.perf_counter() - t0

    return wrapped


def run_key(symbols: tuple[str, ...], closes: list[Close], data_dir: Path,
            spent: dict[str, float] | None = None) -> tuple[float, str, float]:
    """Return (median ms per close after :data:`WARM`, digest of the fills, seconds of those closes).

    ``spent`` collects the seconds of the timed parts over the same closes.
    """
    settings = load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(data_dir), "CRYPTOSTREAM_SYMBOLS": ",".join(symbols),
                                  "CRYPTOSTREAM_PROFILE": "local"})
    deps = build_deps(settings)
    step = DecisionStep(symbols, TF, deps)
    if spent is not None:
        breakers, strategy = deps.risk.breakers, deps.strategy  # type: ignore[attr-defined]
        breakers.on_bars = _timed(spent, "breakers", breakers.on_bars)
        breakers.tripped = _timed(spent, "breakers", breakers.tripped)
        strategy.decide = _timed(spent, "strategy", strategy.decide)  # type: ignore[method-assign]
    digest, times = hashlib.sha256(), []
    for k, c in enumerate(closes):
        if k == WARM and spent is not None:
            spent.update(dict.fromkeys(spent, 0.0))
        t0 = time.perf_counter()
        out = step.on_closes([c])
        times.append(time.perf_counter() - t0)
        digest.update(repr([o for o in out if isinstance(o, Fill)]).encode())
    return statistics.median(times[WARM:]) * 1e3, digest.hexdigest()[:12], sum(times[WARM:])


def decision_key_per_close(n: int, closes: int) -> dict[str, Any]:
    """Return the portfolio key's ms per close at ``n`` symbols, the baseline, and the per-symbol shares."""
    symbols = universe_symbols(n)
    data = closes_of(symbols, WARM + closes)
    spent = {"breakers": 0.0, "strategy": 0.0}
    with tempfile.TemporaryDirectory(prefix="bench_scale_decisions_") as d:
        ms, fills, _ = run_key(symbols, data, Path(d) / "indexed")
        with _book_scans():
            ms_before, fills_before, _ = run_key(symbols, data, Path(d) / "scanning")
        _, _, total = run_key(symbols, data, Path(d) / "parts", spent)
    return {"ms": ms, "ms_scanning_book": ms_before, "ratio": ms_before / ms, "fills_equal": fills == fills_before,
            "fills_digest": fills, "breakers_share": spent["breakers"] / total,
            "strategy_share": spent["strategy"] / total}
