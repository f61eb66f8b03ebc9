"""Combine the ML signal, the RL target, the regime and sentiment into one target position.

The target is a fraction in ``[-1, 1]`` of the largest position the risk engine
would size (``+1`` all in long, ``-1`` all in short); the engine turns it into a
quantity (Kelly, confidence, volatility target, caps).  Rules
(:class:`~flows.risk.config.SignalRules`), applied in this order:

1. **ML direction**: ``-1``/``0``/``+1``; a signal whose confidence is below
   ``min_confidence`` counts as none (0).  Confidence is not applied here: the
   engine scales the size by it.
2. **RL target** (when a policy is present): the blend is
   ``(ml_weight * direction + rl_weight * rl) / (ml_weight + rl_weight)``.  Without
   a policy the target is the ML direction.
3. **Agreement**: with ``require_agreement``, ML and RL pointing opposite ways
   give 0.  With no ML signal the target is 0 unless ``rl_alone`` (then the RL
   target, weighted as in 2 with direction 0).
4. **Regime** in ``[-1, 1]`` (bear .. bull, the score of :mod:`flows.operators.regime`;
   None = unknown): a target against a
   regime with ``|regime| >= regime_threshold`` is scaled by ``counter_regime_scale``.
5. **Sentiment** in ``[-1, 1]`` (None = none): the target is scaled by
   ``1 + sentiment_weight * sentiment * sign(target)`` (it tilts, never flips).
6. **Shorts**: without ``allow_short`` a negative target becomes 0.

The result is clipped to ``[-1, 1]``; NaN inputs count as absent.  Every step that
changes the target adds a reason.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from flows.risk.config import SignalRules

DEFAULT_RULES = SignalRules()


class TargetPosition(NamedTuple):
    """A target position as a fraction in [-1, 1] and the reasons that shaped it."""

    fraction: float
    reasons: tuple[str, ...]


_NO_SIGNAL = TargetPosition(0.0, ("no ml signal",))  # the targets without an ml signal that need no format
_NO_RL_ALONE = TargetPosition(0.0, ("no ml signal (rl alone not allowed)",))
_BLEND_TEXT: dict[tuple[int, int], tuple[SignalRules, str, str]] = {}


def _blend_text(r: SignalRules, direction: int) -> tuple[str, str]:
    """Return the blend reason's text around the RL target, ``ml {direction:+d} x {ml_weight:g} + rl `` and
    `` x {rl_weight:g}`` (formatted once per rules and direction: every decision of a run writes it)."""
    hit = _BLEND_TEXT.get((id(r), direction))
    if hit is None or hit[0] is not r:
        if len(_BLEND_TEXT) > 64:
            _BLEND_TEXT.clear()
        hit = _BLEND_TEXT[(id(r), direction)] = (r, f"ml {direction:+d} x {r.ml_weight:g} + rl ",
                                                 f" x {r.rl_weight:g}")
    return hit[1], hit[2]


def _given(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def combine(probability: float, confidence: float, ml_direction: int, rl_target: float | None,
            regime: float | None, sentiment: float | None, rules: SignalRules | None = None) -> TargetPosition:
    """Return the target position for one symbol and bar (rules in the module docstring)."""
    r = rules or DEFAULT_RULES
    if ml_direction not in (-1, 0, 1):
        raise ValueError(f"ml_direction must be -1, 0 or 1, got {ml_direction!r}")
    conf = 0.0 if math.isnan(confidence) else confidence
    if not ml_direction:  # no ml signal: the target is 0 unless the RL target may trade alone (rules 2 and 3)
        if rl_target is None or math.isnan(rl_target):
            return _NO_SIGNAL
        if not r.rl_alone:
            return _NO_RL_ALONE
    reasons: list[str] = []
    direction = ml_direction
    if direction and conf < r.min_confidence:
        reasons.append(f"ml confidence {conf:.3f} < {r.min_confidence:g}: no ml signal")
        direction = 0
    rl = None if rl_target is None or math.isnan(rl_target) else min(1.0, max(-1.0, float(rl_target)))  # _given
    if rl is None:
        target = float(direction)
        reasons.append(f"ml {direction:+d} (p={probability:.3f})" if direction else "no ml signal")
    elif direction == 0 and not r.rl_alone:
        target = 0.0
        reasons.append("no ml signal (rl alone not allowed)")
    elif r.require_agreement and direction * rl < 0:
        target = 0.0
        reasons.append(f"ml {direction:+d} and rl {rl:+.2f} disagree")
    else:
        target = (r.ml_weight * direction + r.rl_weight * rl) / (r.ml_weight + r.rl_weight)
        head, tail = _blend_text(r, direction)
        reasons.append(f"{head}{rl:+.2f}{tail}")
    reg = None if regime is None or not target else _given(regime)  # (no target: nothing to scale)
    if target and reg is not None and abs(reg) >= r.regime_threshold and reg * target < 0:
        target *= r.counter_regime_scale
        reasons.append(f"against regime {reg:+.2f}: x{r.counter_regime_scale:g}")
    sent = None if sentiment is None or not target else _given(sentiment)
    if target and sent is not None and sent:
        sent = min(1.0, max(-1.0, sent))
        target *= 1.0 + r.sentiment_weight * sent * math.copysign(1.0, target)
        reasons.append(f"sentiment {sent:+.2f}")
    if target < 0 and not r.allow_short:
        target = 0.0
        reasons.append("shorts not allowed")
    return TargetPosition(min(1.0, max(-1.0, target)), tuple(reasons))
