"""Pieces the environments share: config checks, the differential Sharpe ratio, a speed probe."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np


def check_range(owner: str, name: str, value: float, lo: float, hi: float = math.inf) -> None:
    """Raise ``ValueError`` naming ``owner.name`` unless ``lo <= value <= hi`` (and finite where bounded)."""
    if not (isinstance(value, (int, float)) and lo <= value <= hi) or value != value:
        raise ValueError(f"{owner}.{name} = {value!r} must be in [{lo}, {hi}]")


def check_episode(owner: str, n_bars: int, episode_bars: int | None) -> int:
    """Return the number of steps an episode takes; raise if the data is too short for it."""
    if n_bars < 2:
        raise ValueError(f"{owner}: market data needs at least 2 bars, got {n_bars}")
    if episode_bars is None:
        return n_bars - 1
    if not 1 <= episode_bars <= n_bars - 1:
        raise ValueError(f"{owner}.episode_bars = {episode_bars} must be in [1, {n_bars - 1}] for {n_bars} bars")
    return episode_bars


def episode_start(owner: str, options: dict[str, Any] | None, first: int, last: int, random: bool,
                  rng: np.random.Generator) -> int:
    """Return an episode's first bar: ``options["start"]`` (checked to lie in ``[first, last]``), a draw, or ``first``."""
    if options and "start" in options:
        start = int(options["start"])
        if not first <= start <= last:
            raise ValueError(f"{owner}.reset: start {start} must be in [{first}, {last}]")
        return start
    return int(rng.integers(first, last + 1)) if random else first


class DifferentialSharpe:
    """Moody and Saffell's differential Sharpe ratio: the reward form of the Sharpe ratio.

    ``A`` and ``B`` are exponential moving estimates of the first and second moments
    of the returns with rate ``eta``; the reward for return ``R`` is
    ``(B dA - A dB / 2) / (B - A^2)^{3/2}`` with ``dA = R - A``, ``dB = R^2 - B``,
    taken before the moments move; 0 while the variance estimate is not positive,
    clipped to ``[-clip, clip]``.
    """

    __slots__ = ("eta", "clip", "a", "b")

    def __init__(self, eta: float, clip: float) -> None:
        self.eta, self.clip = eta, clip
        self.a = self.b = 0.0

    def reset(self) -> None:
        """Forget the moments."""
        self.a = self.b = 0.0

    def update(self, r: float) -> float:
        """Return the reward of return ``r`` and move the moments."""
        a, b = self.a, self.b
        da, db = r - a, r * r - b
        var = b - a * a
        d = 0.0 if var <= 1e-18 else (b * da - 0.5 * a * db) / (var * math.sqrt(var))
        self.a, self.b = a + self.eta * da, b + self.eta * db
        return max(-self.clip, min(self.clip, d))


def env_steps_per_second(env_factory: Callable[[], gym.Env[Any, Any]], n: int = 100_000, seed: int = 0,
                         repeats: int = 3) -> float:
    """Return raw environment steps per second with random actions (best of ``repeats``).

    Actions are sampled up front (seeded) so the figure measures the environment's
    ``step`` and ``reset`` (on episode end), not the sampler.
    """
    env = env_factory()
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(min(n, 4096))]
    best = 0.0
    for r in range(repeats):
        env.reset(seed=seed + r)
        step, reset, m = env.step, env.reset, len(actions)
        t0 = time.perf_counter()
        for i in range(n):
            _, _, terminated, truncated, _ = step(actions[i % m])
            if terminated or truncated:
                reset()
        best = max(best, n / (time.perf_counter() - t0))
    env.close()
    return best


class NullEnv(gym.Env[np.ndarray, Any]):
    """An environment that does nothing, with another one's spaces: the baseline of a steps/s figure.

    Its ``step`` returns a fresh copy of a constant observation, the least any
    environment must do, so ``env_steps_per_second(env) / env_steps_per_second(NullEnv(env))``
    is the share of the floor an environment reaches.
    """

    def __init__(self, like: gym.Env[Any, Any], episode_steps: int = 1000) -> None:
        self.observation_space, self.action_space = like.observation_space, like.action_space
        self._obs = np.zeros(like.observation_space.shape or (), np.float32)
        self._n, self._episode_steps = 0, episode_steps

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode."""
        super().reset(seed=seed)
        self._n = 0
        return self._obs.copy(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Return the constant observation."""
        self._n += 1
        return self._obs.copy(), 0.0, False, self._n >= self._episode_steps, {}
