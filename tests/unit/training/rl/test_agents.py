"""Agents: config checks, same seed -> same policy, validation early stopping, TensorBoard logs, save/load."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.kit.rl import TINY, envs, held_out, tiny
from training.rl.agents import (
    AgentConfig,
    deterministic_actions,
    load_agent,
    make_agent,
    save_agent,
    train_agent,
)


def test_config_names_the_bad_field() -> None:
    with pytest.raises(ValueError, match="level must be one of"):
        AgentConfig("portfolio")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="AgentConfig.total_timesteps"):
        AgentConfig("tactical", total_timesteps=0)
    with pytest.raises(ValueError, match=r"unknown keys \['n_steps'\] for tactical"):
        AgentConfig("tactical", hyper={"n_steps": 8})
    cfg = AgentConfig("execution", hyper={"train_freq": 2})
    assert AgentConfig.from_dict(cfg.to_dict()) == replace(cfg, hyper=cfg.effective_hyper())
    assert cfg.to_dict()["algorithm"] == "DQN"


@pytest.mark.parametrize("level", ["tactical", "strategic", "execution"])
def test_same_seed_gives_the_same_policy(level: str) -> None:
    tf = "5m" if level == "execution" else "1h"
    runs = []
    for seed in (4, 4, 5):
        train_env, valid_env, n = envs(level, tf)
        res = train_agent(tiny(level, steps=300, seed=seed, n_eval_episodes=n), train_env, valid_env)
        runs.append(res)
    obs = held_out(level, runs[0].model, n=200)
    a = [deterministic_actions(r.model, obs) for r in runs]
    np.testing.assert_array_equal(a[0], a[1])
    assert not np.array_equal(a[0], a[2])
    assert runs[0].evaluations == runs[1].evaluations
    if level == "execution":
        assert a[0].shape == (len(obs), 1) and a[0].dtype.kind == "i"
    else:
        assert np.all(np.abs(a[0]) <= 1.0)


def test_training_stops_without_validation_improvement(tmp_path: Path) -> None:
    # learning rate 0: the Q-network never changes, so validation never improves after the first evaluation
    train_env, valid_env, n = envs("execution", "5m")
    cfg = AgentConfig("execution", total_timesteps=5_000, net_arch=(16,), eval_freq=300, patience=1, min_evals=0,
                      n_eval_episodes=n, hyper={**TINY["execution"], "learning_rate": 0.0})
    res = train_agent(cfg, train_env, valid_env, tensorboard_log=tmp_path / "tb", run_name="lr0")
    assert res.stopped_early
    assert res.timesteps == 3 * 300  # first evaluation sets the best; two without improvement > patience 1
    assert [e["timesteps"] for e in res.evaluations] == [300, 600, 900]
    rewards = [e["mean_reward"] for e in res.evaluations]
    assert max(rewards) - min(rewards) < 1e-9  # the same policy on the same episodes (up to summation order)
    events = list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert events and events[0].parent.name.startswith("lr0")


def test_save_and_load_give_the_same_actions(tmp_path: Path) -> None:
    train_env, valid_env, n = envs("strategic")
    res = train_agent(tiny("strategic", steps=256, n_eval_episodes=n), train_env, valid_env)
    save_agent(res, tmp_path / "a")
    back = load_agent(tmp_path / "a")
    obs = held_out("strategic", res.model)
    np.testing.assert_array_equal(deterministic_actions(res.model, obs), deterministic_actions(back.model, obs))
    assert back.config.to_dict() == res.config.to_dict() and back.evaluations == res.evaluations
    with pytest.raises(FileNotFoundError, match="no saved agent"):
        load_agent(tmp_path / "missing")


def test_policy_standardises_raw_observations() -> None:
    train_env, _, _ = envs("tactical")
    stats = ([1.0] * train_env.observation_space.shape[0], [2.0] * train_env.observation_space.shape[0])
    model = make_agent(tiny("tactical"), train_env, obs_stats=stats)
    ext = model.policy.actor.features_extractor  # type: ignore[union-attr]
    import torch

    x = torch.full((1, len(stats[0])), 5.0)
    np.testing.assert_allclose(ext(x).numpy(), 2.0)  # (5 - 1) / 2
    np.testing.assert_allclose(ext(torch.full((1, len(stats[0])), 1e6)).numpy(), 10.0)  # clipped
