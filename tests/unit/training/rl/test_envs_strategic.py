"""StrategicEnv: weights mapping, exact rebalancing accounting, regime inputs, no lookahead, checkers."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from inference.rl_observation import strategic_observation, strategic_weights
from training.rl.data import synthetic_market_data
from training.rl.envs import StrategicConfig, StrategicEnv

OPEN = [[100.0, 50.0], [101.0, 49.0], [102.0, 48.0], [103.0, 47.0], [104.0, 46.0]]
CLOSE = [[100.5, 50.0], [101.5, 49.5], [102.5, 47.5], [103.5, 46.5], [104.5, 45.5]]


def test_weights_long_only_softmax_with_cash_and_long_short_gross_cap():
    w = strategic_weights(np.array([1.0, 0.0, -1.0]), 2, long_only=True, logit_scale=1.0)
    z = math.e + 1.0 + 1.0 / math.e
    np.testing.assert_allclose(w, [math.e / z, 1.0 / z], rtol=1e-12)
    np.testing.assert_allclose(strategic_weights(np.array([0.5, -0.25]), 2, long_only=False), [0.5, -0.25])
    capped = strategic_weights(np.array([1.0, -1.0, 0.5]), 3, long_only=False, gross_cap=1.0)
    np.testing.assert_allclose(capped, np.array([1.0, -1.0, 0.5]) / 2.5, rtol=1e-12)
    with pytest.raises(ValueError, match="3 entries"):
        strategic_weights(np.zeros(2), 2, long_only=True)


def test_rebalancing_gives_hand_computed_equity_fees_and_reward(handmade):
    md = handmade(OPEN, CLOSE)
    cfg = StrategicConfig(initial_equity=1000.0, fee_rate=0.001, slippage=0.001, rebalance_bars=2,
                          long_only=False, risk_aversion=3.0)
    env = StrategicEnv(md, cfg)
    env.reset()
    # step 1: weights (0.5, -0.25) bought at open[1] = (101, 49): buy 101 * 1.001, sell short 49 * 0.999
    u = np.array([0.5 * 1000.0 / 101.0, -0.25 * 1000.0 / 49.0])
    traded = u[0] * 101.0 * 1.001 - u[1] * 49.0 * 0.999
    cash = 1000.0 - (u[0] * 101.0 * 1.001 + u[1] * 49.0 * 0.999) - 0.001 * traded
    e1 = cash + u[0] * 101.5 + u[1] * 49.5
    e2 = cash + u[0] * 102.5 + u[1] * 47.5
    obs, reward, term, trunc, info = env.step(np.array([0.5, -0.25], np.float32))
    var = math.log(e1 / 1000.0) ** 2 + math.log(e2 / e1) ** 2
    assert info["equity"] == pytest.approx(e2, rel=1e-12)
    assert info["fee"] == pytest.approx(0.001 * traded, rel=1e-12)
    assert info["variance"] == pytest.approx(var, rel=1e-9)
    assert reward == pytest.approx(math.log(e2 / 1000.0) - 3.0 * var, rel=1e-9)
    assert env.t == 2 and not term and not trunc
    weights_now = u * np.array([102.5, 47.5]) / e2
    np.testing.assert_allclose(obs, strategic_observation(md.features[2], weights_now, None), rtol=1e-6)
    # step 2: to cash at open[3] = (103, 47): sell 103 * 0.999, buy back 47 * 1.001
    cash2 = cash + u[0] * 103.0 * 0.999 + u[1] * 47.0 * 1.001 - 0.001 * (u[0] * 103.0 * 0.999 - u[1] * 47.0 * 1.001)
    *_, term, trunc, info = env.step(np.array([0.0, 0.0], np.float32))
    assert info["equity"] == pytest.approx(cash2, rel=1e-12)
    assert trunc and not term


def test_regime_inputs_enter_the_observation():
    md = synthetic_market_data(0, 100, 2, n_features=3)
    regime = np.random.default_rng(0).standard_normal((md.n_bars, 2)).astype(np.float32)
    md = replace(md, regime=regime, regime_names=("fng", "funding_mean"))
    env = StrategicEnv(md, StrategicConfig(rebalance_bars=5))
    obs, _ = env.reset()
    assert obs.shape == (2 * 3 + 2 + 2,)
    np.testing.assert_array_equal(obs[-2:], regime[0])
    obs, *_ = env.step(env.action_space.sample())
    np.testing.assert_array_equal(obs[-2:], regime[5])
    assert StrategicEnv(md, StrategicConfig(use_regime=False)).observation_space.shape == (8,)


def test_no_lookahead(perturb_after, agree_until):
    md = synthetic_market_data(2, 240, 3, n_features=4)
    md = replace(md, regime=np.ones((md.n_bars, 1), np.float32), regime_names=("fng",))
    actions = np.random.default_rng(1).uniform(-1, 1, (30, 4)).astype(np.float32)
    cfg = StrategicConfig(rebalance_bars=6, w_dsr=0.2)
    assert agree_until(lambda m: StrategicEnv(m, cfg), (md, perturb_after(md, 150)), actions, 150) == 26  # 0, 6 .. 150


def test_same_seed_same_episodes_and_checkers(env_checkers):
    md = synthetic_market_data(5, 400, 3, n_features=4)
    cfg = StrategicConfig(rebalance_bars=8, episode_rebalances=10)

    def rollout(seed: int) -> list[float]:
        env = StrategicEnv(md, cfg, seed=seed)
        env.action_space.seed(seed)
        _, info = env.reset()
        out = [float(info["t"])]
        for _ in range(10):
            out.append(env.step(env.action_space.sample())[1])
        return out

    assert rollout(3) == rollout(3) and rollout(3) != rollout(4)
    for c in (cfg, replace(cfg, long_only=False, gross_cap=1.5)):
        env_checkers(StrategicEnv(md, c, seed=0))


def test_bad_config_and_too_little_data(handmade):
    with pytest.raises(ValueError, match="StrategicConfig.rebalance_bars"):
        StrategicConfig(rebalance_bars=0)
    with pytest.raises(ValueError, match="StrategicConfig.gross_cap"):
        StrategicConfig(gross_cap=-1.0)
    with pytest.raises(ValueError, match="no rebalancing period"):
        StrategicEnv(handmade(OPEN, CLOSE), StrategicConfig(rebalance_bars=5))
    with pytest.raises(ValueError, match="episode_rebalances"):
        StrategicEnv(handmade(OPEN, CLOSE), StrategicConfig(rebalance_bars=2, episode_rebalances=3))
