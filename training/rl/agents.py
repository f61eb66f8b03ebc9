"""Stable-baselines3 agents of the three levels: PPO (strategic), DDPG (tactical), DQN (execution).

Training watches validation episodes (a later time slice than the training
data): :class:`~stable_baselines3.common.callbacks.EvalCallback` scores the
deterministic policy every ``eval_freq`` environment steps, keeps the best model
seen, and :class:`~stable_baselines3.common.callbacks.StopTrainingOnNoModelImprovement`
stops training after ``patience`` evaluations without a new best.  The returned
model is that best one (validation-selected), not the last.

Determinism: ``set_random_seed(seed)`` (python, numpy, torch), the algorithm's
own seed (action space, environments), the validation environment seeded with
``seed + 1``, and a fixed torch thread count, so a run twice with the same seed
gives the same policy on CPU.

TensorBoard event files go to ``<log_dir>/<level>/<run>_<n>`` (SB3's layout).
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import DDPG, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import (
    BaseCallback,
    CallbackList,
    EvalCallback,
    StopTrainingOnNoModelImprovement,
)
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv

Level = Literal["strategic", "tactical", "execution"]
LEVELS: tuple[Level, ...] = ("strategic", "tactical", "execution")
ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"strategic": PPO, "tactical": DDPG, "execution": DQN}
FAMILIES: dict[str, str] = {"strategic": "rl_strategic", "tactical": "rl_tactical", "execution": "rl_execution"}

# Per-algorithm defaults, overridable through AgentConfig.hyper.
DEFAULT_HYPER: dict[str, dict[str, Any]] = {
    # PPO: 4 copies of the env step together (one batched policy call per step: ~2x the env steps/s
    # of a single env on these machines); n_steps is per env, so a rollout is 4 x 256 steps
    "strategic": {"learning_rate": 3e-4, "n_envs": 4, "n_steps": 256, "batch_size": 128, "n_epochs": 10,
                  "gamma": 0.99, "gae_lambda": 0.95, "clip_range": 0.2, "ent_coef": 0.0},
    "tactical": {"learning_rate": 1e-3, "buffer_size": 100_000, "learning_starts": 1_000, "batch_size": 128,
                 "tau": 0.005, "gamma": 0.99, "train_freq": 1, "gradient_steps": 1, "noise_sigma": 0.2},
    "execution": {"learning_rate": 5e-4, "buffer_size": 50_000, "learning_starts": 1_000, "batch_size": 64,
                  "gamma": 0.99, "train_freq": 4, "target_update_interval": 1_000, "exploration_fraction": 0.3,
                  "exploration_final_eps": 0.05},
}


@dataclass(frozen=True)
class AgentConfig:
    """Training settings of one agent.

    Attributes:
        level: ``strategic`` (PPO), ``tactical`` (DDPG) or ``execution`` (DQN).
        total_timesteps: environment step budget (training may stop earlier).
        net_arch: hidden layer sizes of the policy (and critic) networks.
        eval_freq: environment steps between validation evaluations.
        n_eval_episodes: validation episodes per evaluation.
        patience: evaluations without a new best before stopping.
        min_evals: evaluations before patience starts counting.
        seed: every seed derives from it.
        torch_threads: torch intra-op threads (1 keeps runs reproducible and leaves a core free).
        hyper: algorithm keyword arguments on top of :data:`DEFAULT_HYPER`.
    """

    level: Level
    total_timesteps: int = 50_000
    net_arch: tuple[int, ...] = (64, 64)
    eval_freq: int = 5_000
    n_eval_episodes: int = 1
    patience: int = 5
    min_evals: int = 3
    seed: int = 0
    torch_threads: int = 1
    hyper: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, not {self.level!r}")
        for name in ("total_timesteps", "eval_freq", "n_eval_episodes", "torch_threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"AgentConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.patience < 0 or self.min_evals < 0:
            raise ValueError(f"AgentConfig.patience and min_evals must be >= 0, got {self.patience}, {self.min_evals}")
        if not self.net_arch or any(int(n) < 1 for n in self.net_arch):
            raise ValueError(f"AgentConfig.net_arch must be positive layer sizes, got {self.net_arch!r}")
        unknown = set(self.hyper) - set(DEFAULT_HYPER[self.level])
        if unknown:
            raise ValueError(f"AgentConfig.hyper: unknown keys {sorted(unknown)} for {self.level}; "
                             f"known: {sorted(DEFAULT_HYPER[self.level])}")
        object.__setattr__(self, "net_arch", tuple(int(n) for n in self.net_arch))
        object.__setattr__(self, "hyper", MappingProxyType(dict(self.hyper)))

    @property
    def algorithm(self) -> type[BaseAlgorithm]:
        """Return the SB3 algorithm class of the level."""
        return ALGORITHMS[self.level]

    def effective_hyper(self) -> dict[str, Any]:
        """Return the algorithm hyperparameters after overrides."""
        return {**DEFAULT_HYPER[self.level], **dict(self.hyper)}

    def to_dict(self) -> dict[str, Any]:
        """Return plain JSON-able data (hashed into the registry's config_hash)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["net_arch"] = list(self.net_arch)
        d["hyper"] = self.effective_hyper()
        d["algorithm"] = self.algorithm.__name__
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AgentConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: v for k, v in d.items() if k != "algorithm"})


