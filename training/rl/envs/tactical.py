"""Tactical environment: one asset, continuous target position in [-1, 1].

Timing (the seed's flaw fixed): the observation at step ``t`` is what is known at
the close of bar ``t``; the action taken on it trades at the *next* bar's open
(``open[t + 1]``, plus slippage against the trade, plus a fee on the traded
notional), and the reward is the equity's move from the close of ``t`` to the
close of ``t + 1``.  Holding time counts bars, not trades.

Accounting (exact, per step; :class:`TacticalBook`, which the live flow can keep too)::

    E_open   = cash + units * open[t+1]
    delta    = target * E_open / open[t+1] - units      (skipped if |target - w_open| <= min_trade)
    fill     = open[t+1] * (1 + slippage * sign(delta))
    fee      = fee_rate * |delta| * fill
    cash    -= delta * fill + fee ;  units += delta
    E        = cash + units * close[t+1]

Reward = w_lr * log(E / E_prev) + w_dsr * DSR - w_dd * drawdown - w_to * turnover,
each component in ``info``.

Observation: the asset's market features, then (when ``md.signal`` is set,
``python -m training.rl train tactical --ensemble-prob``) the ensemble's calibrated
probability of the bar, then the book's state terms (``TACTICAL_STATE``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from flows.execution.costs import COSTS
from inference.rl_observation import TacticalBook
from training.rl.data import MarketData
from training.rl.envs.common import DifferentialSharpe, check_episode, check_range, episode_start


@dataclass(frozen=True)
class TacticalConfig:
    """Settings of :class:`TacticalEnv` (fractions are of price or equity)."""

    initial_equity: float = 10_000.0
    fee_rate: float = COSTS.taker_fee  # taker fee on traded notional
    slippage: float = COSTS.flat_slippage  # adverse fraction of the open price per trade
    max_position: float = 1.0  # |exposure| cap; action 1 means max_position
    allow_short: bool = True
    min_trade: float = 0.0  # rebalance only when the target moves the exposure by more than this
    episode_bars: int | None = None  # None: the whole data, from the first bar
    random_start: bool = True  # with episode_bars: start at a random bar
    w_log_return: float = 1.0
    w_dsr: float = 0.0
    w_drawdown: float = 0.0
    w_turnover: float = 0.0
    dsr_eta: float = 0.01
    dsr_clip: float = 10.0
    ruin_equity: float = 0.05  # episode terminates when equity falls below this fraction of the start

    def __post_init__(self) -> None:
        o = "TacticalConfig"
        check_range(o, "initial_equity", self.initial_equity, 1e-9)
        check_range(o, "fee_rate", self.fee_rate, 0.0, 0.1)
        check_range(o, "slippage", self.slippage, 0.0, 0.1)
        check_range(o, "max_position", self.max_position, 0.0, 10.0)
        check_range(o, "min_trade", self.min_trade, 0.0, 1.0)
        for w in ("w_log_return", "w_dsr", "w_drawdown", "w_turnover"):
            check_range(o, w, getattr(self, w), 0.0)
        check_range(o, "dsr_eta", self.dsr_eta, 1e-6, 1.0)
        check_range(o, "dsr_clip", self.dsr_clip, 0.0)
        check_range(o, "ruin_equity", self.ruin_equity, 0.0, 1.0)


class TacticalEnv(gym.Env[np.ndarray, np.ndarray]):
    """Position sizing on one asset of a :class:`MarketData` (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, md: MarketData, asset: int = 0, config: TacticalConfig | None = None,
                 seed: int | None = None) -> None:
        if not 0 <= asset < len(md.symbols):
            raise ValueError(f"TacticalEnv: asset {asset} out of range for symbols {list(md.symbols)}")
        self.md, self.asset, self.config = md, asset, config or TacticalConfig()
        self.steps_per_episode = check_episode("TacticalConfig", md.n_bars, self.config.episode_bars)
        self.symbol = md.symbols[asset]
        # [T, F] float32, then the ensemble's probability when the data carries it ([T, F + 1]): the
        # columns the stream's scoring step writes before the book's state terms
        self.features = np.ascontiguousarray(md.features[:, asset] if md.signal is None else np.concatenate(
            [md.features[:, asset], md.signal[:, asset, None]], axis=1))
        # python floats: scalar arithmetic on them is several times faster than on numpy scalars
        self._open: list[float] = md.open[:, asset].tolist()
        self._close: list[float] = md.close[:, asset].tolist()
        n_obs = self.features.shape[1] + 5
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (n_obs,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.position_cap = self.config.max_position  # the hierarchy may lower it between steps
        self._dsr = DifferentialSharpe(self.config.dsr_eta, self.config.dsr_clip)
        self._seed = seed
        self._reset_state(0)

    def _reset_state(self, start: int) -> None:
        self.t = start
        self.end = start + self.steps_per_episode
        self.book = TacticalBook(self.config.initial_equity)
        self._dsr.reset()

    def observation(self) -> np.ndarray:
        """Return the observation at the current bar's close."""
        return self.book.observation(self.features[self.t], self._close[self.t])

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode; ``options={"start": i}`` pins the first bar."""
        if seed is None and self._seed is not None:
            seed, self._seed = self._seed, None
        super().reset(seed=seed)
        start = episode_start("TacticalEnv", options, 0, self.md.n_bars - 1 - self.steps_per_episode,
                              self.config.episode_bars is not None and self.config.random_start, self.np_random)
        self._reset_state(start)
        self.position_cap = self.config.max_position
        return self.observation(), {"t": start, "equity": self.book.equity}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Trade to the target at the next open, hold to the next close."""
        c = self.config
        a = float(action[0])
        if not -math.inf < a < math.inf:
            raise ValueError(f"TacticalEnv.step: action {a!r} is not finite")
        target = (-1.0 if a < -1.0 else 1.0 if a > 1.0 else a) * self.position_cap
        if target < 0.0 and not c.allow_short:
            target = 0.0
        t1 = self.t + 1
        book = self.book
        prev = book.equity
        fee, traded, eq_open = book.execute(target, self._open[t1], c.fee_rate, c.slippage, c.min_trade)
        pc = self._close[t1]
        eq = book.mark(pc)
        self.t = t1
        terminated = eq <= c.ruin_equity * c.initial_equity
        lr = math.log(max(eq, 1e-12 * c.initial_equity) / prev)
        dd = 1.0 - eq / book.peak
        dsr = self._dsr.update(lr)
        turnover = traded / eq_open
        reward = c.w_log_return * lr + c.w_dsr * dsr - c.w_drawdown * dd - c.w_turnover * turnover
        info = {"t": t1, "equity": eq, "cash": book.cash, "units": book.units, "fee": fee, "traded": traded,
                "log_return": lr, "dsr": dsr, "drawdown": dd, "turnover": turnover}
        obs = book.observation(self.features[t1], pc)
        return obs, reward, bool(terminated), t1 >= self.end and not terminated, info
