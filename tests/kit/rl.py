"""Small RL markets, environments and agent configs for the agent, export and hierarchy tests."""

from __future__ import annotations

from functools import cache

import numpy as np

from training.rl.agents import (
    AgentConfig,
)
from training.rl.data import MarketData, split_by_time, synthetic_market_data
from training.rl.runs import EpisodeSchedule, make_env, rollout_observations


@cache
def market(timeframe: str = "1h", n_bars: int = 700, n_assets: int = 2) -> MarketData:
    """A small deterministic synthetic market shared by the RL agent tests."""
    return synthetic_market_data(seed=3, n_bars=n_bars, n_assets=n_assets, n_features=6, timeframe=timeframe)


def envs(level: str, timeframe: str = "1h", n_bars: int = 700) -> tuple[EpisodeSchedule, EpisodeSchedule, int]:
    """Return (training env, validation env, validation episodes) of a level on the synthetic market."""
    tr, va = split_by_time(market(timeframe, n_bars), 0.7)
    train_env, _ = make_env(level, tr, seed=1, evaluation=False, quick=True)  # type: ignore[arg-type]
    valid_env, n = make_env(level, va, seed=1, evaluation=True, quick=True,  # type: ignore[arg-type]
                            episodes_per_asset=4)
    return train_env, valid_env, n


TINY = {"strategic": {"n_steps": 64, "batch_size": 32, "n_epochs": 2},  # 4 envs: rollouts of 256
        "tactical": {"learning_starts": 100, "batch_size": 32},
        "execution": {"learning_starts": 100, "batch_size": 32}}


def tiny(level: str, steps: int = 400, seed: int = 0, **changes: object) -> AgentConfig:
    """Return a config that trains in about a second."""
    return AgentConfig(level, total_timesteps=steps, net_arch=(16, 16), eval_freq=200, patience=5,  # type: ignore[arg-type]
                       seed=seed, hyper=TINY[level], **changes)  # type: ignore[arg-type]


def held_out(level: str, model: object, n: int = 64) -> np.ndarray:
    """Observations of the validation env visited by ``model``."""
    _, valid_env, _ = envs(level, "5m" if level == "execution" else "1h")
    return rollout_observations(valid_env, lambda o: model.predict(o, deterministic=True)[0],  # type: ignore[attr-defined]
                                n=n, seed=5)
