"""Build the decision step's components from the settings (portfolio, risk engine, broker, kill switch).

Kept apart from :mod:`flows.operators.decisions` so that the step itself imports
no I/O: the live broker's ccxt client and the kill switch's Redis client are made
here, once per worker.

Signal mapping: the scorer's ensemble signal is ``-1`` (no signal: confidence
below the threshold), ``0`` (bearish) or ``1`` (bullish); the combination rules
take a direction ``-1`` short, ``0`` none, ``+1`` long.
"""

from __future__ import annotations

import math
from typing import Any

from flows.operators.decisions import DecisionDeps
from flows.records import Prediction
from flows.settings import Settings

_DIRECTION = {1: 1, 0: -1}


def ml_direction(signal: int) -> int:
    """Map the scorer's signal (-1 none, 0 bearish, 1 bullish) to a direction (-1, 0, +1)."""
    return _DIRECTION.get(int(signal), 0)


def broker(settings: Settings) -> Any:
    """Return the paper broker, or the live broker through ccxt in ``mode=live`` (guard checked)."""
    config = settings.execution
    if config.broker == "live":
        settings.require_live_guard()
        from flows.execution.live import LiveBroker

        return LiveBroker(config, settings.exchange)
    from flows.execution.paper import PaperBroker

    quote = settings.symbols[0].split("/")[1]
    return PaperBroker(config, {quote: settings.initial_cash})


def build_deps(settings: Settings) -> DecisionDeps:
    """Return the portfolio, risk engine, broker, signal combination, intent builder and kill switch."""
    from flows.portfolio import Portfolio
    from flows.records import OrderIntent
    from flows.risk.engine import RiskEngine
    from flows.risk.kill_switch import from_settings
    from flows.risk.signals import combine

    rules, strategy = settings.risk.signals, settings.scoring.strategy
    order_type = settings.execution.default_order_type
    switch = from_settings(settings)

    def combine_one(p: Prediction) -> Any:
        rl = None if math.isnan(p.rl_target) else p.rl_target
        return combine(p.probability, p.confidence, ml_direction(p.signal), rl, None, None, rules)

    def intent(p: Prediction, qty_delta: float, price: float) -> Any:
        side = "buy" if qty_delta > 0 else "sell"
        return OrderIntent(strategy, p.symbol, side, abs(qty_delta), order_type, None, None, p.ts, "entry",
                           f"p={p.probability:.3f} conf={p.confidence:.3f} rl={p.rl_target:.2f} @{price:g}")

    return DecisionDeps(Portfolio(settings.initial_cash), RiskEngine(settings.risk), broker(settings), combine_one,
                        intent, switch.status)