@dataclass
class TrainResult:
    """A trained agent and how training went."""

    model: BaseAlgorithm
    config: AgentConfig
    timesteps: int  # environment steps actually taken
    stopped_early: bool
    best_mean_reward: float  # validation, of the returned model
    evaluations: list[dict[str, float]]  # one per evaluation: timesteps, mean and std reward


def make_agent(config: AgentConfig, env: gym.Env, tensorboard_log: str | Path | None = None,
               obs_stats: tuple[list[float], list[float]] | None = None) -> BaseAlgorithm:
    """Build an untrained, seeded agent on ``env`` (wrapped in a Monitor).

    ``obs_stats`` (mean, scale) puts a :class:`Standardize` layer in front of the networks.
    With ``n_envs`` > 1 (PPO) the agent steps ``env`` and deep copies of it in a
    ``DummyVecEnv``; SB3 seeds copy ``i`` with ``seed + i``.
    """
    set_random_seed(config.seed)
    torch.set_num_threads(config.torch_threads)
    hyper = config.effective_hyper()
    kwargs: dict[str, Any] = {"seed": config.seed, "verbose": 0, "device": "cpu",
                              "tensorboard_log": None if tensorboard_log is None else str(tensorboard_log)}
    arch = list(config.net_arch)
    if config.level == "tactical":
        sigma = float(hyper.pop("noise_sigma"))
        n = int(np.prod(env.action_space.shape or (1,)))
        kwargs["action_noise"] = NormalActionNoise(np.zeros(n), sigma * np.ones(n))
        kwargs["policy_kwargs"] = {"net_arch": {"pi": arch, "qf": arch}}
    elif config.level == "strategic":
        kwargs["policy_kwargs"] = {"net_arch": {"pi": arch, "vf": arch}}
    else:
        kwargs["policy_kwargs"] = {"net_arch": arch}
    if obs_stats is not None:
        kwargs["policy_kwargs"].update(features_extractor_class=Standardize, features_extractor_kwargs={
            "mean": [float(v) for v in obs_stats[0]], "scale": [float(v) for v in obs_stats[1]]})
    envs = [env, *(copy.deepcopy(env) for _ in range(int(hyper.pop("n_envs", 1)) - 1))]
    venv = DummyVecEnv([_monitored(e) for e in envs])
    return config.algorithm("MlpPolicy", venv, **kwargs, **hyper)


def _monitored(env: gym.Env) -> Callable[[], gym.Env]:
    return lambda: Monitor(env)


class Standardize(BaseFeaturesExtractor):
    """Observation -> ``clip((obs - mean) / scale, -clip, clip)`` with constants fixed at training start.

    Part of the policy, so ``predict`` on raw observations and the exported graph
    both standardise the same way (raw market features such as ``rsi_14`` live on
    very different scales).
    """

    def __init__(self, observation_space: gym.spaces.Box, mean: list[float], scale: list[float],
                 clip: float = 10.0) -> None:
        super().__init__(observation_space, int(np.prod(observation_space.shape)))
        self.mean: torch.Tensor
        self.inv_scale: torch.Tensor
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("inv_scale", 1.0 / torch.as_tensor(scale, dtype=torch.float32))
        self.clip = float(clip)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        z = (observations.flatten(1) - self.mean) * self.inv_scale
        return torch.clamp(z, -self.clip, self.clip)


def observation_stats(env: gym.Env, n: int = 5_000, seed: int = 0) -> tuple[list[float], list[float]]:
    """Return per-dimension mean and scale of observations from a seeded random-action rollout.

    A scale below 1e-6 (a constant input) becomes 1.
    """
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    rows = [obs]
    for _ in range(n - 1):
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
        rows.append(obs)
    x = np.asarray(rows, np.float64)
    scale = x.std(axis=0)
    return x.mean(axis=0).tolist(), np.where(scale < 1e-6, 1.0, scale).tolist()


