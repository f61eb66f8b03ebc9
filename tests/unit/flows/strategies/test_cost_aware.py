"""The ``cost_aware`` strategy: edge against the round-trip cost, band with hysteresis, minimum hold, vol target.

Contexts of 1h bars with ``rv_15 = 0.05`` (per-bar sigma 0.0129, annual 1.21); the
round trip costs 22 bp (10 bp fee + 1 bp slippage, twice).
"""

from __future__ import annotations

import math

import pytest

from flows.execution.costs import round_trip_cost
from flows.strategies.cost_aware import CostAware, CostAwareParams
from tests.kit.strategies import ENV, context

SIGMA = 0.05 / math.sqrt(15)
SIZE = 0.2 / (SIGMA * math.sqrt(8760))


def strategy(**params: object) -> CostAware:
    return CostAware(CostAwareParams.model_validate(params), ENV)


def test_the_edge_is_the_probabilitys_lean_times_the_mean_absolute_move_over_the_horizon() -> None:
    s = strategy()
    assert s.edge(context(0, 0.6)) == pytest.approx(0.2 * SIGMA * math.sqrt(2 / math.pi), rel=1e-12)
    assert s.edge(context(0, 0.6, horizon=4)) == pytest.approx(0.2 * SIGMA * 2 * math.sqrt(2 / math.pi), rel=1e-12)
    assert strategy(horizon=9).edge(context(0, 0.6, horizon=4)) == pytest.approx(
        0.2 * SIGMA * 3 * math.sqrt(2 / math.pi), rel=1e-12)  # the parameter wins over the prediction's
    assert s.edge(context(0, math.nan)) is None and s.edge(context(0, 0.6, rv=math.nan)) is None
    assert ENV.round_trip_cost == pytest.approx(round_trip_cost(0.001, 1.0))


def test_a_position_opens_only_when_the_edge_beats_the_round_trip_cost() -> None:
    # (2p - 1) * 0.0103 > 0.0022  <=>  p > 0.6068 at one bar, p > 0.5534 over four
    assert strategy().decide(context(0, 0.60)).fraction == 0.0
    assert strategy().decide(context(0, 0.61)).fraction == pytest.approx(SIZE)
    assert strategy().decide(context(0, 0.39)).fraction == pytest.approx(-SIZE)
    assert strategy(allow_short=False).decide(context(0, 0.39)).fraction == 0.0
    assert strategy().decide(context(0, 0.56)).fraction == 0.0
    assert strategy(horizon=4).decide(context(0, 0.56)).fraction == pytest.approx(SIZE)
    assert strategy().decide(context(0, 0.56, horizon=4)).fraction == pytest.approx(SIZE)
    assert strategy(enter_multiple=2.0).decide(context(0, 0.61)).fraction == 0.0
    reasons = strategy().decide(context(0, 0.61)).reasons
    assert "edge +22.7 bp vs cost 22.0 bp: enter long x1" in reasons


def test_hysteresis_holds_inside_the_band_exits_past_the_exit_band_and_flips_past_the_entry_band() -> None:
    s = strategy(exit_multiple=0.5, min_hold_bars=0)
    assert s.decide(context(0, 0.65)).fraction == pytest.approx(SIZE)
    held = SIZE * 10_000 / 100.0  # base units the engine would have bought
    for k, p in ((1, 0.52), (2, 0.49)):  # below the entry band, not past the exit band: hold exactly
        t = s.decide(context(k, p, position=held))
        assert t.fraction == pytest.approx(SIZE, rel=1e-15) and t.reasons[-1].endswith("hold")
    assert s.decide(context(3, 0.40, position=held)).fraction == 0.0  # edge -21 bp < -11 bp: out, not short
    assert s.decide(context(4, 0.52)).fraction == 0.0  # flat stays flat inside the band
    s2 = strategy(exit_multiple=0.5, min_hold_bars=0)
    s2.decide(context(0, 0.65))
    assert s2.decide(context(1, 0.35, position=held)).fraction == pytest.approx(-SIZE)  # past -cost: flip


def test_no_exit_or_flip_before_the_minimum_holding_time() -> None:
    s = strategy(min_hold_bars=3)
    s.decide(context(10, 0.7))
    held = SIZE * 100.0
    for k in (11, 12):
        t = s.decide(context(k, 0.2, position=held))
        assert t.fraction == pytest.approx(SIZE) and any("< 3 bars" in r for r in t.reasons)
    assert s.decide(context(13, 0.2, position=held)).fraction == pytest.approx(-SIZE)


def test_size_is_volatility_targeted_capped_and_resized_only_past_the_resize_band() -> None:
    assert strategy(vol_target=0.1).decide(context(0, 0.9)).fraction == pytest.approx(SIZE / 2)
    assert strategy(max_fraction=0.05).decide(context(0, 0.9)).fraction == pytest.approx(0.05)
    s = strategy(min_hold_bars=0)
    s.decide(context(0, 0.9))
    held = SIZE * 100.0
    assert s.decide(context(1, 0.9, rv=0.055, position=held)).fraction == pytest.approx(SIZE)  # 9 % smaller: hold
    t = s.decide(context(2, 0.9, rv=0.10, position=held))  # vol doubled: half the size
    assert t.fraction == pytest.approx(SIZE / 2) and "resize" in t.reasons[-1]


def test_missing_inputs_change_nothing_and_state_round_trips() -> None:
    s = strategy()
    assert s.decide(context(0, math.nan)).fraction == 0.0
    s.decide(context(1, 0.8))
    assert s.decide(context(2, math.nan, position=SIZE * 100)).fraction == pytest.approx(SIZE)
    again = strategy()
    again.from_state(s.to_state())
    assert again.held == s.held == {"BTC/USDT": (1, 3_600_000)}
    assert [again.decide(context(9, 0.1, position=SIZE * 100)).fraction] == [s.decide(
        context(9, 0.1, position=SIZE * 100)).fraction]
