"""Execution environment: work a parent order over minute candles before a deadline.

An episode is one parent order (side, quantity ``Q``) arriving at the close of bar
``t0`` with arrival price ``close[t0]``; it must be done by the close of bar
``t0 + H``.  Each step works bar ``t0 + k`` (k = 1..H) with one discrete action,
chosen on what is known at the close of the bar before:

* ``0`` wait; ``1`` market order for everything left;
* then, for each slice multiple ``m`` (of the TWAP slice ``remaining / bars_left``):
  a market order, and a limit order at each offset below (buy) or above (sell)
  the bar's open.

Fills, from the bar's candle:

* market: at ``open * (1 ± (half_spread + impact * q / mean_volume))``, taker fee;
* limit at ``L``: fills only if the price trades *through* ``L`` (``low < L`` for a
  buy, ``high > L`` for a sell), at ``L``, at most ``limit_participation`` of the
  bar's volume, maker fee; what does not fill is cancelled at the bar's close.

At the deadline what is left is bought (sold) at the last close as a market order
plus ``leftover_penalty`` (a fraction of its notional).  Reward per step = minus
the step's implementation shortfall against the arrival price, in basis points of
the parent's arrival notional: over an episode the rewards sum to ``-IS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from flows.execution.costs import COSTS, EXECUTION_HALF_SPREAD, EXECUTION_MAKER_FEE
from inference.rl_observation import execution_observation
from training.rl.data import MarketData
from training.rl.envs.common import check_range, episode_start

WAIT, MARKET_ALL = 0, 1


@dataclass(frozen=True)
class ExecutionConfig:
    """Settings of :class:`ExecutionEnv` (prices and costs as fractions)."""

    horizon_bars: int = 12  # H: one hour of 5m bars
    side: str = "random"  # "buy", "sell" or "random" (drawn per episode)
    parent_participation: float = 0.05  # Q = this * mean bar volume * H
    volume_window: int = 48  # bars in the trailing mean volume
    slice_multiples: tuple[float, ...] = (0.5, 1.0, 2.0)
    limit_offsets: tuple[float, ...] = (0.0, 0.0005, 0.001)  # below (buy) / above (sell) the bar's open
    half_spread: float = EXECUTION_HALF_SPREAD
    impact: float = 0.005  # market orders: extra cost per unit of q / mean bar volume
    limit_participation: float = 0.1  # a limit order fills at most this share of the bar's volume
    taker_fee: float = COSTS.taker_fee
    maker_fee: float = EXECUTION_MAKER_FEE  # a maker-discount tier, on purpose: see flows.execution.costs
    leftover_penalty: float = 0.002  # on the notional still open at the deadline
    random_start: bool = True

    def __post_init__(self) -> None:
        o = "ExecutionConfig"
        if not (isinstance(self.horizon_bars, int) and self.horizon_bars >= 1):
            raise ValueError(f"{o}.horizon_bars = {self.horizon_bars!r} must be an int >= 1")
        if self.side not in ("buy", "sell", "random"):
            raise ValueError(f"{o}.side = {self.side!r} must be 'buy', 'sell' or 'random'")
        if not (isinstance(self.volume_window, int) and self.volume_window >= 1):
            raise ValueError(f"{o}.volume_window = {self.volume_window!r} must be an int >= 1")
        check_range(o, "parent_participation", self.parent_participation, 1e-9, 10.0)
        if not self.slice_multiples or any(not 0 < m <= 100 for m in self.slice_multiples):
            raise ValueError(f"{o}.slice_multiples = {self.slice_multiples!r} must be non-empty, each in (0, 100]")
        if any(not 0 <= x <= 0.1 for x in self.limit_offsets):
            raise ValueError(f"{o}.limit_offsets = {self.limit_offsets!r} must each be in [0, 0.1]")
        for name in ("half_spread", "impact", "taker_fee", "maker_fee", "leftover_penalty"):
            check_range(o, name, getattr(self, name), 0.0, 1.0)
        check_range(o, "limit_participation", self.limit_participation, 0.0, 1.0)


class ExecutionEnv(gym.Env[np.ndarray, np.int64]):
    """Working one parent order on one asset of minute candles (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, md: MarketData, config: ExecutionConfig | None = None, asset: int = 0,
                 seed: int | None = None) -> None:
        if not 0 <= asset < len(md.symbols):
            raise ValueError(f"ExecutionEnv: asset {asset} out of range for symbols {list(md.symbols)}")
        self.md, self.config, self.asset = md, config or ExecutionConfig(), asset
        c = self.config
        self.first_start = c.volume_window - 1
        self.last_start = md.n_bars - 1 - c.horizon_bars
        if self.last_start < self.first_start:
            raise ValueError(f"ExecutionEnv: {md.n_bars} bars are too few for volume_window {c.volume_window} "
                             f"and horizon_bars {c.horizon_bars}")
        self.features = np.ascontiguousarray(md.features[:, asset])
        self._o, self._h, self._l, self._c, self._v = (getattr(md, k)[:, asset].tolist()
                                                       for k in ("open", "high", "low", "close", "volume"))
        vol = md.volume[:, asset]
        csum = np.concatenate([[0.0], np.cumsum(vol)])
        w = c.volume_window
        idx = np.arange(md.n_bars)
        lo = np.maximum(idx + 1 - w, 0)
        self._mean_vol = ((csum[idx + 1] - csum[lo]) / (idx + 1 - lo)).tolist()  # trailing, includes bar t
        self.actions: list[tuple[str, float, float]] = [("wait", 0.0, 0.0), ("market_all", 0.0, 0.0)]
        for m in map(float, c.slice_multiples):
            self.actions.append(("market", m, 0.0))
            self.actions += [("limit", m, float(off)) for off in c.limit_offsets]
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.features.shape[1] + 7,), np.float32)
        self.action_space = gym.spaces.Discrete(len(self.actions))
        self._seed = seed
        self._start(self.first_start, 1.0, 1.0)

    def _start(self, t0: int, sign: float, quantity: float) -> None:
        self.t0 = self.t = t0
        self.sign, self.quantity, self.remaining = sign, quantity, quantity
        self.arrival = self._c[t0]
        self.filled_qty = self.filled_cost = 0.0  # cost = sum q * p (price only, no fees)
        self.fees = 0.0

    def describe_action(self, i: int) -> dict[str, Any]:
        """Return what action ``i`` does: ``kind`` (wait, market_all, market, limit), ``multiple``, ``offset``."""
        kind, m, off = self.actions[i]
        return {"kind": kind, "multiple": m, "offset": off}

    def action_index(self, kind: str, multiple: float = 0.0, offset: float = 0.0) -> int:
        """Return the index of the action ``(kind, multiple, offset)``; e.g. TWAP is ``("market", 1.0)``."""
        try:
            return self.actions.index((kind, float(multiple), float(offset)))
        except ValueError:
            raise ValueError(f"no action {(kind, multiple, offset)}; have {self.actions}") from None

    def observation(self) -> np.ndarray:
        """Return the observation at the last closed bar."""
        t, s, c = self.t, self.sign, self.config
        px = self._c[t]
        avg = self.filled_cost / self.filled_qty / self.arrival - 1.0 if self.filled_qty > 0 else 0.0
        return execution_observation(
            self.features[t], self.remaining / self.quantity, (self.t0 + c.horizon_bars - t) / c.horizon_bars,
            s * (px / self.arrival - 1.0), s * (px / self._o[t] - 1.0), (self._h[t] - self._l[t]) / px,
            max(self._v[t] / self._mean_vol[t], 1e-6) if self._mean_vol[t] > 0 else 1.0, s * avg)

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a parent order; ``options`` may pin ``start`` (bar t0), ``side`` and ``quantity``."""
        if seed is None and self._seed is not None:
            seed, self._seed = self._seed, None
        super().reset(seed=seed)
        c, opts = self.config, options or {}
        t0 = episode_start("ExecutionEnv", opts, self.first_start, self.last_start, c.random_start, self.np_random)
        side = opts.get("side", c.side)
        if side == "random":
            side = "buy" if self.np_random.integers(0, 2) == 0 else "sell"
        if side not in ("buy", "sell"):
            raise ValueError(f"ExecutionEnv.reset: side {side!r} must be 'buy' or 'sell'")
        q = float(opts.get("quantity", c.parent_participation * self._mean_vol[t0] * c.horizon_bars))
        if not q > 0:
            raise ValueError(f"ExecutionEnv.reset: quantity {q!r} must be > 0")
        self._start(t0, 1.0 if side == "buy" else -1.0, q)
        return self.observation(), {"t": t0, "side": side, "quantity": q, "arrival": self.arrival}

    def _fill(self, q: float, price: float, fee_rate: float) -> float:
        """Book a fill; return its shortfall against arrival (price and fee), in quote currency."""
        self.remaining -= q
        self.filled_qty += q
        self.filled_cost += q * price
        fee = fee_rate * q * price
        self.fees += fee
        return self.sign * q * (price - self.arrival) + fee

    def step(self, action: np.int64 | int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Work the next bar with action ``action``."""
        c = self.config
        i = int(action)
        if not 0 <= i < len(self.actions):
            raise ValueError(f"ExecutionEnv.step: action {action!r} must be in [0, {len(self.actions) - 1}]")
        kind, m, off = self.actions[i]
        t = self.t + 1
        s, o, mv = self.sign, self._o[t], self._mean_vol[t - 1]
        bars_left = self.t0 + c.horizon_bars - t + 1
        q = self.remaining if kind == "market_all" else min(self.remaining, m * self.remaining / bars_left)
        shortfall = 0.0
        if q > 0 and kind in ("market", "market_all"):
            cost = c.half_spread + (c.impact * q / mv if mv > 0 else 0.0)
            shortfall += self._fill(q, o * (1.0 + s * cost), c.taker_fee)
        elif q > 0 and kind == "limit":
            limit = o * (1.0 - s * off)
            through = self._l[t] < limit if s > 0 else self._h[t] > limit
            q = min(q, c.limit_participation * self._v[t]) if through else 0.0
            if q > 0:
                shortfall += self._fill(q, limit, c.maker_fee)
        self.t = t
        leftover = 0.0
        done = t >= self.t0 + c.horizon_bars
        if done and self.remaining > 1e-12 * self.quantity:
            leftover = self.remaining
            px = self._c[t] * (1.0 + s * (c.half_spread + (c.impact * leftover / mv if mv > 0 else 0.0)))
            shortfall += self._fill(leftover, px, c.taker_fee) + c.leftover_penalty * leftover * px
        elif self.remaining <= 1e-12 * self.quantity:
            self.remaining, done = 0.0, True
        reward = -1e4 * shortfall / (self.quantity * self.arrival)
        info = {"t": t, "kind": kind, "filled": q, "leftover": leftover, "remaining": self.remaining,
                "shortfall_bps": -reward, "fees": self.fees,
                "avg_price": self.filled_cost / self.filled_qty if self.filled_qty > 0 else 0.0}
        return self.observation(), float(reward), bool(done), False, info
