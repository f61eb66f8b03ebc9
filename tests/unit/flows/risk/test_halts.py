"""Halts release: halted -> cooldown -> probation at reduced size -> active; every step is an event."""

from __future__ import annotations

from flows.risk.halts import HaltRules, Halts

H = 3_600_000
RULES = HaltRules(max_drawdown=0.15, max_daily_loss=0.05, cooldown_bars=24, probation_bars=48, probation_scale=0.25)


def run(halts: Halts, equities: list[float], start: int = 0, daily: list[float] | None = None) -> list[tuple]:
    out = []
    for i, eq in enumerate(equities):
        ts = (start + i) * H
        for e in halts.on_close(ts, eq, (daily or [0.0] * len(equities))[i], H):
            out.append((start + i, e.rule, e.kind))
    return out


def test_a_drawdown_halt_cools_down_then_trades_small_then_releases() -> None:
    h = Halts(RULES)
    # 100 -> 84 over four bars: 16 % from the peak at bar 4
    events = run(h, [100, 95, 90, 86, 84])
    assert events == [(4, "max_drawdown", "halt")]
    assert "max_drawdown" in h.blocked() and h.scale() == 1.0
    events = run(h, [84.0] * 30, start=5)
    assert events == [(28, "max_drawdown", "probation")]  # 24 bars after the halt
    assert h.blocked() == {} and h.scale() == 0.25 and h.phases() == {"max_drawdown": "probation"}
    events = run(h, [85.0] * 60, start=35)
    assert events == [(76, "max_drawdown", "release")]  # 48 bars after probation began
    assert h.scale() == 1.0 and h.phases() == {}


def test_the_limit_reached_again_during_probation_halts_again_from_the_release_equity() -> None:
    h = Halts(RULES)
    run(h, [100, 80])
    run(h, [80.0] * 25, start=2)  # probation at bar 25, peak restarts at 80
    assert h.phases() == {"max_drawdown": "probation"}
    events = run(h, [75, 70, 67], start=27)  # 67 / 80 - 1 = -16 %
    assert events == [(29, "max_drawdown", "halt")]


def test_a_daily_loss_halt_counts_from_the_release_for_a_day() -> None:
    h = Halts(RULES)
    # a 6 % loss over 24 h, with no drawdown rule reached (peak 100, equity 94 -> 6 %)
    assert run(h, [100, 94], daily=[0.0, -6.0]) == [(1, "max_daily_loss", "halt")]
    # the portfolio's rolling 24 h loss would still say -6 % right after the cooldown; the rule counts from release
    events = run(h, [94.0] * 30, start=2, daily=[-6.0] * 30)
    assert events == [(25, "max_daily_loss", "probation")]
    assert h.phases() == {"max_daily_loss": "probation"}


def test_state_round_trips_as_plain_data() -> None:
    import json

    h = Halts(RULES)
    run(h, [100, 80, 80, 80])
    again = Halts.from_state(RULES, json.loads(json.dumps(h.to_state())))
    assert again.to_state() == h.to_state()
    assert run(again, [80.0] * 30, start=4) == run(h, [80.0] * 30, start=4)


def test_the_engine_halts_on_drawdown_resumes_small_after_the_cooldown_and_reports_every_step() -> None:
    """A losing run into the drawdown limit, then a profitable regime: trading resumes (it used to stay out)."""
    from flows.portfolio import Portfolio
    from flows.risk.config import RiskConfig
    from flows.risk.engine import PORTFOLIO, RiskEngine

    cfg = RiskConfig.model_validate({"breakers": {"gap_sigma": 1e6, "spike_ratio": 1e6, "stale_bars": 1000},
                                     "sizing": {"method": "fixed_fraction", "fixed_fraction": 1.0,
                                                "max_position_fraction": 1.0},
                                     "limits": {"max_position_fraction": 1.0, "max_correlated_fraction": 1.0,
                                                "max_daily_loss": 0.5}})  # the drawdown rule halts first
    eng, book = RiskEngine(cfg), Portfolio(10_000.0)
    price, events, traded, held = 100.0, [], {}, {}
    path = [-0.03] * 10 + [0.0] * 30 + [0.01] * 120  # down 26 % (the book about 20 %), flat, then up
    for hour, r in enumerate(path):
        ts = hour * H
        price *= 1 + r
        eng.on_bar("BTC/USDT", ts - H, r)
        book.mark({"BTC/USDT": price}, ts)
        d = eng.decide("BTC/USDT", ts, 1.0, 1.0, price, 0.01, book.snapshot(), False)
        if d.approved_qty_delta:
            side = "buy" if d.approved_qty_delta > 0 else "sell"
            book.apply_fill("BTC/USDT", side, abs(d.approved_qty_delta), price, 0.0, ts)
            traded[hour] = d.approved_qty_delta
        snap = book.snapshot()
        held[hour] = snap.positions.get("BTC/USDT", 0.0) * price / snap.equity
        drained = eng.drain_events()
        assert all(e.symbol == PORTFOLIO and e.reason for e in drained)
        events += [(hour, e.rule) for e in drained]
    halt = next(h for h, rule in events if rule == "max_drawdown:halt")
    probation = next(h for h, rule in events if rule == "max_drawdown:probation")
    release = next(h for h, rule in events if rule == "max_drawdown:release")
    assert probation == halt + 24 and release == probation + 72
    assert not any(q > 0 for h, q in traded.items() if halt <= h < probation), "new risk while halted"
    assert any(q > 0 for h, q in traded.items() if h >= probation), "trading never resumed"
    assert max(held[h] for h in range(probation, release)) <= 0.25 + 1e-9  # probation: a quarter of full size
    assert max(held[h] for h in range(release, len(path))) > 0.5  # then full size again
    assert eng.halt_phases() == {}
