"""Hierarchy: strategic weights cap tactical targets; position changes become parent orders, worked by execution."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from inference.rl_observation import strategic_weights
from tests.kit.rl import envs, tiny
from training.rl.agents import deterministic_actions, make_agent
from training.rl.data import synthetic_market_data
from training.rl.envs.execution import ExecutionConfig, ExecutionEnv
from training.rl.hierarchy import HierarchicalSystem, HierarchyConfig

N_ASSETS = 3


@pytest.fixture(scope="module")
def markets():
    hourly = synthetic_market_data(seed=11, n_bars=120, n_assets=N_ASSETS, n_features=6, timeframe="1h")
    minutes = synthetic_market_data(seed=12, n_bars=5_000, n_assets=N_ASSETS, n_features=6, timeframe="5m")  # spans the hourly bars
    assert minutes.times[0] < hourly.times[0] and minutes.decision_times[-1] > hourly.decision_times[-1] + 3600e9
    return hourly, minutes


def _swinging_tactical(obs: np.ndarray) -> np.ndarray:
    """Full long / full short by the sign of the first feature: targets far beyond any cap."""
    return np.where(obs[:, :1] >= 0, 1.0, -1.0).astype(np.float32)


def _strategic_agent(hourly):
    """An untrained (seeded) PPO over the hierarchy's assets: arbitrary but deterministic weights."""
    from training.rl.runs import make_env

    env, _ = make_env("strategic", hourly, seed=0, evaluation=False, quick=True)
    model = make_agent(tiny("strategic"), env)
    return lambda o: deterministic_actions(model, o)


@pytest.mark.parametrize("long_only", [True, False])
def test_strategic_weights_cap_tactical_targets(markets, long_only: bool) -> None:
    hourly, _ = markets
    rng = np.random.default_rng(0)
    n_act = N_ASSETS + 1 if long_only else N_ASSETS
    strategic_actions: list[np.ndarray] = []

    def strategic(obs: np.ndarray) -> np.ndarray:
        strategic_actions.append(rng.uniform(-1, 1, (1, n_act)).astype(np.float32))
        return strategic_actions[-1]

    cfg = HierarchyConfig(rebalance_bars=6, long_only=long_only, gross_cap=1.0, min_order=0.0)
    res = HierarchicalSystem(strategic, _swinging_tactical, config=cfg).run(hourly)
    assert len(strategic_actions) == -(-(hourly.n_bars - 1) // 6)  # one decision per rebalance
    for k, a in enumerate(strategic_actions):
        w = strategic_weights(a[0], N_ASSETS, long_only, 1.0, cfg.logit_scale)
        np.testing.assert_allclose(res.caps[k * 6:(k + 1) * 6][: hourly.n_bars - 1 - k * 6], np.abs(w)[None]
                                   .repeat(min(6, hourly.n_bars - 1 - k * 6), 0))
    decided = slice(0, hourly.n_bars - 1)
    assert np.all(np.abs(res.targets[decided]) <= res.caps[decided] + 1e-12)
    assert np.all(res.caps[decided].sum(axis=1) <= 1.0 + 1e-9)  # gross exposure within the cap
    if long_only:
        assert np.all(res.targets[decided] >= 0.0)
    # the caps bind: the tactical agent asked for +-1 everywhere
    assert np.all(np.abs(res.proposed[decided]) == 1.0)
    assert np.mean(np.abs(res.targets[decided]) < 1.0) > 0.9
    # held exposure right after a fill is the capped target (fills at the next open, marked at its close)
    assert np.all(np.abs(res.positions[1:]) <= res.caps[:-1] * 1.2 + 1e-9)


def test_position_changes_are_worked_by_the_execution_agent(markets) -> None:
    hourly, minutes = markets
    exec_cfg = ExecutionConfig(horizon_bars=12, random_start=False)
    probe = ExecutionEnv(minutes, exec_cfg)
    twap = probe.action_index("market", 1.0)
    seen: list[np.ndarray] = []

    def execution(obs: np.ndarray) -> np.ndarray:
        seen.append(obs)
        return np.array([[twap]])

    system = HierarchicalSystem(_strategic_agent(hourly), _swinging_tactical, execution,
                                HierarchyConfig(rebalance_bars=24, min_order=0.01), exec_cfg)
    res = system.run(hourly, minutes)
    assert res.orders, "no parent orders"
    worked = [o for o in res.orders if o.worked and o.child_steps > 1]
    assert len(worked) == len(res.orders)  # every order went to the execution agent
    for o in res.orders:
        assert o.child_steps == 12  # TWAP uses the whole horizon
        assert o.filled == pytest.approx(o.quantity, rel=1e-9)  # nothing left unfilled
        assert o.leftover == pytest.approx(0.0, abs=1e-9 * o.quantity)
        # arrival = close of the 5m bar ending at the hourly decision time
        t_exec = int(np.searchsorted(minutes.decision_times, hourly.decision_times[o.t]))
        assert minutes.decision_times[t_exec] == hourly.decision_times[o.t]
        assert o.arrival == minutes.close[t_exec, o.asset]
    assert sum(o.child_steps for o in res.orders) == len(seen)
    # the change of each asset's units is the sum of its signed parent orders
    units_end = res.positions[-1] * res.equity[-1] / hourly.close[-1]
    signed = np.zeros(N_ASSETS)
    for o in res.orders:
        signed[o.asset] += o.filled if o.side == "buy" else -o.filled
    np.testing.assert_allclose(units_end, signed, rtol=1e-9, atol=1e-12)


def test_the_three_agents_compose(markets) -> None:
    hourly, minutes = markets
    tac_env, _, _ = envs("tactical")
    tac_model = make_agent(tiny("tactical"), tac_env)  # synthetic features: same 6 names at both levels
    exec_env, _, _ = envs("execution", "5m")
    exec_model = make_agent(tiny("execution"), exec_env)
    system = HierarchicalSystem(_strategic_agent(hourly), lambda o: deterministic_actions(tac_model, o),
                                lambda o: deterministic_actions(exec_model, o),
                                HierarchyConfig(min_order=0.0))
    res = system.run(hourly, minutes)
    assert np.all(np.isfinite(res.equity)) and res.equity[-1] > 0
    assert np.all(np.abs(res.targets[:-1]) <= res.caps[:-1] + 1e-12)
    assert all(o.filled == pytest.approx(o.quantity, rel=1e-9) for o in res.orders)
    again = system.run(hourly, minutes)
    np.testing.assert_array_equal(res.equity, again.equity)  # deterministic


def test_without_execution_data_orders_fill_at_the_next_open(markets) -> None:
    hourly, _ = markets
    cfg = HierarchyConfig(rebalance_bars=24, min_order=0.0, fee_rate=0.001, slippage=0.0)
    res = HierarchicalSystem(lambda o: np.ones((1, N_ASSETS + 1), np.float32), _swinging_tactical,
                             config=cfg).run(hourly)
    o = res.orders[0]
    assert o.child_steps == 1 and not o.worked and o.avg_price == hourly.open[o.t + 1, o.asset]
    assert o.fees == pytest.approx(0.001 * o.quantity * o.avg_price)
    with pytest.raises(ValueError, match="rebalance_bars"):
        replace(cfg, rebalance_bars=0)