class _Progress(BaseCallback):
    """A tqdm bar over environment steps."""

    def __init__(self, total: int, desc: str) -> None:
        super().__init__()
        self.total, self.desc = total, desc
        self.bar: Any = None

    def _on_training_start(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=self.total, desc=self.desc, unit="step", leave=False)

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


def train_agent(config: AgentConfig, train_env: gym.Env, valid_env: gym.Env,
                tensorboard_log: str | Path | None = None, progress: bool = False,
                run_name: str | None = None, standardize: bool = True) -> TrainResult:
    """Train an agent with validation-based early stopping and return the best validated model.

    Args:
        config: agent settings.
        train_env: environment over the training slice.
        valid_env: environment over a later validation slice (deterministic episodes are scored).
        tensorboard_log: directory for TensorBoard event files (none when ``None``).
        progress: show a tqdm bar.
        run_name: TensorBoard run name (default: the algorithm name).
        standardize: standardise observations inside the policy with statistics of a
            seeded random-action rollout of ``train_env`` (:func:`observation_stats`).
    """
    stats = observation_stats(train_env, seed=config.seed) if standardize else None
    model = make_agent(config, train_env, tensorboard_log, stats)
    venv = DummyVecEnv([lambda: Monitor(valid_env)])
    venv.seed(config.seed + 1)
    stop = StopTrainingOnNoModelImprovement(config.patience, config.min_evals)
    with tempfile.TemporaryDirectory(prefix="rl-best-") as best_dir:
        evaluate = EvalCallback(venv, callback_after_eval=stop, n_eval_episodes=config.n_eval_episodes,
                                eval_freq=config.eval_freq, best_model_save_path=best_dir, log_path=best_dir,
                                deterministic=True, verbose=0, warn=False)
        callbacks: list[BaseCallback] = [evaluate]
        if progress:
            callbacks.append(_Progress(config.total_timesteps, f"train {config.level}"))
        model.learn(config.total_timesteps, callback=CallbackList(callbacks),
                    tb_log_name=run_name or config.algorithm.__name__)
        steps = int(model.num_timesteps)
        evals = [{"timesteps": int(t), "mean_reward": float(np.mean(r)), "std_reward": float(np.std(r))}
                 for t, r in zip(evaluate.evaluations_timesteps, evaluate.evaluations_results, strict=True)]
        best = Path(best_dir) / "best_model.zip"
        if best.is_file():
            model = config.algorithm.load(best, env=model.get_env(), device="cpu")
            best_reward = float(evaluate.best_mean_reward)
        else:  # budget ended before the first evaluation: score the final model once
            from stable_baselines3.common.evaluation import evaluate_policy

            mean, _ = evaluate_policy(model, venv, n_eval_episodes=config.n_eval_episodes, deterministic=True,
                                      warn=False)
            best_reward = float(mean)  # type: ignore[arg-type]
    venv.close()
    return TrainResult(model, config, steps, steps < config.total_timesteps, best_reward, evals)


def save_agent(result: TrainResult, directory: str | Path) -> Path:
    """Write ``agent.zip`` (SB3) and ``agent.json`` (config and training record); return the directory."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    result.model.save(d / "agent.zip")
    meta = {"config": result.config.to_dict(), "timesteps": result.timesteps,
            "stopped_early": result.stopped_early, "best_mean_reward": result.best_mean_reward,
            "evaluations": result.evaluations}
    (d / "agent.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return d


def load_agent(directory: str | Path, env: gym.Env | None = None) -> TrainResult:
    """Load what :func:`save_agent` wrote (``env`` optional: needed only to train on)."""
    d = Path(directory)
    meta_path = d / "agent.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"no saved agent at {d} (missing agent.json); train one first")
    meta = json.loads(meta_path.read_text())
    config = AgentConfig.from_dict(meta["config"])
    torch.set_num_threads(config.torch_threads)
    model = config.algorithm.load(d / "agent.zip", env=env, device="cpu")
    return TrainResult(model, config, int(meta["timesteps"]), bool(meta["stopped_early"]),
                       float(meta["best_mean_reward"]), list(meta["evaluations"]))


def deterministic_actions(model: BaseAlgorithm, obs: np.ndarray) -> np.ndarray:
    """Return the agent's deterministic actions for a batch of observations ``[n, d]`` as ``[n, k]``."""
    act, _ = model.predict(np.asarray(obs, np.float32), deterministic=True)
    return np.asarray(act).reshape(len(obs), -1)

