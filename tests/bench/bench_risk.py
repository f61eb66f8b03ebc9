"""Benchmark: the risk engine and portfolio per bar close, against naive sizing in the same run.

A seeded market of N symbols (1m bars, all positions open after warm-up); each
close feeds every bar to the engine, marks the portfolio, decides every symbol
(sizing, breakers, limits, correlations), books the previous close's approved
changes as fills first, and takes the portfolio row (``snapshot`` + ``to_state``), as the
decision step does.  The baseline does the same bookkeeping with naive sizing
(``target = fraction * 10 % of equity / price``, no limits).

Usage::

    .venv/bin/python tests/bench/bench_risk.py [--symbols 5] [--closes 5000] [--seed 7]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np

from flows.portfolio import Portfolio
from flows.risk.config import RiskConfig
from flows.risk.engine import RiskEngine

TF = 60_000


def run(symbols: list[str], rets: list[list[float]], decide: Callable[..., float], engine: RiskEngine | None,
        ) -> tuple[float, float, int]:
    """Return (seconds in total, seconds in decisions, decisions)."""
    p = Portfolio(100_000.0)
    px = {s: 100.0 * (i + 1) for i, s in enumerate(symbols)}
    t_dec, n_dec = 0.0, 0
    orders: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    for k, row in enumerate(rets):
        for s, r in zip(symbols, row, strict=True):
            px[s] *= math.exp(r)
            if engine is not None:
                engine.on_bar(s, k * TF, r)
        ts = (k + 1) * TF
        for s, delta in orders:  # the previous close's orders fill at this bar (at its close, for simplicity)
            p.apply_fill(s, "buy" if delta > 0 else "sell", abs(delta), px[s], abs(delta) * px[s] * 1e-3, ts)
        p.mark(px, ts)
        orders = []
        for s, r in zip(symbols, row, strict=True):
            a = time.perf_counter()
            delta = decide(s, ts, 1.0 if r > 0 else -1.0, 0.7, px[s], p.snapshot())
            t_dec += time.perf_counter() - a
            n_dec += 1
            if delta:
                orders.append((s, delta))
        p.snapshot()
        p.to_state()
    return time.perf_counter() - t0, t_dec, n_dec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--symbols", type=int, default=5)
    ap.add_argument("--closes", type=int, default=5_000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    symbols = [f"S{i}/USDT" for i in range(args.symbols)]
    rng = np.random.default_rng(args.seed)
    factor = rng.normal(0, 0.002, (args.closes, 1))
    rets = (factor * rng.uniform(0.5, 1.5, args.symbols) + rng.normal(0, 0.002, (args.closes, args.symbols))).tolist()
    cfg = RiskConfig.model_validate({"sizing": {"method": "fixed_fraction", "fixed_fraction": 0.15}})
    engine = RiskEngine(cfg)

    def risk(s: str, ts: int, frac: float, conf: float, price: float, snap: object) -> float:
        return engine.decide(s, ts, frac, conf, price, 0.01, snap, False).approved_qty_delta

    def naive(s: str, ts: int, frac: float, conf: float, price: float, snap: object) -> float:
        held = snap.positions.get(s, 0.0)  # type: ignore[attr-defined]
        return frac * 0.1 * snap.equity / price - held  # type: ignore[attr-defined]

    base_total, base_dec, n = run(symbols, rets, naive, None)
    total, dec, n = run(symbols, rets, risk, engine)
    bars = args.closes * args.symbols
    print(f"{args.symbols} symbols, {args.closes} closes ({bars} bars), seed {args.seed}")
    print(f"{'figure':44} {'risk engine':>12} {'naive sizing':>13} {'ratio':>7}")
    for name, a, b in (("decision (snapshot + decide), us", dec / n * 1e6, base_dec / n * 1e6),
                       ("per close (bars, mark, decisions, row), us", total / args.closes * 1e6,
                        base_total / args.closes * 1e6),
                       ("bars per second (risk + portfolio only)", bars / total, bars / base_total)):
        print(f"{name:44} {a:12.1f} {b:13.1f} {a / b:7.2f}")


if __name__ == "__main__":
    main()
