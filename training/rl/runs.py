"""What a training run of each level is made of: data, environments, agent settings, held-out observations.

Shared by the CLI (``python -m training.rl``), the evaluation and the benchmark so
that a policy is always trained, exported and evaluated on the same environment
settings.  Splits are by time: ``split_by_time(md, 0.70, 0.85)`` gives training,
validation (early stopping, export parity) and test (evaluation only) slices.

Default features (:func:`rl_features`) leave out the ones that do not mean the
same in training and live: price-scaled ones (``macd*``, ``atr_14``: a policy
trained on 2021 BTC prices would see other magnitudes in 2024) and those that
candle files cannot carry (``trade_count``, ``taker_imbalance``, ``vwap_dist``
are placeholders when a candle file has no trades, real in the live flow).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from flows.records import Bar
from flows.settings import Settings
from training.rl.agents import AgentConfig, Level
from training.rl.data import ALL_FEATURES, MarketData, market_data_from_bars
from training.rl.envs.execution import ExecutionConfig, ExecutionEnv
from training.rl.envs.strategic import StrategicConfig, StrategicEnv
from training.rl.envs.tactical import TacticalConfig, TacticalEnv

SPLITS = (0.70, 0.85)  # train | validation | test, by time
TIMEFRAMES: dict[str, str] = {"strategic": "1h", "tactical": "1h", "execution": "5m"}
SKEWED_FEATURES = ("macd", "macd_signal", "macd_hist", "atr_14", "trade_count", "taker_imbalance", "vwap_dist")
CROSS_NEEDS_BTC = ("corr_btc_60", "beta_btc_60")


def rl_features(symbols: Sequence[str]) -> tuple[str, ...]:
    """Return the default observation features (see the module docstring)."""
    drop = set(SKEWED_FEATURES) | (set() if "BTC/USDT" in symbols else set(CROSS_NEEDS_BTC))
    return tuple(f for f in ALL_FEATURES if f not in drop)


class EpisodeSchedule(gym.Env[np.ndarray, Any]):
    """Several environments of one level as one: each episode runs on one of them.

    Without ``schedule`` the environment of an episode is drawn with the seeded
    ``np_random`` and resets randomly (training).  With ``schedule``, a list of
    ``(env index, reset options)``, episodes go through it in order, cyclically
    (validation and evaluation: the same episodes every time).
    """

    metadata = {"render_modes": []}

    def __init__(self, envs: Sequence[gym.Env[np.ndarray, Any]],
                 schedule: Sequence[tuple[int, dict[str, Any] | None]] | None = None) -> None:
        if not envs:
            raise ValueError("EpisodeSchedule needs at least one environment")
        self.envs, self.schedule = list(envs), list(schedule or [])
        self.observation_space, self.action_space = envs[0].observation_space, envs[0].action_space
        for e in self.envs[1:]:
            if e.observation_space != self.observation_space or e.action_space != self.action_space:
                raise ValueError("EpisodeSchedule: environments differ in observation or action space")
        self.current, self._episode = self.envs[0], 0

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start the next episode (``seed`` reseeds the draw and every environment)."""
        super().reset(seed=seed)
        if seed is not None:
            for i, e in enumerate(self.envs):
                e.reset(seed=seed + 1 + i)
            self._episode = 0
        if self.schedule:
            i, opts = self.schedule[self._episode % len(self.schedule)]
        else:
            i, opts = int(self.np_random.integers(len(self.envs))), None
        self._episode += 1
        self.current = self.envs[i]
        obs, info = self.current.reset(options=options or opts)
        return obs, {**info, "env": i}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Step the current episode's environment."""
        obs, reward, terminated, truncated, info = self.current.step(action)
        return obs, float(reward), terminated, truncated, info


