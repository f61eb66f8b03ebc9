"""ExecutionEnv: market and limit fills from candles, shortfall rewards, deadline, no lookahead, checkers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from inference.rl_observation import execution_observation
from training.rl.data import synthetic_market_data
from training.rl.envs import ExecutionConfig, ExecutionEnv

OPEN = [100.0, 100.0, 101.0, 102.0, 103.0]
HIGH = [100.5, 101.0, 102.0, 103.0, 104.0]
LOW = [99.5, 99.0, 100.5, 101.5, 102.0]
CLOSE = [100.0, 100.5, 101.5, 102.5, 103.5]
CFG = ExecutionConfig(horizon_bars=3, side="buy", volume_window=1, slice_multiples=(1.0,),
                      limit_offsets=(0.0, 0.01), half_spread=0.0001, impact=0.01, limit_participation=0.01,
                      taker_fee=0.001, maker_fee=0.0002, leftover_penalty=0.002, random_start=False)


@pytest.fixture
def env(handmade):
    return ExecutionEnv(handmade(OPEN, CLOSE, HIGH, LOW, [1000.0] * 5), CFG)


def test_actions_are_named(env):
    assert [env.describe_action(i)["kind"] for i in range(env.action_space.n)] == [
        "wait", "market_all", "market", "limit", "limit"]
    assert env.action_index("limit", 1.0, 0.01) == 4
    with pytest.raises(ValueError, match="no action"):
        env.action_index("limit", 3.0)


def test_buy_episode_gives_hand_computed_shortfall(env):
    _, info = env.reset(options={"start": 0, "quantity": 30.0})
    assert info["arrival"] == 100.0 and info["side"] == "buy"
    scale = 1e4 / (30.0 * 100.0)
    # bar 1: TWAP slice 10 at market: 100 * (1 + 0.0001 + 0.01 * 10 / 1000), taker fee
    p1 = 100.0 * 1.0002
    s1 = 10 * (p1 - 100.0) + 0.001 * 10 * p1
    _, r1, done, _, i1 = env.step(env.action_index("market", 1.0))
    assert r1 == pytest.approx(-scale * s1, rel=1e-12) and i1["filled"] == pytest.approx(10.0) and not done
    # bar 2: limit 1% under the open (99.99); the low 100.5 never reaches it: nothing fills
    _, r2, done, _, i2 = env.step(env.action_index("limit", 1.0, 0.01))
    assert r2 == 0.0 and i2["filled"] == 0.0 and not done
    # bar 3 (the deadline): limit at the open 102, low 101.5 trades through: fills 1% of 1000 at 102 (maker);
    # the other 10 go at the close 102.5 as a market order plus the leftover penalty
    p_left = 102.5 * 1.0002
    s3 = 10 * 2.0 + 0.0002 * 10 * 102.0 + 10 * (p_left - 100.0) + 0.001 * 10 * p_left + 0.002 * 10 * p_left
    _, r3, done, trunc, i3 = env.step(env.action_index("limit", 1.0, 0.0))
    assert r3 == pytest.approx(-scale * s3, rel=1e-12)
    assert i3["leftover"] == pytest.approx(10.0) and i3["remaining"] == 0.0 and done and not trunc
    assert i3["avg_price"] == pytest.approx((10 * p1 + 10 * 102.0 + 10 * p_left) / 30.0, rel=1e-12)
    assert -(r1 + r2 + r3) == pytest.approx(scale * (s1 + s3), rel=1e-12)


def test_limit_at_the_low_does_not_fill_sell_side_mirrors(handmade):
    md = handmade(OPEN, CLOSE, HIGH, [99.5, 99.0, 101.0, 101.5, 102.0], [1000.0] * 5)
    env = ExecutionEnv(md, CFG)
    env.reset(options={"start": 0, "quantity": 5.0})
    assert env.step(env.action_index("limit", 1.0, 0.0))[4]["filled"] > 0  # bar 1: low 99 < open 100
    assert env.step(env.action_index("limit", 1.0, 0.0))[4]["filled"] == 0.0  # bar 2: low == open 101: no trade through
    env.reset(options={"start": 1, "quantity": 30.0, "side": "sell"})  # arrival 100.5
    _, r, *_ = env.step(1)  # everything at market at open 101: 101 * (1 - 0.0001 - 0.01 * 30 / 1000)
    p = 101.0 * (1 - 0.0001 - 0.0003)
    assert r == pytest.approx(-1e4 * (-30 * (p - 100.5) + 0.001 * 30 * p) / (30 * 100.5), rel=1e-12)
    assert r > 0  # sold above arrival: negative shortfall


def test_market_all_finishes_the_episode_and_wait_pays_at_the_deadline(env):
    env.reset(options={"start": 0, "quantity": 30.0})
    *_, done, _, info = env.step(1)
    assert done and info["remaining"] == 0.0
    env.reset(options={"start": 0, "quantity": 30.0})
    dones = [env.step(0)[2] for _ in range(3)]
    assert dones == [False, False, True]


def test_observation_is_execution_observation(env):
    obs, _ = env.reset(options={"start": 0, "quantity": 30.0})
    env.step(env.action_index("market", 1.0))
    obs = env.observation()
    p1 = 100.0 * 1.0002
    want = execution_observation(env.features[1], 20.0 / 30.0, 2.0 / 3.0, 100.5 / 100.0 - 1, 100.5 / 100.0 - 1,
                                 2.0 / 100.5, 1.0, p1 / 100.0 - 1)
    np.testing.assert_allclose(obs, want, rtol=1e-6)


def test_no_lookahead(perturb_after, agree_until):
    md = synthetic_market_data(6, 300, 1, timeframe="5m")
    cfg = ExecutionConfig(horizon_bars=24, side="sell", volume_window=12)
    actions = np.random.default_rng(3).integers(2, 14, 24)  # never "everything now": the order lasts past bar k
    compared = agree_until(lambda m: ExecutionEnv(m, cfg), (md, perturb_after(md, 200)), actions, 200,
                           {"start": 190})
    assert compared == 200 - 190 + 1


def test_same_seed_same_episodes_and_checkers(env_checkers):
    md = synthetic_market_data(7, 500, 1, timeframe="5m")

    def rollout(seed: int) -> list[float]:
        env = ExecutionEnv(md, ExecutionConfig(), seed=seed)
        env.action_space.seed(seed)
        out = []
        for _ in range(3):
            _, info = env.reset()
            out += [float(info["t"]), info["quantity"]]
            done = False
            while not done:
                _, r, done, _, _ = env.step(env.action_space.sample())
                out.append(r)
        return out

    assert rollout(1) == rollout(1) and rollout(1) != rollout(2)
    env_checkers(ExecutionEnv(md, ExecutionConfig(), seed=0))


def test_bad_config_and_inputs(env):
    with pytest.raises(ValueError, match="ExecutionConfig.side"):
        ExecutionConfig(side="hold")
    with pytest.raises(ValueError, match="ExecutionConfig.limit_offsets"):
        ExecutionConfig(limit_offsets=(-0.01,))
    with pytest.raises(ValueError, match="too few"):
        ExecutionEnv(env.md, replace(CFG, horizon_bars=5))
    env.reset(options={"start": 0})
    with pytest.raises(ValueError, match="action 9"):
        env.step(9)
    with pytest.raises(ValueError, match="quantity"):
        env.reset(options={"start": 0, "quantity": -1.0})
