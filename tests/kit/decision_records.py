"""Decision records for sink tests: two predictions and a portfolio row at one bar time."""

from __future__ import annotations

from flows.operators.decisions import PortfolioRow
from flows.operators.scoring import Prediction

TS = 1_717_400_000_000


def records() -> list:
    preds = [Prediction(s, "1m", TS, {"lightgbm": 0.6, "lstm": float("nan")}, 0.58, 0.16, 1, 0.25,
                        {"ensemble": "v1", "lightgbm": "v2"}, 0.001, 0.01) for s in ("BTC/USDT", "ETH/USDT")]
    state = {"equity": 10_010.0, "cash": 9_000.0, "gross_exposure": 1_010.0, "net_exposure": 1_010.0,
             "drawdown": 0.0, "realized_pnl": 0.0, "unrealized_pnl": 10.0, "daily_pnl": 10.0,
             "positions": {"BTC/USDT": 0.015}, "leverage": 0.1, "full": {"cash": 9_000.0}}
    return [*preds, PortfolioRow(TS, state)]
