"""Risk engine properties: no decision breaches a configured limit; blocks and the kill switch stop new risk.

Books, limits, return histories and requests are drawn by hypothesis; every
limit is re-checked here from the portfolio snapshot (exposures, correlations
with numpy), not with the engine's helpers.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from flows.portfolio import Portfolio
from flows.risk.config import RiskConfig
from flows.risk.engine import RiskEngine

SYMS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
TF = 60_000
H = 3_600_000
RULES = {"kill_switch", "stale_data", "price_gap", "volatility_spike", "max_drawdown", "max_daily_loss",
         "equity", "max_position", "max_gross_leverage", "max_correlated_exposure", "invalid_input", "min_order"}
REL = 1e-9


@st.composite
def configs(draw: Any) -> RiskConfig:
    groups = {s: g for s in SYMS if (g := draw(st.sampled_from([None, "majors", "alts"]))) is not None}
    return RiskConfig.model_validate({
        "sizing": {"method": draw(st.sampled_from(["full_kelly", "half_kelly", "quarter_kelly", *["fixed_fraction"] * 3])),
                   "vol_target": draw(st.floats(0.1, 5.0)),
                   "fixed_fraction": draw(st.floats(0.05, 1.0)),
                   "stop_loss_pct": draw(st.one_of(st.none(), st.floats(0.005, 0.2))),
                   "max_position_fraction": draw(st.floats(0.05, 3.0)),
                   "min_rebalance_fraction": draw(st.floats(0.0, 0.05)), "prior_trades": 5},
        "limits": {"max_position_fraction": draw(st.floats(0.05, 1.5)),
                   "max_gross_leverage": draw(st.floats(0.2, 3.0)),
                   "max_correlated_fraction": draw(st.floats(0.1, 2.0)),
                   "max_drawdown": draw(st.floats(0.02, 0.5)), "max_daily_loss": draw(st.floats(0.01, 0.3)),
                   "groups": groups, "correlation_threshold": draw(st.floats(0.0, 0.99)),
                   "correlation_halflife_bars": draw(st.floats(3.0, 60.0)),
                   "correlation_min_bars": 10},
        "breakers": {"warmup_bars": 10, "gap_sigma": draw(st.floats(2.0, 8.0)), "stale_bars": 3},
    })


@st.composite
def books(draw: Any) -> dict[str, Any]:
    n_bars = draw(st.integers(0, 60))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    betas = rng.uniform(-1.5, 1.5, len(SYMS))
    factor = rng.normal(0, 0.01, n_bars)
    rets = betas[:, None] * factor + rng.normal(0, 0.01, (len(SYMS), n_bars)) * rng.uniform(0.05, 1.5, (3, 1))
    rets[:, rng.random(n_bars) < draw(st.floats(0.0, 0.2))] = 0.0  # flat bars (stale feed)
    if n_bars and draw(st.booleans()):
        rets[rng.integers(0, 3), n_bars - rng.integers(1, min(n_bars, 6) + 1)] = 0.2  # a gap
    return {
        "rets": rets, "seed": seed,
        "fills": draw(st.lists(st.tuples(st.sampled_from(SYMS), st.floats(-2.0, 2.0)), max_size=6)),
        "moves": [draw(st.floats(0.3, 2.0)) for _ in SYMS],
        "hours": draw(st.integers(1, 30)),
        "trade_returns": draw(st.lists(st.floats(-0.2, 0.2), max_size=30)),
        "skip_last": draw(st.sampled_from([None] * 9 + list(SYMS))),  # a symbol whose last bars never came
    }


Fed = dict[str, dict[int, float]]


def build(cfg: RiskConfig, book: dict[str, Any]) -> tuple[RiskEngine, Portfolio, dict[str, float], int, Fed]:
    """Feed the bars closing up to ``T`` (hours after the first mark), book the fills; return the state at ``T``."""
    eng = RiskEngine(cfg)
    rets = book["rets"]
    n = rets.shape[1]
    start = {s: 100.0 * (i + 1) for i, s in enumerate(SYMS)}
    t_end = book["hours"] * H
    fed: Fed = {s: {} for s in SYMS}
    for k in range(n):
        for i, s in enumerate(SYMS):
            if s == book["skip_last"] and k >= n - 4:
                continue
            eng.on_bar(s, t_end - (n - k) * TF, float(rets[i, k]))
            fed[s][t_end - (n - k) * TF] = float(rets[i, k])
    p = Portfolio(10_000.0)
    for i, r in enumerate(book["trade_returns"]):  # closed round trips feed Kelly
        p.apply_fill("XRP/USDT", "buy", 1.0, 10.0, 0.0, i)
        p.apply_fill("XRP/USDT", "sell", 1.0, 10.0 * (1 + r), 0.0, i)
    for s, frac in book["fills"]:
        if frac:
            p.apply_fill(s, "buy" if frac > 0 else "sell", abs(frac) * 10_000.0 / start[s], start[s], 1.0, 0)
    p.mark(start, 0)
    prices = {s: start[s] * m for s, m in zip(SYMS, book["moves"], strict=True)}
    p.mark(prices, t_end)
    return eng, p, prices, t_end, fed


def ewma_corr(x: np.ndarray, y: np.ndarray, halflife: float) -> float | None:
    """Zero-mean exponentially weighted correlation, the first value taken as the start."""
    a = 1.0 - 0.5 ** (1.0 / halflife)
    n = len(x)
    w = a * (1.0 - a) ** np.arange(n - 1, -1, -1)
    w[0] = (1.0 - a) ** (n - 1)
    sxx, syy = float(w @ (x * x)), float(w @ (y * y))
    return None if sxx <= 0 or syy <= 0 else float(w @ (x * y)) / math.sqrt(sxx * syy)


def corr_set(cfg: RiskConfig, fed: Fed, sym: str, held: dict[str, float], given: dict[str, float] | None) -> list[str]:
    """Symbols certainly correlated with ``sym`` (groups, given or numpy correlations clear of the threshold)."""
    lim = cfg.limits
    out = []
    for s in held:
        if s == sym or held[s] == 0.0:
            continue
        if lim.groups.get(sym) is not None and lim.groups.get(sym) == lim.groups.get(s):
            out.append(s)
            continue
        if given is not None and s in given:
            c: float | None = given[s]
        else:
            common = sorted(set(fed.get(sym, {})) & set(fed.get(s, {})))
            if len(common) < lim.correlation_min_bars:
                continue
            c = ewma_corr(np.array([fed[sym][t] for t in common]), np.array([fed[s][t] for t in common]),
                          lim.correlation_halflife_bars)
        if c is not None and abs(c) >= lim.correlation_threshold + 1e-9:
            out.append(s)
    return out


requests = st.tuples(st.sampled_from(SYMS), st.floats(-1.0, 1.0), st.floats(0.0, 1.0),
                     st.one_of(st.just(math.nan), st.floats(0.0, 0.1)), st.sampled_from([False] * 9 + [True]),
                     st.one_of(st.none(), st.dictionaries(st.sampled_from(SYMS), st.floats(-1.0, 1.0))))


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs(), books(), requests)
def test_no_decision_ever_breaches_a_configured_limit(cfg: RiskConfig, book: dict[str, Any], req: Any) -> None:
    sym, fraction, confidence, vol, kill, given_corr = req
    eng, p, prices, ts, fed = build(cfg, book)
    snap = p.snapshot()
    d = eng.decide(sym, ts, fraction, confidence, prices[sym], vol, snap, kill, given_corr)
    lim, eq, px = cfg.limits, snap.equity, prices[sym]
    held = dict(snap.positions)
    q0 = held.get(sym, 0.0)
    q1 = q0 + d.approved_qty_delta
    assert d.target_qty == pytest.approx(q1, rel=1e-12, abs=1e-12)
    increased = abs(q1) > abs(q0) * (1 + REL) + 1e-12 or q1 * q0 < 0
    blocked = (kill or eq <= 0 or snap.drawdown >= lim.max_drawdown
               or (snap.daily_pnl < 0 and -snap.daily_pnl / (eq - snap.daily_pnl) >= lim.max_daily_loss)
               or bool(eng.breakers.tripped(sym, ts)))
    if blocked:
        assert not increased, "a block or the kill switch let new risk through"
    others = [s for s in held if s != sym and held[s] != 0.0]
    gross_other = sum(abs(held[s]) * prices[s] for s in others)
    if eq > 0:  # a breach smaller than the order floor is no order: it may be held
        floor = cfg.sizing.min_order_fraction * eq + 1e-9
        assert abs(q1) * px <= lim.max_position_fraction * eq * (1 + REL) + floor
        assert gross_other + abs(q1) * px <= max(lim.max_gross_leverage * eq, gross_other) * (1 + REL) + floor
        group = corr_set(cfg, fed, sym, held, given_corr)
        used = sum(abs(held[s]) * prices[s] for s in group)
        assert used + abs(q1) * px <= max(lim.max_correlated_fraction * eq, used) * (1 + REL) + floor
    rules = [r.rule for r in d.rejections]
    assert len(rules) == len(set(rules)), "one rejection per rule and decision"
    for r in d.rejections:
        event(r.rule)
        assert r.rule in RULES and isinstance(r.reason, str) and r.reason
        assert (r.symbol, r.bar_ts) == (sym, ts) and r.requested != r.allowed
    if d.rejections:
        assert d.rejections[-1].allowed == pytest.approx(d.approved_qty_delta, rel=1e-12, abs=1e-12)


@settings(max_examples=300, deadline=None)
@given(configs(), books(), requests, st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_size_is_monotone_in_confidence_and_never_above_the_caps(cfg: RiskConfig, book: dict[str, Any], req: Any,
                                                                  c1: float, c2: float) -> None:
    sym, fraction, _, vol, _, _ = req
    eng, _, prices, ts, _ = build(cfg, {**book, "fills": []})
    fresh = Portfolio(10_000.0)
    fresh.mark(prices, ts)
    snap = fresh.snapshot()
    lo, hi = sorted((c1, c2))
    a = eng.decide(sym, ts, fraction, lo, prices[sym], vol, snap, False)
    b = eng.decide(sym, ts, fraction, hi, prices[sym], vol, snap, False)
    cap = min(cfg.sizing.max_position_fraction, cfg.limits.max_position_fraction) * 10_000.0 / prices[sym]
    assert abs(a.target_qty) <= abs(b.target_qty) * (1 + REL) + 1e-12
    assert abs(b.target_qty) <= cap * (1 + REL)
    assert a.target_qty * fraction >= 0 and b.target_qty * fraction >= 0, "the size follows the target's side"


def test_kill_switch_blocks_increases_allows_reductions_and_flattens() -> None:
    doc: dict[str, Any] = {"sizing": {"method": "fixed_fraction", "fixed_fraction": 0.5, "max_position_fraction": 0.5},
                           "limits": {"max_position_fraction": 0.5}}
    eng = RiskEngine(RiskConfig.model_validate(doc))
    for k in range(5):
        eng.on_bar("BTC/USDT", k * TF, 0.001 * (-1) ** k)
    p = Portfolio(10_000.0)
    p.apply_fill("BTC/USDT", "buy", 5.0, 100.0, 0.0, 0)
    p.mark({"BTC/USDT": 100.0}, 5 * TF)
    snap = p.snapshot()
    free = eng.decide("BTC/USDT", 5 * TF, 1.0, 1.0, 100.0, math.nan, snap, False)
    assert free.target_qty == pytest.approx(50.0) and free.rejections == (), "half the equity at 100"
    up = eng.decide("BTC/USDT", 5 * TF, 1.0, 1.0, 100.0, math.nan, snap, True)
    assert up.approved_qty_delta == 0.0 and up.target_qty == 5.0
    assert [r.rule for r in up.rejections] == ["kill_switch"] and up.rejections[0].allowed == 0.0
    assert up.rejections[0].requested == pytest.approx(45.0)
    down = eng.decide("BTC/USDT", 5 * TF, 0.04, 1.0, 100.0, math.nan, snap, True)
    assert down.target_qty == pytest.approx(2.0) and down.rejections == (), "reductions pass"
    flip = eng.decide("BTC/USDT", 5 * TF, -1.0, 1.0, 100.0, math.nan, snap, True)
    assert flip.target_qty == 0.0 and flip.approved_qty_delta == -5.0, "a flip stops at flat"
    flat = RiskEngine(RiskConfig.model_validate({**doc, "kill_switch": {"flatten": True}}))
    out = flat.decide("BTC/USDT", 5 * TF, 1.0, 1.0, 100.0, math.nan, snap, True)
    assert out.target_qty == 0.0 and out.approved_qty_delta == -5.0 and out.rejections[0].rule == "kill_switch"
    # A flat symbol asked to stay flat: nothing to trade and nothing cut, whatever blocks it (no ETH bar yet).
    assert flat.decide("ETH/USDT", 5 * TF, 0.0, 1.0, 50.0, math.nan, snap, True) == (0.0, 0.0, ())
    assert [r.rule for r in flat.decide("ETH/USDT", 5 * TF, 0.5, 1.0, 50.0, math.nan, snap, False).rejections] == \
        ["stale_data"]
    assert flat.decide("BTC/USDT", 5 * TF, 0.0, 1.0, 100.0, math.nan, snap, False).approved_qty_delta == -5.0


def test_invalid_inputs_trade_nothing_and_say_which_field() -> None:
    eng, snap = RiskEngine(), Portfolio(1_000.0).snapshot()
    for args, field in (((1.0, 0.5, math.nan), "price"), ((math.nan, 0.5, 10.0), "target_fraction"),
                        ((1.0, math.nan, 10.0), "confidence")):
        d = eng.decide("BTC/USDT", TF, args[0], args[1], args[2], 0.01, snap, False)
        assert d.approved_qty_delta == 0.0 and d.rejections[0].rule == "invalid_input"
        assert field in d.rejections[0].reason


@settings(max_examples=60, deadline=None)
@given(configs(), books())
def test_state_round_trip_gives_the_same_decisions(cfg: RiskConfig, book: dict[str, Any]) -> None:
    eng, p, prices, ts, _ = build(cfg, book)
    back = RiskEngine.from_state(json.loads(json.dumps(eng.to_state())))
    assert back.to_state() == eng.to_state() and back.config == cfg
    for s in SYMS:
        eng.on_bar(s, ts, 0.003)
        back.on_bar(s, ts, 0.003)
        snap = p.snapshot()
        assert eng.decide(s, ts + TF, 0.8, 0.7, prices[s], math.nan, snap, False) == \
            back.decide(s, ts + TF, 0.8, 0.7, prices[s], math.nan, snap, False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(SYMS), st.integers(0, 40),
                          st.one_of(st.floats(-0.2, 0.2), st.just(0.0), st.just(math.nan), st.just(math.inf))),
                min_size=1, max_size=120),
       st.integers(1, 7))
@example([("BTC/USDT", 0, 0.01), ("ETH/USDT", 1, 0.02), ("SOL/USDT", 2, 0.01), ("SOL/USDT", 3, 0.01),
          ("ETH/USDT", 3, -0.02), ("BTC/USDT", 3, 0.03)], 6)  # arrivals against ``last``'s order: new pairs' order
def test_on_bars_is_on_bar_of_each_in_order(bars: list[tuple[str, int, float]], batch: int) -> None:
    """A close's bars fed at once (the decision step's call) leave the state of feeding them one by one."""
    cfg = RiskConfig.model_validate({"breakers": {"warmup_bars": 3, "gap_sigma": 2.0, "spike_ratio": 1.5,
                                                  "stale_bars": 2}})
    one, many = RiskEngine(cfg), RiskEngine(cfg)
    rows = [(s, k * TF, r) for s, k, r in bars]
    for s, t, r in rows:
        one.on_bar(s, t, r)
    for i in range(0, len(rows), batch):
        many.on_bars(rows[i:i + batch])
    assert repr(many.to_state()) == repr(one.to_state())
    assert many.breakers.bar_ms == one.breakers.bar_ms


def _market(seed: int, closes: int, symbols: tuple[str, ...], odd: float) -> list[list[tuple[str, int, float]]]:
    """Closes of bars (symbol, open time, return): mostly regular, with calm and wild stretches, flat runs,
    and (``odd`` times as often as 1) NaN and infinite returns, missing, repeated and late bars, gaps in
    time; a symbol joins late."""
    rng = np.random.default_rng(seed)
    out, t = [], 0
    scale = 0.002
    for k in range(closes):
        t += TF * (1 if rng.random() > 0.02 * odd else int(rng.integers(2, 6)))  # now and then a gap in time
        if rng.random() < 0.03:
            scale = float(rng.choice([0.0005, 0.002, 0.02]))  # calm, normal, wild: gaps and spikes trip
        bars = []
        for s in symbols:
            if s == symbols[-1] and k < closes // 3:
                continue  # joins later
            r = float(rng.normal(0.0, scale))
            u = rng.random()
            if u < 0.01 * odd:
                r = math.nan
            elif u < 0.015 * odd:
                r = math.inf
            elif u < 0.06:
                r = 0.0
            if rng.random() < 0.01 * odd:
                continue  # a missing bar
            bars.append((s, t, r))
        if rng.random() < 0.01 * odd and bars:
            bars.append(bars[0])  # a repeated bar
        if rng.random() < 0.01 * odd and bars:
            bars.append((bars[-1][0], t - 3 * TF, 0.01))  # a late bar
        out.append(bars)
    return out


@pytest.mark.parametrize(("seed", "odd"), [(0, 1.0), (1, 1.0), (2, 0.1), (3, 0.1), (4, 0.02), (5, 0.0)])
def test_queued_bars_applied_in_runs_leave_the_state_of_on_bar_each(seed: int, odd: float) -> None:
    """Closes fed with on_bars and read now and then (the runs per symbol and pair) match on_bar bar by bar."""
    cfg = RiskConfig.model_validate({"breakers": {"warmup_bars": 20, "gap_sigma": 3.0, "spike_ratio": 1.6,
                                                  "stale_bars": 3, "cooldown_bars": 4},
                                     "limits": {"correlation_min_bars": 10}})
    syms = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "DOGE/USDT")
    one, many = RiskEngine(cfg), RiskEngine(cfg)
    rng = np.random.default_rng(100 + seed)
    for k, bars in enumerate(_market(seed, 1500, syms, odd)):
        for s, t, r in bars:
            one.on_bar(s, t, r)
        many.on_bars(bars)
        if rng.random() < 0.01 or k % 700 == 699:  # a read: the queue is applied as it stands
            ts = bars[-1][1] + TF if bars else 0
            for s in syms:
                assert many.breakers.tripped(s, ts) == one.breakers.tripped(s, ts)
                assert many.correlations.correlated(s, syms, None) == one.correlations.correlated(s, syms, None)
            assert repr(many.to_state()) == repr(one.to_state())
    assert repr(many.to_state()) == repr(one.to_state())


def test_a_regular_stretch_goes_through_the_runs() -> None:
    """Regular closes queued long enough reach the breakers and pairs as runs (the fast path is taken)."""
    from flows.risk import breakers, limits

    calls = {"series": 0, "stretch": 0}
    series, stretch = breakers.Breakers._series, limits.PairCorrelations._stretch

    def count(name: str, f: Any) -> Any:
        def wrapped(*a: Any) -> Any:
            done = f(*a)
            calls[name] += bool(done)
            return done
        return wrapped

    eng, ref = RiskEngine(), RiskEngine()
    rng = np.random.default_rng(3)
    try:
        breakers.Breakers._series = count("series", series)  # type: ignore[method-assign]
        limits.PairCorrelations._stretch = count("stretch", stretch)  # type: ignore[method-assign]
        for k in range(600):
            bars = [(s, k * TF, float(rng.normal(0, 0.01))) for s in SYMS]
            eng.on_bars(bars)
            ref.on_bars(bars)
            ref.to_state()  # read at every close: close by close
        assert repr(eng.to_state()) == repr(ref.to_state())
    finally:
        breakers.Breakers._series, limits.PairCorrelations._stretch = series, stretch  # type: ignore[method-assign]
    assert calls["series"] >= len(SYMS) and calls["stretch"] >= 1
