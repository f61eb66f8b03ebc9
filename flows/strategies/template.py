"""A strategy template: copy this file into your own package, rename the class, fill in :meth:`decide`.

Select it with ``CRYPTOSTREAM_STRATEGY__NAME=yourpackage.yourmodule:MyStrategy`` (the
package on the Python path of ``flows.live`` and ``training.backtest``), its parameters
with ``CRYPTOSTREAM_STRATEGY__PARAMS__<NAME>=value`` or in YAML::

    strategy:
      name: yourpackage.yourmodule:MyStrategy
      params: {lookback: 24}

The rule here, as an example: go long when the last bar's return and the ensemble both
point up, flat otherwise, and hold each position at least ``min_hold_bars`` bars.  See
:mod:`flows.strategies.base` for what :class:`~flows.strategies.base.Context` holds and
what the returned fraction means, and :mod:`flows.strategies.cost_aware` for a rule that
weighs the expected edge against the costs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from flows.strategies.base import (
    Context,
    Strategy,
    StrategyEnv,
    StrategyParams,
    TargetPosition,
    vol_target_fraction,
)


class MyParams(StrategyParams):
    """The parameters: each a typed field with a default and a range (bad values stop the run at start)."""

    min_probability: float = Field(0.55, ge=0.5, le=1.0, description="ensemble P(up) needed to go long")
    min_hold_bars: int = Field(6, ge=0, description="bars a position is held at least")
    vol_target: float = Field(0.15, gt=0.0, description="annual volatility target of one position")
    max_fraction: float = Field(0.2, gt=0.0, le=1.0, description="largest position, fraction of equity")


class MyStrategy(Strategy):
    """Long while the last return and the ensemble agree upward; held at least ``min_hold_bars`` bars."""

    Params = MyParams
    sizing = "vol_target"  # the fraction is the position as a fraction of equity (None: Kelly-sized)

    def __init__(self, params: Any, env: StrategyEnv) -> None:
        """Keep the parameters and start with no positions (state is plain data)."""
        super().__init__(params, env)
        self.p: MyParams = params
        self.entered: dict[str, int] = {}  # symbol -> bar close (ms) of the entry

    def decide(self, ctx: Context) -> TargetPosition:
        """Return the target of ``ctx.symbol``: enter, hold (``ctx.exposure``) or exit (0)."""
        up = ctx.probability >= self.p.min_probability and ctx.features.get("ret_1", 0.0) > 0.0
        since = self.entered.get(ctx.symbol)
        if since is not None:  # in a position
            held = (ctx.ts - since) // self.env.timeframe_ms
            if up or held < self.p.min_hold_bars:
                return TargetPosition(ctx.exposure, (f"hold ({held} bars)",))
            del self.entered[ctx.symbol]
            return TargetPosition(0.0, ("signal gone: exit",))
        size = vol_target_fraction(ctx.features, self.env.bars_per_year, self.p.vol_target, self.p.max_fraction)
        if not up or size is None:
            return TargetPosition(0.0, ("no entry",))
        self.entered[ctx.symbol] = ctx.ts
        return TargetPosition(size, (f"p={ctx.probability:.3f} and last return up: long {size:.3f}",))

    def to_state(self) -> dict[str, Any]:
        """Return what the strategy remembers (kept in the flow's snapshots)."""
        return {"entered": dict(self.entered)}

    def from_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`to_state` after a restart."""
        self.entered = {s: int(t) for s, t in state.get("entered", {}).items()}
