"""Decision step: the portfolio-level caps hold for a whole close, not only for each symbol alone.

Every symbol of a close is decided against the same portfolio snapshot (its orders fill at the
next bar), so the gross and correlated-exposure caps count the positions that the close's earlier
orders will hold: when many symbols signal at one close, the symbols decided first (configured
order) get their size and the one that reaches the cap is cut to what remains.  Before, each
symbol saw only the held book and 20 symbols at 20 % each bought 4x equity under a 0.5x cap.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.operators.decisions import DecisionStep
from flows.records import Bar, Close, Decided, Fill, Prediction
from flows.risk.engine import Rejection
from flows.settings import load_settings
from flows.wiring import build_deps

TF = 60_000
SYMBOLS = tuple(f"S{i:02d}/USDT" for i in range(20))


def close(k: int, signal: int = 1) -> Close:
    bars = tuple(Bar(s, "1m", k * TF, 10.0 + i, 10.1 + i, 9.9 + i, 10.0 + i, 1e6, 1e7, 100, 10.0 + i, 5e5)
                 for i, s in enumerate(SYMBOLS))
    preds = tuple(Prediction(s, "1m", (k + 1) * TF, {}, 0.8 if signal else 0.2, 0.6, signal, float("nan"), {},
                             0.0, 0.004) for s in SYMBOLS)
    return Close((k + 1) * TF, bars, preds)


def step_with(tmp_path: Path, **env: str) -> DecisionStep:
    settings = load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp_path), "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS),
                                  "CRYPTOSTREAM_RISK__SIZING__METHOD": "fixed_fraction",
                                  "CRYPTOSTREAM_RISK__SIZING__FIXED_FRACTION": "0.2", **env})
    return DecisionStep(SYMBOLS, TF, build_deps(settings))


def exposure(decided: list[Decided], k: int) -> dict[str, float]:
    """Return |target position| * the close's price of each decided symbol."""
    return {d.prediction.symbol: abs(d.target_qty) * (10.0 + SYMBOLS.index(d.prediction.symbol)) for d in decided}


def test_max_gross_leverage_binds_exactly_when_every_symbol_signals_at_one_close(tmp_path: Path) -> None:
    step = step_with(tmp_path, CRYPTOSTREAM_RISK__LIMITS__MAX_GROSS_LEVERAGE="0.5")
    out = step.on_closes([close(0)])
    decided = [o for o in out if isinstance(o, Decided)]
    equity = step.deps.portfolio.snapshot().equity
    held = exposure(decided, 0)
    assert sum(held.values()) == pytest.approx(0.5 * equity, rel=1e-12)  # the cap, not 20 x 20 %
    sized = [s for s, v in held.items() if v > 0]
    assert sized == list(SYMBOLS[:len(sized)]) and 2 <= len(sized) < len(SYMBOLS)  # first in configured order
    cut = {r.symbol for r in out if isinstance(r, Rejection) and r.rule == "max_gross_leverage"}
    assert cut == set(SYMBOLS[len(sized) - 1:])  # the one that reached the cap and every one after it
    out = step.on_closes([close(1)])  # the orders fill at the next bar's open (with slippage)
    assert len([f for f in out if isinstance(f, Fill)]) == len(sized)
    snap = step.deps.portfolio.snapshot()
    assert snap.gross_exposure / snap.equity == pytest.approx(0.5, rel=2e-3)


def test_the_correlated_exposure_cap_counts_the_close_s_earlier_orders_of_its_group(tmp_path: Path) -> None:
    groups = ",".join(f"{s}=g" for s in SYMBOLS[:10])  # one group of ten; the other ten are uncorrelated
    step = step_with(tmp_path, CRYPTOSTREAM_RISK__LIMITS__GROUPS=groups,
                     CRYPTOSTREAM_RISK__LIMITS__MAX_CORRELATED_FRACTION="0.3",
                     CRYPTOSTREAM_RISK__LIMITS__MAX_GROSS_LEVERAGE="5")
    out = step.on_closes([close(0)])
    equity = step.deps.portfolio.snapshot().equity
    held = exposure([o for o in out if isinstance(o, Decided)], 0)
    assert sum(held[s] for s in SYMBOLS[:10]) == pytest.approx(0.3 * equity, rel=1e-12)
    size = held[SYMBOLS[0]]  # the group's first: decided before any other order of the close
    assert 0 < size < 0.3 * equity and held[SYMBOLS[9]] == 0.0
    assert all(held[s] == pytest.approx(size, rel=1e-9) for s in SYMBOLS[10:])  # outside the group: uncut


@pytest.mark.parametrize("above", [1e-13, 1e-3])
def test_a_cap_that_leaves_a_change_of_float_noise_places_no_order(tmp_path: Path, above: float) -> None:
    """Held at the cap up to float noise (as a former close's cut leaves it), a cap binding again is no order.

    A cut skips the rebalance band, so before the order floor (``sizing.min_order_fraction``)
    the cap's residue of 1e-11 units was an order and a fill (the 5-symbol ``trend`` backtest
    traded 4.4e-16 ETH); a cut that moves 0.1 % of the position is still one.
    """
    step = step_with(tmp_path, CRYPTOSTREAM_RISK__LIMITS__MAX_POSITION_FRACTION="0.1")
    step.deps.portfolio.apply_fill(SYMBOLS[0], "buy", 100.0 * (1 + above), 10.0, 0.0, 0)  # cap: 0.1 x 10,000 / 10
    out = step.on_closes([close(0)])
    first = next(o for o in out if isinstance(o, Decided) and o.prediction.symbol == SYMBOLS[0])
    rules = [r.rule for r in out if isinstance(r, Rejection) and r.symbol == SYMBOLS[0]]
    if above < 1e-6:
        assert first.qty_delta == 0.0 and first.target_qty == 100.0 * (1 + above)
        assert rules == ["max_position", "min_order"]
    else:
        assert first.qty_delta == pytest.approx(-0.1, rel=1e-6) and rules == ["max_position"]
    out = step.on_closes([close(1)])
    assert [f.qty for f in out if isinstance(f, Fill) and f.symbol == SYMBOLS[0]] == ([] if above < 1e-6 else
                                                                                      [pytest.approx(0.1, rel=1e-6)])
