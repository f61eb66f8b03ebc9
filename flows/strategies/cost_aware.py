"""The ``cost_aware`` strategy: change a position only when the expected edge beats the round-trip cost.

Per symbol and closed bar, from the ensemble probability ``p`` and the bar's realised
volatility ``sigma`` (per bar, from ``rv_15``):

- **expected edge** over the model's horizon ``h`` (bars; the ``horizon`` parameter,
  else the prediction's, else 1) is ``(2p - 1) * E|move|`` with
  ``E|move| = sigma * sqrt(h) * sqrt(2 / pi)``, the mean absolute move of a normal
  return of that volatility;
- **cost** is the round trip of the configured execution
  (:func:`flows.execution.costs.round_trip_cost`: twice taker fee + base slippage);
- **enter** (or flip) when ``|edge| > enter_multiple * cost``, in the edge's direction
  (shorts only with ``allow_short``);
- **exit** to flat only when the signal reverses past the exit band:
  ``edge * side < -exit_multiple * cost`` (hysteresis: between the bands nothing
  changes), and never before ``min_hold_bars`` bars since the entry;
- **size** is volatility-targeted: ``min(max_fraction, vol_target / annual vol)`` of
  equity (:attr:`sizing` ``= "vol_target"``: the risk engine takes it as is, with its
  caps, limits, halts, breakers and kill switch); an open position is resized only
  when the size moved by more than ``resize_band`` of itself, so volatility noise
  does not trade.

Missing inputs (a model warming up, unknown volatility) change nothing: a position is
held, flat stays flat.  State: per symbol, the side and the bar close it was entered at.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from flows.risk.signals import TargetPosition
from flows.strategies.base import Context, Strategy, StrategyParams, bar_vol, vol_target_fraction

_MEAN_ABS = math.sqrt(2.0 / math.pi)  # E|Z| of a standard normal


class CostAwareParams(StrategyParams):
    """Parameters of the ``cost_aware`` strategy (choose them on development folds only)."""

    horizon: int | None = Field(None, ge=1, description="bars the probability is about; unset = the "
                                "prediction's horizon, else 1")
    enter_multiple: float = Field(1.0, gt=0.0, description="enter when the expected edge exceeds this many "
                                  "round-trip costs")
    exit_multiple: float = Field(0.0, ge=0.0, description="exit when the edge against the position exceeds "
                                 "this many round-trip costs (0: as soon as the signal turns)")
    min_hold_bars: int = Field(3, ge=0, description="bars a position is held at least before it may exit or flip")
    vol_target: float = Field(0.20, gt=0.0, description="annual volatility target of one position")
    max_fraction: float = Field(0.25, gt=0.0, le=1.0, description="largest position, fraction of equity")
    resize_band: float = Field(0.25, ge=0.0, description="resize an open position only when its "
                               "volatility-targeted size moved by more than this fraction")
    allow_short: bool = Field(True, description="enter short positions (false for spot accounts)")


class CostAware(Strategy):
    """No-trade band with hysteresis, minimum holding time and volatility-targeted size."""

    name = "cost_aware"
    Params = CostAwareParams
    sizing = "vol_target"

    def __init__(self, params: Any, env: Any) -> None:
        """Start flat in every symbol."""
        super().__init__(params, env)
        self.p: CostAwareParams = params
        self.held: dict[str, tuple[int, int]] = {}  # symbol -> (side, entry bar close ms)

    def edge(self, ctx: Context) -> float | None:
        """Return the expected return of a long position over the horizon (None when unknown)."""
        sigma = bar_vol(ctx.features)
        if sigma is None or not math.isfinite(ctx.probability):
            return None
        h = self.p.horizon or ctx.horizon or 1
        return (2.0 * ctx.probability - 1.0) * sigma * math.sqrt(h) * _MEAN_ABS

    def decide(self, ctx: Context) -> TargetPosition:
        """Return the target: enter, hold, exit or flip (see the module docstring)."""
        p, cost = self.p, self.env.round_trip_cost
        side, since = self.held.get(ctx.symbol, (0, ctx.ts))
        edge = self.edge(ctx)
        size = vol_target_fraction(ctx.features, self.env.bars_per_year, p.vol_target, p.max_fraction)
        if edge is None or size is None:
            return self._hold(ctx, side, size, "no edge estimate: no change")
        held_bars = (ctx.ts - since) // self.env.timeframe_ms
        enter = p.enter_multiple * cost
        want = 1 if edge > enter else -1 if edge < -enter and p.allow_short else 0
        text = f"edge {edge * 1e4:+.1f} bp vs cost {cost * 1e4:.1f} bp"
        if side and held_bars < p.min_hold_bars:
            return self._hold(ctx, side, size, f"{text}: held {held_bars} < {p.min_hold_bars} bars")
        if want and want != side:
            self.held[ctx.symbol] = (want, ctx.ts)
            return TargetPosition(want * size, (f"{text}: enter {'long' if want > 0 else 'short'} "
                                                f"x{p.enter_multiple:g}", f"vol-targeted size {size:.3f}"))
        if side and edge * side < -p.exit_multiple * cost:
            del self.held[ctx.symbol]
            return TargetPosition(0.0, (f"{text}: signal reversed past the exit band: exit",))
        return self._hold(ctx, side, size, f"{text}: inside the band")

    def _hold(self, ctx: Context, side: int, size: float | None, why: str) -> TargetPosition:
        if not side:
            return TargetPosition(0.0, (why + ": flat",))
        now = ctx.exposure
        if size is not None and (now * side <= 0 or abs(side * size - now) > self.p.resize_band * size):
            return TargetPosition(side * size, (why, f"resize to {size:.3f}"))
        return TargetPosition(now, (why + ": hold",))

    def to_state(self) -> dict[str, Any]:
        """Return the side and entry close of each open position."""
        return {"held": {s: [side, since] for s, (side, since) in self.held.items()}}

    def from_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`to_state`."""
        self.held = {s: (int(v[0]), int(v[1])) for s, v in state.get("held", {}).items()}
