"""The three-level system: strategic weights cap tactical positions; position changes are worked by execution.

Per bar ``t`` of the (hourly) market data, at its close:

1. every ``rebalance_bars`` bars the strategic policy maps its observation to portfolio
   weights (:func:`inference.rl_observation.strategic_weights`); ``|w_i|`` becomes asset
   ``i``'s cap (long-only: positions in ``[0, w_i]``);
2. the tactical policy proposes a target position per asset (fraction of equity in
   [-1, 1]) from its own observation (the asset's features and its book state, as in
   :class:`~training.rl.envs.tactical.TacticalEnv`); the target is clipped to the cap;
3. a change of position larger than ``min_order`` becomes a parent order (side,
   quantity in units), worked over the next bars of the execution data by the
   execution policy in an :class:`~training.rl.envs.execution.ExecutionEnv` (arrival =
   the close of the execution bar ending at the decision time).  Without execution
   data (for that symbol or time) or policy, the order fills at the next bar's open
   with the tactical fees and slippage.

The portfolio books the fills (price and fees) and is marked at each bar's close.
Actors are plain callables ``obs [n, d] -> actions [n, k]`` such as
:meth:`inference.policy.PolicyRunner.act` or :func:`training.rl.agents.deterministic_actions`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from flows.execution.costs import COSTS
from inference.rl_observation import strategic_observation, strategic_weights, tactical_observation
from training.rl.data import MarketData
from training.rl.envs.execution import ExecutionConfig, ExecutionEnv

Actor = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class HierarchyConfig:
    """Settings of :class:`HierarchicalSystem` (the strategic ones must match the strategic env's)."""

    initial_equity: float = 10_000.0
    rebalance_bars: int = 24
    long_only: bool = True
    gross_cap: float = 1.0
    logit_scale: float = 5.0
    use_regime: bool = True
    min_order: float = 0.01  # position changes below this fraction of equity are not traded
    fee_rate: float = COSTS.taker_fee  # fills without an execution agent
    slippage: float = COSTS.flat_slippage

    def __post_init__(self) -> None:
        if not (isinstance(self.rebalance_bars, int) and self.rebalance_bars >= 1):
            raise ValueError(f"HierarchyConfig.rebalance_bars = {self.rebalance_bars!r} must be an int >= 1")
        for name in ("initial_equity", "gross_cap"):
            if not getattr(self, name) > 0:
                raise ValueError(f"HierarchyConfig.{name} = {getattr(self, name)!r} must be > 0")
        for name in ("min_order", "fee_rate", "slippage"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"HierarchyConfig.{name} = {getattr(self, name)!r} must be in [0, 1)")


@dataclass(frozen=True)
class ParentOrder:
    """A tactical position change and how it was worked."""

    t: int  # decision bar (its close)
    asset: int
    side: str
    quantity: float  # units
    arrival: float  # arrival price
    filled: float  # units filled (all of it: the execution env forces the rest at the deadline)
    avg_price: float
    fees: float
    shortfall_bps: float  # implementation shortfall vs arrival (price + fees), bps of arrival notional
    child_steps: int  # execution bars used
    leftover: float  # units the agent left to the deadline's forced fill
    worked: bool = False  # by the execution agent (else filled at the next open)


@dataclass
class HierarchyResult:
    """Bar-by-bar record of a run: equity, caps, proposed and held positions, parent orders."""

    equity: np.ndarray  # [T]
    caps: np.ndarray  # [T, A] strategic caps in force at each close
    proposed: np.ndarray  # [T, A] tactical targets before capping
    targets: np.ndarray  # [T, A] targets after capping
    positions: np.ndarray  # [T, A] held exposure after the bar's fills, at the close
    orders: list[ParentOrder] = field(default_factory=list)


class HierarchicalSystem:
    """Strategic PPO, tactical DDPG and execution DQN policies composed (see the module docstring)."""

    def __init__(self, strategic: Actor, tactical: Actor, execution: Actor | None = None,
                 config: HierarchyConfig | None = None, execution_config: ExecutionConfig | None = None) -> None:
        self.strategic, self.tactical, self.execution = strategic, tactical, execution
        self.config = config or HierarchyConfig()
        self.execution_config = execution_config or ExecutionConfig(random_start=False)

    def run(self, md: MarketData, md_exec: MarketData | None = None) -> HierarchyResult:
        """Run the system over ``md`` (decisions at every close but the last); execution on ``md_exec``."""
        c, n_t, n_a = self.config, md.n_bars, len(md.symbols)
        if n_t < 2:
            raise ValueError(f"HierarchicalSystem.run: need at least 2 bars, got {n_t}")
        execs = self._execution_envs(md, md_exec)
        cash, units = c.initial_equity, np.zeros(n_a)
        entry, held = np.zeros(n_a), np.zeros(n_a, np.int64)
        prev_eq = peak = c.initial_equity
        caps = np.zeros(n_a)
        res = HierarchyResult(np.zeros(n_t), np.zeros((n_t, n_a)), np.zeros((n_t, n_a)), np.zeros((n_t, n_a)),
                              np.zeros((n_t, n_a)))
        res.equity[0] = c.initial_equity
        for t in range(n_t - 1):
            px = md.close[t]
            eq = cash + float(units @ px)
            peak = max(peak, eq)
            if t % c.rebalance_bars == 0:
                regime = md.regime[t] if (c.use_regime and md.regime is not None) else None
                obs = strategic_observation(md.features[t], units * px / eq, regime)
                w = strategic_weights(np.asarray(self.strategic(obs[None]))[0], n_a, c.long_only, c.gross_cap,
                                      c.logit_scale)
                caps = np.abs(w)
            tac_obs = np.stack([tactical_observation(md.features[t, a], units[a] * px[a] / eq,
                                                     units[a] * (px[a] - entry[a]) / eq, eq / prev_eq - 1.0,
                                                     int(held[a]), 1.0 - eq / peak) for a in range(n_a)])
            proposed = np.clip(np.asarray(self.tactical(tac_obs), np.float64).reshape(n_a, -1)[:, 0], -1.0, 1.0)
            target = np.clip(proposed, 0.0 if c.long_only else -caps, caps)
            res.caps[t], res.proposed[t], res.targets[t] = caps, proposed, target
            for a in range(n_a):
                delta = target[a] * eq / px[a] - units[a]
                if abs(delta) * px[a] <= c.min_order * eq:
                    continue
                order = self._work(t, a, delta, md, execs)
                res.orders.append(order)
                sign = 1.0 if delta > 0 else -1.0
                new = units[a] + sign * order.filled
                cash -= sign * order.filled * order.avg_price + order.fees
                if units[a] == 0.0 or np.sign(new) != np.sign(units[a]):
                    entry[a], held[a] = order.avg_price, 0
                elif abs(new) > abs(units[a]):
                    entry[a] = (units[a] * entry[a] + sign * order.filled * order.avg_price) / new
                units[a] = new
            held = np.where(units != 0.0, held + 1, 0)
            prev_eq = eq
            res.equity[t + 1] = cash + float(units @ md.close[t + 1])
            res.positions[t + 1] = units * md.close[t + 1] / res.equity[t + 1]
        return res

    def _execution_envs(self, md: MarketData, md_exec: MarketData | None) -> dict[int, ExecutionEnv]:
        if md_exec is None or self.execution is None:
            return {}
        return {a: ExecutionEnv(md_exec, self.execution_config, asset=md_exec.symbols.index(s))
                for a, s in enumerate(md.symbols) if s in md_exec.symbols}

    def _work(self, t: int, a: int, delta: float, md: MarketData, execs: dict[int, ExecutionEnv]) -> ParentOrder:
        side, q = ("buy" if delta > 0 else "sell"), abs(delta)
        env = execs.get(a)
        decided = int(md.decision_times[t])
        t0 = -1 if env is None else int(np.searchsorted(env.md.decision_times, decided, side="right")) - 1
        if env is None or not env.first_start <= t0 <= env.last_start or self.execution is None:
            return self._fill_at_open(t, a, side, q, md)
        obs, _ = env.reset(options={"start": t0, "side": side, "quantity": q})
        done, steps, leftover = False, 0, 0.0
        while not done:
            action = int(np.asarray(self.execution(obs[None])).reshape(-1)[0])
            obs, _, done, truncated, info = env.step(action)
            done = done or truncated
            steps += 1
            leftover += float(info["leftover"])
        avg = env.filled_cost / env.filled_qty
        shortfall = env.sign * env.filled_qty * (avg - env.arrival) + env.fees
        return ParentOrder(t, a, side, q, env.arrival, env.filled_qty, avg, env.fees,
                           1e4 * shortfall / (q * env.arrival), steps, leftover, worked=True)

    def _fill_at_open(self, t: int, a: int, side: str, q: float, md: MarketData) -> ParentOrder:
        c, sign = self.config, (1.0 if side == "buy" else -1.0)
        arrival, fill = md.close[t, a], md.open[t + 1, a] * (1.0 + sign * c.slippage)
        fees = c.fee_rate * q * fill
        shortfall = sign * q * (fill - arrival) + fees
        return ParentOrder(t, a, side, q, arrival, q, fill, fees, 1e4 * shortfall / (q * arrival), 1, 0.0)
