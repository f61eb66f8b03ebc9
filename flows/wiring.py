"""Wiring: the clients, brokers, stores and holders the flow's steps drive, built from the settings.

The operators import no I/O; what talks to the network is made here, once per worker:
the decision step's components (portfolio, risk engine, broker with the live broker's
ccxt client, the kill switch of the profile's stores), the model swap watch (the
profile's swap key, read once per bar time) and the SIGHUP handler that asks the model
bank for a swap.

The decisions come from the configured strategy (``strategy.name``,
:func:`flows.strategies.load.build_strategy`); a strategy that sizes itself
(``Strategy.sizing = "vol_target"``) gets a risk engine with that sizing method,
every limit, halt, breaker and the kill switch as configured.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from flows.execution.orders import Broker
from flows.lifecycle import stop_requested
from flows.operators.decisions import DecisionDeps
from flows.records import OrderIntent, Prediction
from flows.settings import Settings
from flows.stores import open_stores
from flows.stores.files import SwapFile
from flows.strategies.legacy import ml_direction as ml_direction  # re-exported


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
    """Return the portfolio, risk engine, broker, strategy, intent builder and kill switch."""
    from flows.portfolio import Portfolio
    from flows.risk.engine import RiskEngine
    from flows.strategies.load import build_strategy

    strategy = settings.scoring.strategy
    order_type = settings.execution.default_order_type
    switch = open_stores(settings).kill_switch()
    decide = build_strategy(settings)
    risk = settings.risk
    if decide.sizing is not None and risk.sizing.method != decide.sizing:
        risk = risk.model_copy(update={"sizing": risk.sizing.model_copy(update={"method": decide.sizing})})

    def intent(p: Prediction, qty_delta: float, price: float) -> OrderIntent:
        side = "buy" if qty_delta > 0 else "sell"
        return OrderIntent(strategy, p.symbol, side, abs(qty_delta), order_type, None, None, p.ts, "entry",
                           f"p={p.probability:.3f} conf={p.confidence:.3f} rl={p.rl_target:.2f} @{price:g}")

    return DecisionDeps(Portfolio(settings.initial_cash), RiskEngine(risk), broker(settings), decide, intent,
                        switch.status, stop_requested)


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