def env_configs(level: Level, quick: bool = False) -> tuple[Any, Any]:
    """Return the (training, evaluation) environment configs of a level.

    Rewards are scaled to percent (``w_log_return = 100``) so that per-step rewards are
    of order one; evaluation episodes run the whole slice from its first bar.  Tactical:
    a turnover penalty of 1 % of equity per unit traded on top of the fees (a first run
    without it, and with a drawdown weight of 1, churned: turnover ~1000x a year on the
    test slice, see training/reports/rl/REPORT.md).
    """
    if level == "tactical":
        train = TacticalConfig(w_log_return=100.0, w_drawdown=0.05, w_turnover=1.0,
                               episode_bars=256 if quick else 720, random_start=True)
        return train, replace(train, episode_bars=None, random_start=False)
    if level == "strategic":
        train_s = StrategicConfig(w_log_return=100.0, risk_aversion=50.0, episode_rebalances=30 if quick else 90,
                                  random_start=True)
        return train_s, replace(train_s, episode_rebalances=None, random_start=False)
    return ExecutionConfig(random_start=True), ExecutionConfig(random_start=False)


def _episode_envs(level: Level, md: MarketData, config: Any, seed: int) -> list[gym.Env[np.ndarray, Any]]:
    if level == "tactical":
        return [TacticalEnv(md, a, config, seed=seed + a) for a in range(len(md.symbols))]
    if level == "strategic":
        return [StrategicEnv(md, config, seed=seed)]
    return [ExecutionEnv(md, config, asset=a, seed=seed + a) for a in range(len(md.symbols))]


def execution_schedule(md: MarketData, config: ExecutionConfig, per_asset: int) -> list[tuple[int, dict[str, Any]]]:
    """Return fixed (asset, start, side) parent orders spread evenly over ``md``, sides alternating."""
    first, last = config.volume_window - 1, md.n_bars - 1 - config.horizon_bars
    if last < first:
        raise ValueError(f"{md.n_bars} bars are too few for execution episodes")
    starts = np.linspace(first, last, per_asset).astype(int)
    return [(a, {"start": int(s), "side": "buy" if k % 2 == 0 else "sell"})
            for a in range(len(md.symbols)) for k, s in enumerate(starts)]


