"""Sizing ``vol_target``: the strategy's fraction of equity is the position; every limit still applies."""

from __future__ import annotations

import pytest

from flows.risk.config import RiskConfig
from flows.risk.engine import RiskEngine

T = 120_000  # the close decided: after two 1m bars, so the stale-data breaker has seen the symbol


def engine(**limits: float) -> RiskEngine:
    out = RiskEngine(RiskConfig.model_validate({"sizing": {"method": "vol_target"}, "limits": limits}))
    out.on_bar("BTC/USDT", 0, 0.0)
    out.on_bar("BTC/USDT", 60_000, 0.001)
    return out


def snap(held: float = 0.0) -> dict[str, object]:
    return {"equity": 10_000.0, "positions": {"BTC/USDT": held} if held else {}, "prices": {"BTC/USDT": 200.0},
            "trade_returns": [-0.01] * 50}  # a record whose Kelly is negative: vol_target ignores it


def test_the_fraction_is_the_position_without_kelly_or_confidence_and_capped_by_the_sizing_cap() -> None:
    d = engine().decide("BTC/USDT", T, 0.1, 0.0, 200.0, float("nan"), snap(), False)
    assert d.target_qty == pytest.approx(0.1 * 10_000 / 200.0) and d.rejections == ()
    assert engine().decide("BTC/USDT", T, -0.9, 1.0, 200.0, 0.01, snap(), False).target_qty == \
        pytest.approx(-0.25 * 10_000 / 200.0)


def test_holding_the_current_exposure_trades_nothing_and_limits_and_the_kill_switch_still_cut() -> None:
    held = 3.0
    d = engine().decide("BTC/USDT", T, held * 200.0 / 10_000.0, 1.0, 200.0, 0.01, snap(held), False)
    assert d.approved_qty_delta == 0.0 and d.target_qty == held
    cut = engine(max_position_fraction=0.05).decide("BTC/USDT", T, 0.2, 1.0, 200.0, 0.01, snap(), False)
    assert cut.target_qty == pytest.approx(2.5) and [r.rule for r in cut.rejections] == ["max_position"]
    killed = engine().decide("BTC/USDT", T, 0.2, 1.0, 200.0, 0.01, snap(), True)
    assert killed.target_qty == 0.0 and [r.rule for r in killed.rejections] == ["kill_switch"]
