"""Benchmark: RL environment steps, agent training steps and exported-policy latency.

Usage::

    .venv/bin/python tests/bench/bench_rl.py            # synthetic market (seeded), about 3 minutes
    .venv/bin/python tests/bench/bench_rl.py --train-steps 2048 --env-steps 50000

1. Raw environment steps per second with random actions (``env_steps_per_second``,
   actions sampled up front), for the tactical, strategic and execution environments.
   Baseline in the same run: the same loop on a pandas environment that reads its
   row with ``DataFrame.iloc`` in ``step`` (the seed specification's style).
2. Training environment steps per second (``model.learn``, 64x64 MLP, torch with one
   thread, CPU): PPO on the strategic env, DDPG on the tactical env, DQN on the
   execution env.  Baseline: the same algorithm and settings on gymnasium's Pendulum-v1
   (PPO, DDPG) or CartPole-v1 (DQN): the algorithm's own cost with a trivial env.
3. One observation through the exported tactical policy: p50 / p99 of
   ``PolicyRunner.act`` (onnxruntime, one thread).  Baseline: SB3
   ``model.predict(obs, deterministic=True)`` of the same policy.

Targets (issue 5): tactical env >= 50,000 steps/s; PPO >= 1,000 steps/s; ONNX p99 <= 50 us.
Not a test; machines here are noisy: compare ratios.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from inference.policy import PolicyRunner  # noqa: E402
from training.rl.agents import FAMILIES, AgentConfig, make_agent  # noqa: E402
from training.rl.data import synthetic_market_data  # noqa: E402
from training.rl.envs.common import env_steps_per_second  # noqa: E402
from training.rl.envs.execution import ExecutionEnv  # noqa: E402
from training.rl.envs.strategic import StrategicEnv  # noqa: E402
from training.rl.envs.tactical import TacticalEnv  # noqa: E402
from training.rl.export import export_policy, register_policy  # noqa: E402
from training.rl.runs import env_configs, rollout_observations  # noqa: E402


class PandasTactical(gym.Env[np.ndarray, np.ndarray]):
    """Baseline: a one-asset env that reads its row through ``DataFrame.iloc`` in ``step``."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.df, self.t = frame, 0
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (frame.shape[1] + 5,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.equity, self.position = 10_000.0, 0.0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.t, self.equity, self.position = 0, 10_000.0, 0.0
        return self._obs(), {}

    def _obs(self) -> np.ndarray:
        row = self.df.iloc[self.t]
        return np.concatenate([row.to_numpy(np.float32), np.zeros(5, np.float32)])

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        row, nxt = self.df.iloc[self.t], self.df.iloc[self.t + 1]
        ret = nxt["close"] / row["close"] - 1.0
        cost = 0.001 * abs(float(action[0]) - self.position)
        self.position = float(action[0])
        self.equity *= 1.0 + self.position * ret - cost
        self.t += 1
        return self._obs(), float(np.log1p(self.position * ret - cost)), False, self.t >= len(self.df) - 1, {}


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def _row(name: str, value: float, baseline: float, unit: str, target: str = "") -> None:
    print(f"{name:<42} {value:>12,.1f} {baseline:>12,.1f}  {unit:<8} {value / baseline:>7.2f}x  {target}")


def bench_envs(md: Any, md5: Any, n: int) -> None:
    print(f"\n1. environment steps per second (random actions, {n:,} steps, best of 3)")
    print(f"{'':<42} {'figure':>12} {'baseline':>12}  {'unit':<8} {'ratio':>8}")
    frame = pd.DataFrame(md.features[:, 0].astype(np.float64), columns=list(md.feature_names))
    frame["close"] = md.close[:, 0]
    base = env_steps_per_second(lambda: PandasTactical(frame), n=n // 5)
    tr_t, _ = env_configs("tactical")
    tr_s, _ = env_configs("strategic")
    tr_e, _ = env_configs("execution")
    figures = {"tactical (TacticalEnv)": env_steps_per_second(lambda: TacticalEnv(md, 0, tr_t, seed=0), n=n),
               "strategic (StrategicEnv, 24 bars/step)": env_steps_per_second(lambda: StrategicEnv(md, tr_s, seed=0),
                                                                              n=n // 5),
               "execution (ExecutionEnv)": env_steps_per_second(lambda: ExecutionEnv(md5, tr_e, seed=0), n=n)}
    for name, v in figures.items():
        _row(name, v, base, "steps/s", ">= 50,000" if name.startswith("tactical") else "")
    print(f"   baseline: pandas .iloc env {base:,.0f} steps/s")


def _learn_rate(model: Any, steps: int) -> float:
    t0 = time.perf_counter()
    model.learn(steps)
    return steps / (time.perf_counter() - t0)


def bench_training(md: Any, md5: Any, steps: int) -> None:
    print(f"\n2. training environment steps per second ({steps:,} steps after warm-up, 64x64 MLP, torch threads 1)")
    print(f"{'':<42} {'figure':>12} {'baseline':>12}  {'unit':<8} {'ratio':>8}")
    tr_t, _ = env_configs("tactical")
    tr_s, _ = env_configs("strategic")
    tr_e, _ = env_configs("execution")
    envs = {"strategic": lambda: StrategicEnv(md, tr_s, seed=0), "tactical": lambda: TacticalEnv(md, 0, tr_t, seed=0),
            "execution": lambda: ExecutionEnv(md5, tr_e, seed=0)}
    hyper = {"strategic": {}, "tactical": {"learning_starts": 200},  # PPO: the defaults (4 envs x 256 steps)
             "execution": {"learning_starts": 200}}
    for level, make in envs.items():
        cfg = AgentConfig(level, net_arch=(64, 64), seed=0, hyper=hyper[level])  # type: ignore[arg-type]
        rates = []
        for env in (make(), _reference_env(level)):
            model = make_agent(cfg, env)
            model.learn(min(steps // 4, 512))  # warm-up: first rollout / learning_starts / torch init
            rates.append(_learn_rate(model, steps))
        target = ">= 1,000" if level == "strategic" else ""
        _row(f"{level} ({cfg.algorithm.__name__})", rates[0], rates[1], "steps/s", target)
    print("   baseline: the same algorithm and settings on Pendulum-v1 (PPO, DDPG) and CartPole-v1 (DQN)")


def _reference_env(level: str) -> gym.Env[Any, Any]:
    """Return gymnasium's classic control env with the level's kind of action space."""
    return gym.make("CartPole-v1") if level == "execution" else gym.make("Pendulum-v1")


def bench_policy(md: Any, repeats: int) -> None:
    print(f"\n3. one observation through the tactical policy ({repeats:,} calls)")
    print(f"{'':<42} {'figure':>12} {'baseline':>12}  {'unit':<8} {'ratio':>8}")
    tr_t, _ = env_configs("tactical")
    env = TacticalEnv(md, 0, tr_t, seed=0)
    model = make_agent(AgentConfig("tactical", net_arch=(64, 64), seed=0), env,
                       obs_stats=([0.0] * env.observation_space.shape[0], [1.0] * env.observation_space.shape[0]))
    obs = rollout_observations(env, lambda o: model.predict(o, deterministic=True)[0], 512, seed=1)
    with tempfile.TemporaryDirectory() as root:
        register_policy(root, FAMILIES["tactical"], model, export_policy(model, obs), feature_service="bench_1h_v1",
                        features=md.feature_names, train_start="2024-01-01T00:00:00+00:00",
                        train_end="2024-01-02T00:00:00+00:00", data_hash="-", seeds={"seed": 0}, config={},
                        metrics={})
        runner = PolicyRunner.from_registry(root, "rl_tactical")
    one = [obs[i: i + 1] for i in range(len(obs))]

    def latencies(fn: Any, n: int) -> list[float]:
        for x in one[:100]:  # warm-up
            fn(x)
        out = []
        for k in range(n):
            x = one[k % len(one)]
            t0 = time.perf_counter_ns()
            fn(x)
            out.append((time.perf_counter_ns() - t0) / 1e3)
        return out

    onnx = latencies(runner.act, repeats)
    sb3 = latencies(lambda x: model.predict(x, deterministic=True), repeats // 4)
    for q in (50, 99):
        _row(f"p{q} PolicyRunner.act (ONNX, 1 thread)", _pct(onnx, q), _pct(sb3, q), "us",
             "<= 50" if q == 99 else "")
    print(f"   baseline: SB3 predict(deterministic=True) of the same policy; ratio < 1 means ONNX is faster "
          f"(SB3 p99 / ONNX p99 = {_pct(sb3, 99) / _pct(onnx, 99):.1f}x)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env-steps", type=int, default=100_000)
    p.add_argument("--train-steps", type=int, default=4_096)
    p.add_argument("--policy-calls", type=int, default=20_000)
    p.add_argument("--sections", default="1,2,3")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    md = synthetic_market_data(seed=0, n_bars=5_000, n_assets=3, n_features=18, timeframe="1h")
    md5 = synthetic_market_data(seed=1, n_bars=5_000, n_assets=1, n_features=18, timeframe="5m")
    print(f"synthetic market: {md.n_bars} bars x {len(md.symbols)} assets x {len(md.feature_names)} features")
    sections = set(a.sections.split(","))
    if "1" in sections:
        bench_envs(md, md5, a.env_steps)
    if "2" in sections:
        bench_training(md, md5, a.train_steps)
    if "3" in sections:
        bench_policy(md, a.policy_calls)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
