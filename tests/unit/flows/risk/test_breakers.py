"""Circuit breakers on hand-made return sequences: price gap, volatility spike, stale data, cooldown."""

from __future__ import annotations

from flows.risk.breakers import Breakers
from flows.risk.config import BreakersConfig

TF = 60_000
SYM = "BTC/USDT"


def calm(b: Breakers, n: int, start: int = 0) -> int:
    for k in range(start, start + n):
        b.on_bar(SYM, k * TF, 0.0 if k == 0 else 0.001 * (-1) ** k)
    return start + n


def rules(b: Breakers, next_bar: int) -> list[str]:
    return [r for r, _ in b.tripped(SYM, next_bar * TF)]


def test_price_gap_trips_for_the_cooldown_then_clears() -> None:
    b = Breakers(BreakersConfig(cooldown_bars=3, spike_ratio=100.0))
    k = calm(b, 40)
    assert rules(b, k) == [] and b.bar_ms == TF
    b.on_bar(SYM, k * TF, 0.02)  # 20 sigma of 0.001
    assert rules(b, k + 1) == ["price_gap"]
    assert "sigma" in b.tripped(SYM, (k + 1) * TF)[0][1]
    k = calm(b, 3, k + 1)
    assert "price_gap" in rules(b, k)
    k = calm(b, 1, k)
    assert "price_gap" not in rules(b, k)


def test_no_gap_before_warmup() -> None:
    b = Breakers(BreakersConfig(warmup_bars=30))
    k = calm(b, 10)
    b.on_bar(SYM, k * TF, 0.02)
    assert rules(b, k + 1) == []


def test_volatility_spike_trips_while_fast_volatility_runs_away() -> None:
    b = Breakers(BreakersConfig(gap_sigma=50.0, cooldown_bars=0))
    k = calm(b, 60)
    for j in range(8):
        b.on_bar(SYM, (k + j) * TF, 0.01 * (-1) ** j)
    assert rules(b, k + 8) == ["volatility_spike"]
    k = calm(b, 60, k + 8)
    assert rules(b, k) == []


def test_stale_data_missing_bars_and_flat_bars() -> None:
    b = Breakers(BreakersConfig(stale_bars=3))
    k = calm(b, 10)
    assert rules(b, k) == [] and rules(b, k + 2) == []
    assert rules(b, k + 3) == ["stale_data"], "three bars missing"
    for j in range(3):
        b.on_bar(SYM, (k + j) * TF, 0.0)  # filled empty bars: the price never moves
    assert rules(b, k + 3) == ["stale_data"]
    assert "unchanged for 3 bars" in b.tripped(SYM, (k + 3) * TF)[0][1]
    b.on_bar(SYM, (k + 3) * TF, 0.001)
    assert rules(b, k + 4) == []
    assert [r for r, _ in b.tripped("ETH/USDT", TF)] == ["stale_data"], "a symbol never seen"


def test_state_round_trip() -> None:
    b = Breakers(BreakersConfig())
    calm(b, 45)
    b.on_bar(SYM, 45 * TF, 0.03)
    back = Breakers(BreakersConfig())
    back.restore(b.to_state())
    assert back.to_state() == b.to_state() and back.tripped(SYM, 46 * TF) == b.tripped(SYM, 46 * TF)
