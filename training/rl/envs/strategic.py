"""Strategic environment: portfolio weights across assets, rebalanced every ``k`` bars.

The observation at step ``t`` is known at the close of bar ``t``: every asset's
features, the portfolio's current weights, and the regime inputs when the data
carries them.  The action becomes target weights (:func:`strategic_weights`:
long-only softmax with a cash leg, or long-short under a gross cap); the
portfolio trades to them at ``open[t + 1]`` (slippage against each trade, a fee
on traded notional; assets whose weight moves by ``min_trade`` or less are left
alone), then holds ``k`` bars.  Reward over the period::

    w_lr * log(E_{t+k} / E_t) - risk_aversion * sum_i r_i^2 + w_dsr * DSR(log(E_{t+k} / E_t))

with ``r_i`` the portfolio's one-bar log returns inside the period (a realized
variance penalty), each term in ``info``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from flows.execution.costs import COSTS
from inference.rl_observation import strategic_observation, strategic_weights
from training.rl.data import MarketData
from training.rl.envs.common import DifferentialSharpe, check_range, episode_start


@dataclass(frozen=True)
class StrategicConfig:
    """Settings of :class:`StrategicEnv`."""

    initial_equity: float = 10_000.0
    fee_rate: float = COSTS.taker_fee
    slippage: float = COSTS.flat_slippage
    rebalance_bars: int = 24  # k: daily on 1h bars
    long_only: bool = True
    gross_cap: float = 1.0  # long-short: sum |w| <= gross_cap
    logit_scale: float = 5.0  # long-only: weights = softmax(logit_scale * action)
    min_trade: float = 0.0
    episode_rebalances: int | None = None  # None: the whole data from the first bar
    random_start: bool = True
    use_regime: bool = True  # put md.regime into the observation when present
    w_log_return: float = 1.0
    risk_aversion: float = 1.0
    w_dsr: float = 0.0
    dsr_eta: float = 0.05
    dsr_clip: float = 10.0
    ruin_equity: float = 0.05

    def __post_init__(self) -> None:
        o = "StrategicConfig"
        check_range(o, "initial_equity", self.initial_equity, 1e-9)
        check_range(o, "fee_rate", self.fee_rate, 0.0, 0.1)
        check_range(o, "slippage", self.slippage, 0.0, 0.1)
        if not (isinstance(self.rebalance_bars, int) and self.rebalance_bars >= 1):
            raise ValueError(f"StrategicConfig.rebalance_bars = {self.rebalance_bars!r} must be an int >= 1")
        check_range(o, "gross_cap", self.gross_cap, 0.0, 10.0)
        check_range(o, "logit_scale", self.logit_scale, 0.0, 50.0)
        check_range(o, "min_trade", self.min_trade, 0.0, 1.0)
        for w in ("w_log_return", "risk_aversion", "w_dsr", "dsr_clip"):
            check_range(o, w, getattr(self, w), 0.0)
        check_range(o, "dsr_eta", self.dsr_eta, 1e-6, 1.0)
        check_range(o, "ruin_equity", self.ruin_equity, 0.0, 1.0)


class StrategicEnv(gym.Env[np.ndarray, np.ndarray]):
    """Allocation across the assets of a :class:`MarketData` (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, md: MarketData, config: StrategicConfig | None = None, seed: int | None = None) -> None:
        self.md, self.config = md, config or StrategicConfig()
        c, k = self.config, self.config.rebalance_bars
        self.n_assets = len(md.symbols)
        max_steps = (md.n_bars - 1) // k
        if max_steps < 1:
            raise ValueError(f"StrategicEnv: {md.n_bars} bars hold no rebalancing period of {k} bars")
        if c.episode_rebalances is not None and not 1 <= c.episode_rebalances <= max_steps:
            raise ValueError(f"StrategicConfig.episode_rebalances = {c.episode_rebalances} must be in "
                             f"[1, {max_steps}] for {md.n_bars} bars and rebalance_bars {k}")
        self.steps_per_episode = c.episode_rebalances or max_steps
        self.regime = md.regime if c.use_regime else None
        n_obs = self.n_assets * len(md.feature_names) + self.n_assets + (
            0 if self.regime is None else self.regime.shape[1])
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (n_obs,), np.float32)
        n_act = self.n_assets + 1 if c.long_only else self.n_assets
        self.action_space = gym.spaces.Box(-1.0, 1.0, (n_act,), np.float32)
        self._dsr = DifferentialSharpe(c.dsr_eta, c.dsr_clip)
        self._seed = seed
        self._reset_state(0)

    def _reset_state(self, start: int) -> None:
        self.t, self.step_count = start, 0
        self.cash = self.equity = self.config.initial_equity
        self.units = np.zeros(self.n_assets)
        self._dsr.reset()

    def weights(self) -> np.ndarray:
        """Return the portfolio's weights at the current bar's close."""
        return self.units * self.md.close[self.t] / self.equity

    def observation(self) -> np.ndarray:
        """Return the observation at the current bar's close."""
        return strategic_observation(self.md.features[self.t], self.weights(),
                                     None if self.regime is None else self.regime[self.t])

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode; ``options={"start": i}`` pins the first bar."""
        if seed is None and self._seed is not None:
            seed, self._seed = self._seed, None
        super().reset(seed=seed)
        start = episode_start("StrategicEnv", options, 0,
                              self.md.n_bars - 1 - self.steps_per_episode * self.config.rebalance_bars,
                              self.config.episode_rebalances is not None and self.config.random_start, self.np_random)
        self._reset_state(start)
        return self.observation(), {"t": start, "equity": self.equity}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Rebalance at the next open, hold ``rebalance_bars`` bars."""
        c, md = self.config, self.md
        a = np.asarray(action, np.float64).reshape(-1)
        if not np.isfinite(a).all():
            raise ValueError(f"StrategicEnv.step: action {a.tolist()} is not finite")
        target = strategic_weights(a, self.n_assets, c.long_only, c.gross_cap, c.logit_scale)
        t1 = self.t + 1
        po = md.open[t1]
        eq_open = self.cash + float(self.units @ po)
        delta = target * eq_open / po - self.units
        move = np.abs(delta * po) / eq_open
        delta = np.where((move > c.min_trade) & (delta != 0.0), delta, 0.0)
        fill = po * (1.0 + c.slippage * np.sign(delta))
        traded_each = np.abs(delta) * fill
        traded = float(traded_each.sum())
        fee = c.fee_rate * traded
        self.cash -= float(delta @ fill) + fee
        self.units = self.units + delta
        prev = eq_bar = self.equity
        end = self.t + c.rebalance_bars
        closes = md.close[t1:end + 1]
        path = self.cash + closes @ self.units  # equity at each close of the period
        floor = 1e-12 * c.initial_equity
        rets = np.diff(np.log(np.maximum(np.concatenate([[eq_bar], path]), floor)))
        eq = float(path[-1])
        ruined = bool((path <= c.ruin_equity * c.initial_equity).any())
        self.equity, self.t = max(eq, floor), end
        self.step_count += 1
        lr = math.log(max(eq, floor) / prev)
        var = float(rets @ rets)
        dsr = self._dsr.update(lr)
        reward = c.w_log_return * lr - c.risk_aversion * var + c.w_dsr * dsr
        info = {"t": end, "equity": eq, "cash": self.cash, "weights": target, "fee": fee, "traded": traded,
                "turnover": traded / eq_open, "log_return": lr, "variance": var, "dsr": dsr}
        truncated = self.step_count >= self.steps_per_episode and not ruined
        return self.observation(), float(reward), ruined, truncated, info
