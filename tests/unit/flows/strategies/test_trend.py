"""The ``trend`` strategy: moving-average cross with a band, minimum hold, volatility-targeted size."""

from __future__ import annotations

import math

import pytest

from flows.strategies.trend import Trend, TrendParams
from tests.kit.strategies import ENV, context

SIZE = 0.2 / (0.05 / math.sqrt(15) * math.sqrt(8760))


def run(prices: list[float], **params: object) -> list[float]:
    """Return the target fractions, each bar holding what the previous target bought (no engine in between)."""
    s = Trend(TrendParams.model_validate({"fast_bars": 3, "slow_bars": 6, "min_hold_bars": 4, **params}), ENV)
    out, pos = [], 0.0
    for k, px in enumerate(prices):
        t = s.decide(context(k, math.nan, position=pos, price=px))
        pos = t.fraction * 10_000 / px
        out.append(t.fraction)
    return out


def test_it_waits_for_the_slow_average_then_follows_the_cross_and_holds_its_side() -> None:
    up = [100.0 + k for k in range(10)]
    got = run(up + [95.0, 90.0, 85.0, 80.0, 75.0, 70.0, 65.0])
    assert got[:5] == [0.0] * 5  # warming up: 6 closes
    assert got[5] == pytest.approx(SIZE)  # entered: then the same quantity held while prices rise
    assert [f / px for f, px in zip(got[5:10], up[5:10], strict=True)] == pytest.approx([SIZE / up[5]] * 5,
                                                                                           rel=1e-12)
    first_flat = got.index(0.0, 6)
    assert first_flat >= 5 + 4  # held at least min_hold_bars
    short = run(up + [90.0, 80.0, 70.0, 60.0, 50.0], allow_short=True)
    assert next(f for f in short if f < 0) == pytest.approx(-SIZE) and short[-1] < 0
    assert min(run(up + [90.0, 80.0, 70.0, 60.0, 50.0])) == 0.0  # no shorts by default


def test_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="fast_bars"):
        TrendParams(fast_bars=10, slow_bars=5)
