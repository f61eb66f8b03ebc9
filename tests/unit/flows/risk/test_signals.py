"""Signal combination rules: blend, agreement, regime, sentiment, shorts, bounds."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.risk.config import SignalRules
from flows.risk.signals import combine

NAN = math.nan


@pytest.mark.parametrize(("args", "rules", "want", "reason"), [
    ((0.8, 0.6, 1, None, None, None), {}, 1.0, "ml +1"),
    ((0.2, 0.6, -1, NAN, None, None), {}, -1.0, "ml -1"),
    ((0.8, 0.6, 1, 0.5, None, None), {}, 0.75, "rl +0.50"),
    ((0.8, 0.6, 1, 0.5, None, None), {"ml_weight": 1.0, "rl_weight": 3.0}, (1.0 + 1.5) / 4.0, "rl +0.50"),
    ((0.8, 0.6, 1, -0.4, None, None), {}, 0.0, "disagree"),
    ((0.8, 0.6, 1, -0.4, None, None), {"require_agreement": False}, 0.3, "rl -0.40"),
    ((0.5, 0.0, 0, 0.8, None, None), {}, 0.0, "rl alone not allowed"),
    ((0.5, 0.0, 0, 0.8, None, None), {"rl_alone": True}, 0.4, "rl +0.80"),
    ((0.8, 0.05, 1, None, None, None), {"min_confidence": 0.1}, 0.0, "no ml signal"),
    ((0.8, 0.6, 1, None, -0.7, None), {}, 0.5, "against regime"),
    ((0.8, 0.6, 1, None, -0.3, None), {}, 1.0, "ml +1"),  # a weak regime does not count
    ((0.8, 0.6, 1, 0.2, None, -0.5), {}, 0.6 * 0.9, "sentiment -0.50"),
    ((0.8, 0.6, 1, None, None, 0.5), {}, 1.0, "sentiment +0.50"),  # clipped to 1
    ((0.2, 0.6, -1, None, None, None), {"allow_short": False}, 0.0, "shorts not allowed"),
])
def test_rules(args: tuple, rules: dict, want: float, reason: str) -> None:
    out = combine(*args, SignalRules(**rules))
    assert out.fraction == pytest.approx(want, rel=1e-12)
    assert any(reason in r for r in out.reasons), out.reasons


def test_bad_direction_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="ml_direction"):
        combine(0.5, 0.5, 2, None, None, None)
    with pytest.raises(ValueError, match="ml_weight"):
        SignalRules(ml_weight=0.0, rl_weight=0.0)


opt = st.one_of(st.none(), st.just(NAN), st.floats(-3.0, 3.0))


@settings(max_examples=500, deadline=None)
@given(st.floats(0, 1), st.floats(0, 1), st.sampled_from([-1, 0, 1]), opt, opt, opt, st.booleans(), st.booleans())
def test_target_is_bounded_and_never_against_both_signals(p: float, c: float, d: int, rl: float | None,
                                                          regime: float | None, sent: float | None,
                                                          agree: bool, short: bool) -> None:
    out = combine(p, c, d, rl, regime, sent, SignalRules(require_agreement=agree, allow_short=short))
    assert -1.0 <= out.fraction <= 1.0 and out.reasons
    if not short:
        assert out.fraction >= 0.0
    rl_dir = 0.0 if rl is None or math.isnan(rl) else rl
    if d * rl_dir >= 0 and (d or rl_dir):
        assert out.fraction * (d or rl_dir) >= 0.0, "the target never points against agreeing signals"
