"""The risk engine's correlations as matrices equal the dictionary of pairs they replace, bit for bit (issue 21)."""

from __future__ import annotations

import random

from flows.portfolio import Portfolio
from flows.risk.config import LimitsConfig, RiskConfig
from flows.risk.engine import RiskEngine
from flows.risk.limits import Correlations
from tests.kit.risk_reference import PairCorrelations

TF = 60_000


def _feed(seed: int, n: int, bars: int) -> list[tuple[str, int, float]]:
    """Bars of ``n`` symbols: shuffled within a bar time, some missing, some late, a NaN, repeats."""
    rng = random.Random(seed)
    symbols = [f"S{i:03d}/USDT" for i in range(n)]
    out = []
    for k in range(bars):
        f = rng.gauss(0, 0.002)
        row = [(s, k * TF, f + rng.gauss(0, 0.002)) for s in symbols if rng.random() > 0.1]
        rng.shuffle(row)
        out += row
        if rng.random() < 0.2 and k:
            out.append((rng.choice(symbols), (k - 1) * TF, 0.001))  # late: a bar time already passed
        if rng.random() < 0.1:
            out.append((rng.choice(symbols), k * TF, float("nan")))
        if rng.random() < 0.1 and row:
            out.append(row[0])  # a repeat
    return out


def test_matrix_correlations_equal_the_pairs_bit_for_bit() -> None:
    cfg = LimitsConfig(correlation_min_bars=5, correlation_threshold=0.3)
    new, old = Correlations(cfg), PairCorrelations(cfg)
    symbols = [f"S{i:03d}/USDT" for i in range(30)] + ["NEVER/USDT"]
    for step, (s, ts, r) in enumerate(_feed(3, 30, 120)):
        new.on_bar(s, ts, r)
        old.on_bar(s, ts, r)
        if step % 97 == 0:  # reads between bars of one time flush the held updates
            a, b = symbols[step % 30], symbols[(step * 7) % 30]
            assert new.corr(a, b) == old.corr(a, b)
    for a in symbols:
        assert new.correlated(a, symbols, None) == old.correlated(a, symbols, None)
        for b in symbols:
            assert new.corr(a, b) == old.corr(a, b)
    given = {symbols[1]: 0.9, symbols[2]: float("nan")}
    assert new.correlated(symbols[0], symbols, given) == old.correlated(symbols[0], symbols, given)
    state, ref = new.to_state(), old.to_state()
    assert state["last"] == {s: list(v) for s, v in ref["last"].items()}
    assert sorted(map(tuple, state["pairs"])) == sorted(map(tuple, ref["pairs"]))
    back = Correlations(cfg)
    back.restore(state)
    assert back.to_state() == state
    for s, ts, r in _feed(4, 30, 20):
        back.on_bar(s, ts + 200 * TF, r)
        old.on_bar(s, ts + 200 * TF, r)
    assert all(back.corr(a, b) == old.corr(a, b) for a in symbols for b in symbols)


def test_engine_decisions_at_200_symbols_match_the_pair_form() -> None:
    cfg = RiskConfig.model_validate({"sizing": {"method": "fixed_fraction", "fixed_fraction": 0.15},
                                     "limits": {"max_gross_leverage": 1.0, "max_correlated_fraction": 0.3}})
    engines = RiskEngine(cfg), RiskEngine(cfg)
    engines[1].correlations = PairCorrelations(cfg.limits)  # type: ignore[assignment]
    books = Portfolio(100_000.0), Portfolio(100_000.0)
    rng = random.Random(5)
    symbols = [f"S{i:03d}/USDT" for i in range(200)]
    px = {s: 10.0 + i for i, s in enumerate(symbols)}
    decisions: list[list[tuple[float, float, tuple[str, ...]]]] = [[], []]
    for k in range(40):
        f = rng.gauss(0, 0.003)
        rets = {s: f * (1 + (i % 4)) / 2 + rng.gauss(0, 0.002) for i, s in enumerate(symbols)}
        for s in symbols:
            px[s] *= 1 + rets[s]
        for engine, book, out in zip(engines, books, decisions, strict=True):
            for s in symbols:
                engine.on_bar(s, k * TF, rets[s])
            book.mark(px, (k + 1) * TF)
            snap = book.snapshot()
            for s in symbols:
                d = engine.decide(s, (k + 1) * TF, 1.0 if rets[s] > 0 else -0.5, 0.8, px[s], 0.01, snap, False)
                out.append((d.target_qty, d.approved_qty_delta, tuple(r.reason for r in d.rejections)))
                if d.approved_qty_delta:
                    book.apply_fill(s, "buy" if d.approved_qty_delta > 0 else "sell", abs(d.approved_qty_delta),
                                    px[s], 0.0, (k + 1) * TF)
    assert decisions[0] == decisions[1]
    assert any("correlated" in r for _, _, rs in decisions[0] for r in rs)  # the limit did bind