def _fit_episode(cfg: Any, n_bars: int) -> Any:
    """Shorten a random-start episode that would not fit in ``n_bars`` to half the data (small data sets)."""
    if isinstance(cfg, TacticalConfig) and cfg.episode_bars is not None and cfg.episode_bars > n_bars - 1:
        return replace(cfg, episode_bars=max(1, (n_bars - 1) // 2))
    if isinstance(cfg, StrategicConfig) and cfg.episode_rebalances is not None:
        most = (n_bars - 1) // cfg.rebalance_bars
        if cfg.episode_rebalances > most:
            return replace(cfg, episode_rebalances=max(1, most // 2))
    return cfg


def make_env(level: Level, md: MarketData, seed: int, evaluation: bool, quick: bool = False,
             episodes_per_asset: int = 50) -> tuple[EpisodeSchedule, int]:
    """Return a level's environment over ``md`` and its number of distinct episodes.

    ``evaluation``: the fixed schedule (each asset's slice once; execution: fixed parent orders).
    """
    train_cfg, eval_cfg = env_configs(level, quick)
    cfg = _fit_episode(eval_cfg if evaluation else train_cfg, md.n_bars)
    envs = _episode_envs(level, md, cfg, seed)
    if not evaluation:
        return EpisodeSchedule(envs), len(envs)
    if level == "execution":
        schedule: list[tuple[int, dict[str, Any] | None]] = list(
            execution_schedule(md, cfg, episodes_per_asset))
    else:
        schedule = [(i, None) for i in range(len(envs))]
    return EpisodeSchedule(envs, schedule), len(schedule)


def env_config_dict(level: Level, quick: bool = False) -> dict[str, Any]:
    """Return the training and evaluation environment configs as plain data."""
    train, evaluation = env_configs(level, quick)
    return {"train": asdict(train), "evaluation": asdict(evaluation)}


def agent_config(level: Level, seed: int, quick: bool = False, timesteps: int | None = None) -> AgentConfig:
    """Return the agent settings of a level (``quick``: a budget small enough for the bootstrap)."""
    if quick:
        hyper: dict[str, Any] = {"strategic": {"n_steps": 64}, "execution": {"learning_starts": 500},
                                 "tactical": {"learning_starts": 500, "train_freq": 2}}[level]
        steps = {"strategic": 4_096, "tactical": 3_000, "execution": 6_000}[level]
        return AgentConfig(level, total_timesteps=timesteps or steps, eval_freq=1_000, patience=2, min_evals=1,
                           seed=seed, hyper=hyper)
    steps = {"strategic": 60_000, "tactical": 40_000, "execution": 60_000}[level]
    return AgentConfig(level, total_timesteps=timesteps or steps, eval_freq=5_000, patience=4, min_evals=2,
                       seed=seed)


def rollout_observations(env: gym.Env[np.ndarray, Any], act: Any, n: int, seed: int = 0,
                         explore: float = 0.2) -> np.ndarray:
    """Return ``n`` observations visited by ``act(obs [1, d]) -> action`` (with seeded random actions mixed in).

    Used for export parity: realistic states, plus random actions so that positions and
    remaining quantities other than the policy's own also appear.
    """
    rng = np.random.default_rng(seed)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    rows = []
    for _ in range(n):
        rows.append(obs)
        a = env.action_space.sample() if rng.random() < explore else act(obs[None])[0]
        obs, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            obs, _ = env.reset()
    return np.asarray(rows, np.float32)


def candle_source(data_dir: str | Path, symbols: Sequence[str], timeframe: str) -> Path:
    """Return the directory holding ``BASE_QUOTE-<timeframe>.*`` files of ``symbols``: ``data_dir`` or a child of it.

    So ``--data-dir ../shared/data`` finds ``binance-spot-1h/`` for 1h and ``binance-spot-5m-2024/`` for 5m.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--data-dir {root} is not a directory")
    stem = f"{symbols[0].replace('/', '_')}-{timeframe}"
    for d in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
        if any(d.glob(f"{stem}.*")):
            return d
    raise FileNotFoundError(f"no candle file {stem}.* in {root} or its subdirectories")


def stored_market_data(settings: Settings, symbols: Sequence[str], timeframe: str, start: str | None,
                       end: str | None, features: Sequence[str]) -> MarketData:
    """Read the bars a backfill stored in the profile's offline store and recompute their features.

    The features come from the same live operators (:func:`market_data_from_bars`), so
    they equal what the backfill wrote; bars are read, not features, because the
    environments need the candles too.
    """
    import pandas as pd

    from flows.stores.schema import BAR_COLUMNS
    from training.datasets import load_bars

    t0 = pd.Timestamp(start or "1970-01-01", tz="UTC")
    t1 = pd.Timestamp(end or "2200-01-01", tz="UTC")
    df = load_bars(settings, tuple(symbols), timeframe, t0, t1, columns=BAR_COLUMNS)
    if df.empty:
        raise ValueError(f"no stored {timeframe} bars of {list(symbols)} in the {settings.profile} offline store "
                         f"(run a backfill, or pass --data-dir with candle files)")
    df = df.drop_duplicates(["symbol", "ts"]).reset_index(drop=True)
    # NULL kline extras (plain OHLCV backfills): the backfill's own convention for candles without trades
    typical = (df["high"] + df["low"] + df["close"]) / 3.0
    df["vwap"] = df["vwap"].astype(float).fillna(typical)
    df["quote_volume"] = df["quote_volume"].astype(float).fillna(df["volume"] * df["vwap"])
    df["trade_count"] = df["trade_count"].astype(float).fillna(0.0)
    df["taker_buy_volume"] = df["taker_buy_volume"].astype(float).fillna(df["volume"] / 2.0)
    ms = (df["ts"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    streams = {}
    for s in symbols:
        g = df[df.symbol == s]
        cols = g[list(BAR_COLUMNS[3:])].to_numpy(np.float64).tolist()
        streams[s] = [Bar(s, timeframe, int(t), r[0], r[1], r[2], r[3], r[4], r[5], int(r[6]), r[7], r[8])
                      for t, r in zip(ms[g.index].tolist(), cols, strict=True)]
    return market_data_from_bars(streams, timeframe, features)
