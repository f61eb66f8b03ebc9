"""The ``legacy`` strategy: the rule-based combination of ML direction and RL target, unchanged.

Each bar it trades the scorer's signal: direction ``+1`` (bullish), ``-1``
(bearish) or none (confidence below ``scoring.confidence_threshold``), blended with
the RL policy's target by :func:`flows.risk.signals.combine` under
``risk.signals`` (:class:`~flows.risk.config.SignalRules`).  The risk engine sizes it
with the configured Kelly family (Kelly x confidence x volatility target).  It has
no parameters and no state.  Turning the sign of a one-bar prediction into a
position turns over a large part of the book per bar; see ``cost_aware`` for a rule
that pays its costs.
"""

from __future__ import annotations

import math

from flows.risk.signals import TargetPosition, combine
from flows.strategies.base import Context, Strategy

_DIRECTION = {1: 1, 0: -1}


def ml_direction(signal: int) -> int:
    """Map the scorer's signal (-1 none, 0 bearish, 1 bullish) to a direction (-1, 0, +1)."""
    return _DIRECTION.get(int(signal), 0)


class Legacy(Strategy):
    """ML direction above the confidence threshold, blended with the RL target (``risk.signals`` rules)."""

    name = "legacy"

    def decide(self, ctx: Context) -> TargetPosition:
        """Return :func:`flows.risk.signals.combine` of the prediction."""
        rl = ctx.rl_target
        if rl is not None and math.isnan(rl):
            rl = None
        return combine(ctx.probability, ctx.confidence, _DIRECTION.get(int(ctx.signal), 0), rl, ctx.regime, None,
                       self.env.rules)  # _DIRECTION.get: ml_direction, inline
