"""Wiring: the clients, brokers, stores and holders the flow's steps drive, built from the settings.

The operators import no I/O; what talks to the network is made here, once per worker:
the decision step's components (portfolio, risk engine, broker with the live broker's
ccxt client, the kill switch of the profile's stores), the model swap watch (the
profile's swap key, read once per bar time) and the SIGHUP handler that asks the model
bank for a swap.

Signal mapping: the scorer's ensemble signal is ``-1`` (no signal: confidence
below the threshold), ``0`` (bearish) or ``1`` (bullish); the combination rules
take a direction ``-1`` short, ``0`` none, ``+1`` long.
"""

from __future__ import annotations

import math
import signal
from pathlib import Path
from typing import Any

from flows.execution.orders import Broker
from flows.operators.decisions import DecisionDeps
from flows.records import OrderIntent, Prediction
from flows.risk.signals import TargetPosition
from flows.settings import Settings
from flows.stores import open_stores
from flows.stores.files import SwapFile

_DIRECTION = {1: 1, 0: -1}


def ml_direction(signal: int) -> int:
    """Map the scorer's signal (-1 none, 0 bearish, 1 bullish) to a direction (-1, 0, +1)."""
    return _DIRECTION.get(int(signal), 0)


def broker(settings: Settings) -> Broker:
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
    from flows.risk.engine import RiskEngine
    from flows.risk.signals import combine

    rules, strategy = settings.risk.signals, settings.scoring.strategy
    order_type = settings.execution.default_order_type
    switch = open_stores(settings).kill_switch()

    def combine_one(p: Prediction) -> TargetPosition:
        rl = None if math.isnan(p.rl_target) else p.rl_target
        return combine(p.probability, p.confidence, ml_direction(p.signal), rl, None, None, rules)

    def intent(p: Prediction, qty_delta: float, price: float) -> OrderIntent:
        side = "buy" if qty_delta > 0 else "sell"
        return OrderIntent(strategy, p.symbol, side, abs(qty_delta), order_type, None, None, p.ts, "entry",
                           f"p={p.probability:.3f} conf={p.confidence:.3f} rl={p.rl_target:.2f} @{price:g}")

    return DecisionDeps(Portfolio(settings.initial_cash), RiskEngine(settings.risk), broker(settings), combine_one,
                        intent, switch.status)


class SwapWatch:
    """Per-bar check of a swap key: a Redis key (``timescale`` profile) or a file (``local``).

    Returns True from :meth:`changed` when the key's value (or the file's content) differs
    from the value seen at the previous check; the first check only records it.
    """

    def __init__(self, read: Any) -> None:
        """Watch ``read()``, a callable returning the key's current value (or ``None``)."""
        self.read = read
        self.last = read()

    @classmethod
    def for_file(cls, path: Path) -> SwapWatch:
        """Watch a file's content (absent = ``None``)."""
        return cls(SwapFile(path).read)

    def changed(self) -> bool:
        """Return whether the value moved since the last check."""
        value = self.read()
        moved, self.last = value != self.last, value
        return moved


def swap_watch(settings: Settings) -> SwapWatch:
    """Return the per-bar swap check of the profile's swap key (Redis key or a file under ``data_dir``)."""
    return SwapWatch(open_stores(settings).swap_trigger().read)


def swap_on_sighup(request_swap: Any) -> None:
    """Make SIGHUP call ``request_swap`` (outside the main thread a signal cannot be set: the swap key still works)."""
    try:
        signal.signal(signal.SIGHUP, request_swap)
    except ValueError:
        pass
