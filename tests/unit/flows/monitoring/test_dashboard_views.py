"""What the dashboard's pages compute from the store's frames (flows/monitoring/dashboard/views.py)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from flows.monitoring.dashboard import views
from flows.risk.config import LimitsConfig

STATE = {"ts": pd.Timestamp("2024-01-02", tz="UTC"), "equity": 10_000.0, "drawdown": 0.03, "daily_pnl": -200.0,
         "leverage": 0.4, "cash": 6_000.0, "positions": {"BTC/USDT": 0.05, "ETH/USDT": -1.0, "SOL/USDT": 0.0},
         "state": {"prices": {"BTC/USDT": 50_000.0, "ETH/USDT": 1_500.0}, "avg": {"BTC/USDT": 48_000.0}}}


def test_pnl_by_day_is_each_days_last_equity_less_the_previous_days_last() -> None:
    daily = pd.DataFrame({"day": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"], utc=True),
                          "first": [10_000.0, 10_050.0, 9_990.0], "last": [10_040.0, 9_980.0, 10_100.0]})
    assert views.pnl_by_day(daily)["pnl"].tolist() == pytest.approx([40.0, -60.0, 120.0])
    assert views.pnl_by_day(daily.iloc[:0]).empty


def test_pnl_by_symbol_adds_the_open_quantity_at_the_latest_price_to_the_cash_flows() -> None:
    flows = pd.DataFrame({"symbol": ["BTC/USDT", "ETH/USDT"], "fills": [2, 1], "bought": [4_800.0, 0.0],
                          "sold": [2_450.0, 1_510.0], "fees": [7.25, 1.51], "net_qty": [0.05, -1.0]})
    got = views.pnl_by_symbol(flows, STATE).set_index("symbol")["pnl"]
    assert got["BTC/USDT"] == pytest.approx(2_450.0 - 4_800.0 - 7.25 + 0.05 * 50_000.0)
    assert got["ETH/USDT"] == pytest.approx(1_510.0 - 1.51 - 1_500.0)


def test_positions_leave_out_flat_symbols_and_value_the_rest_at_the_latest_price() -> None:
    pos = views.positions(STATE).set_index("symbol")
    assert list(pos.index) == ["BTC/USDT", "ETH/USDT"]
    assert pos.at["BTC/USDT", "value"] == pytest.approx(2_500.0)
    assert pos.at["ETH/USDT", "weight"] == pytest.approx(-0.15)
    assert pos.at["BTC/USDT", "unrealized"] == pytest.approx(0.05 * 2_000.0)
    assert views.positions(None).empty


def test_slippage_is_positive_when_the_fill_is_worse_than_the_decision_close_for_either_side() -> None:
    fills = pd.DataFrame({"side": ["buy", "sell", "buy"], "price": [100.02, 99.98, 99.99],
                          "decision_price": [100.0, 100.0, 100.0]})
    assert views.slippage(fills)["slippage_bps"].tolist() == pytest.approx([2.0, 2.0, -1.0])


def test_headroom_measures_each_limit_at_the_latest_row() -> None:
    limits = LimitsConfig(max_drawdown=0.15, max_daily_loss=0.05, max_gross_leverage=1.0, max_position_fraction=0.25)
    got = views.headroom(STATE, limits).set_index("limit")
    assert got.at["drawdown", "headroom"] == pytest.approx(0.12)
    assert got.at["daily loss (24 h)", "value"] == pytest.approx(0.02)
    assert got.at["gross leverage", "used"] == pytest.approx(0.4)
    assert got.at["largest position / equity", "value"] == pytest.approx(0.25)
    assert got.at["largest position / equity", "headroom"] == pytest.approx(0.0)


def test_model_confidence_has_a_row_for_the_ensemble_and_each_member_with_a_value() -> None:
    preds = pd.DataFrame({"ts": [1], "symbol": ["BTC/USDT"], "model": ["ensemble"], "prob_up": [0.6],
                          "confidence": [0.2],
                          "payload": [json.dumps({"members": {"lightgbm": 0.7, "lstm": None, "gnn": 0.45}})]})
    got = views.model_confidence(preds).set_index("model")
    assert sorted(got.index) == ["ensemble", "gnn", "lightgbm"]
    assert got.at["lightgbm", "confidence"] == pytest.approx(0.4)
    assert got.at["gnn", "confidence"] == pytest.approx(0.1)


@pytest.mark.parametrize(("rule", "kind"), [("max_drawdown:halt", "halt"), ("max_daily_loss:release", "halt"),
                                            ("kelly:probation", "halt"), ("go_live:override", "halt"),
                                            ("stale_data", "breaker"), ("price_gap", "breaker"),
                                            ("volatility_spike", "breaker"), ("max_position", "rejection"),
                                            ("kill_switch", "rejection")])
def test_risk_events_are_sorted_into_halts_breakers_and_rejections(rule: str, kind: str) -> None:
    assert views.classify(rule) == kind
