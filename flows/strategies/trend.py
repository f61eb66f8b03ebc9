"""The ``trend`` strategy: an example without ML, a moving-average cross with a minimum holding time.

Per symbol it keeps two exponential moving averages of the closes (``fast_bars`` and
``slow_bars`` spans, ``alpha = 2 / (span + 1)``) in its state.  Once ``slow_bars``
closes are seen, it holds long while the fast average is above the slow one by more
than ``band`` (relative), short while below by more than ``band`` (with
``allow_short``; else flat), and keeps the side it has inside the band.  A side is
held at least ``min_hold_bars`` bars.  The size is volatility-targeted like the
``cost_aware`` strategy's (``sizing = "vol_target"``); model outputs are not used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, model_validator

from flows.risk.signals import TargetPosition
from flows.strategies.base import Context, Strategy, StrategyParams, vol_target_fraction


class TrendParams(StrategyParams):
    """Parameters of the ``trend`` strategy."""

    fast_bars: int = Field(12, ge=1, description="span of the fast moving average, bars")
    slow_bars: int = Field(48, ge=2, description="span of the slow moving average, bars")
    band: float = Field(0.002, ge=0.0, description="relative gap between the averages needed to change side")
    min_hold_bars: int = Field(12, ge=0, description="bars a side is held at least")
    vol_target: float = Field(0.20, gt=0.0, description="annual volatility target of one position")
    max_fraction: float = Field(0.25, gt=0.0, le=1.0, description="largest position, fraction of equity")
    allow_short: bool = Field(False, description="go short below the band (false: flat)")

    @model_validator(mode="after")
    def _spans(self) -> TrendParams:
        if self.fast_bars >= self.slow_bars:
            raise ValueError(f"fast_bars ({self.fast_bars}) must be below slow_bars ({self.slow_bars})")
        return self


class Trend(Strategy):
    """Fast/slow moving-average cross with a band and a minimum holding time; volatility-targeted size."""

    name = "trend"
    Params = TrendParams
    sizing = "vol_target"

    def __init__(self, params: Any, env: Any) -> None:
        """Start with no averages and no positions."""
        super().__init__(params, env)
        self.p: TrendParams = params
        self.avg: dict[str, list[float]] = {}  # symbol -> [fast, slow, closes seen]
        self.side: dict[str, list[int]] = {}  # symbol -> [side, since bar close ms]

    def decide(self, ctx: Context) -> TargetPosition:
        """Update the averages with the close; return the side's volatility-targeted size."""
        p = self.p
        a = self.avg.get(ctx.symbol)
        if a is None:
            a = self.avg[ctx.symbol] = [ctx.price, ctx.price, 0.0]
        for i, span in ((0, p.fast_bars), (1, p.slow_bars)):
            a[i] += 2.0 / (span + 1.0) * (ctx.price - a[i])
        a[2] += 1
        side, since = self.side.get(ctx.symbol, (0, ctx.ts))
        if a[2] < p.slow_bars:
            return TargetPosition(0.0, (f"warming up: {a[2]:.0f} of {p.slow_bars} closes",))
        gap = a[0] / a[1] - 1.0
        want = 1 if gap > p.band else (-1 if p.allow_short else 0) if gap < -p.band else side
        held = (ctx.ts - since) // self.env.timeframe_ms
        reasons = [f"fast/slow {gap:+.4f}"]
        if want != side and side and held < p.min_hold_bars:
            reasons.append(f"held {held} < {p.min_hold_bars} bars")
            want = side
        if want != side:
            side, since = want, ctx.ts
            self.side[ctx.symbol] = [side, since]
        size = vol_target_fraction(ctx.features, self.env.bars_per_year, p.vol_target, p.max_fraction)
        if not side:
            return TargetPosition(0.0, (*reasons, "flat"))
        if size is None or ctx.position * side > 0:  # unknown vol, or already in: keep what is held
            return TargetPosition(ctx.exposure if ctx.position * side > 0 else 0.0, (*reasons, "hold"))
        return TargetPosition(side * size, (*reasons, f"enter {'long' if side > 0 else 'short'} {size:.3f}"))

    def to_state(self) -> dict[str, Any]:
        """Return the averages and sides."""
        return {"avg": {s: list(v) for s, v in self.avg.items()}, "side": {s: list(v) for s, v in self.side.items()}}

    def from_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`to_state`."""
        self.avg = {s: [float(x) for x in v] for s, v in state.get("avg", {}).items()}
        self.side = {s: [int(x) for x in v] for s, v in state.get("side", {}).items()}
