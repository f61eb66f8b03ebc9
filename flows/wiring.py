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

import logging
import signal
from pathlib import Path
from typing import Any

from flows.execution.orders import Broker
from flows.lifecycle import stop_requested
from flows.operators.decisions import DecisionDeps
from flows.records import OrderIntent, Prediction
from flows.settings import Settings, SettingsError
from flows.stores import open_stores
from flows.stores.base import StoreUnavailable
from flows.stores.files import SwapFile
from flows.strategies.legacy import ml_direction as ml_direction  # re-exported
from flows.timeframes import timeframe_ms

log = logging.getLogger(__name__)


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
    from flows.operators.regime import build_feed
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

    try:
        regime = build_feed(settings.regime, settings.symbols, timeframe_ms(settings.trading_timeframe()),
                            settings.registry_root())
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return DecisionDeps(Portfolio(settings.initial_cash), RiskEngine(risk), broker(settings), decide, intent,
                        switch.status, stop_requested, regime)


_UNREAD = object()  # the swap key's value before it could first be read


class SwapWatch:
    """Per-bar check of a swap key: a Redis key (``timescale`` profile) or a file (``local``).

    Returns True from :meth:`changed` when the key's value (or the file's content) differs
    from the value seen at the previous check; the first check only records it.  While the
    key cannot be read (Redis down: :class:`~flows.stores.base.StoreUnavailable`) nothing
    changes; the first read after that compares with the last value seen.
    """

    def __init__(self, read: Any) -> None:
        """Watch ``read()``, a callable returning the key's current value (or ``None``)."""
        self.read = read
        self.last: Any = _UNREAD
        self.unreadable = False
        self.changed()

    def _read(self) -> Any:
        try:
            value = self.read()
        except StoreUnavailable as exc:
            if not self.unreadable:
                log.warning("model swap checks skipped until the swap key can be read again: %s", exc)
            self.unreadable = True
            return _UNREAD
        if self.unreadable:
            log.warning("model swap key readable again")
            self.unreadable = False
        return value

    @classmethod
    def for_file(cls, path: Path) -> SwapWatch:
        """Watch a file's content (absent = ``None``)."""
        return cls(SwapFile(path).read)

    def changed(self) -> bool:
        """Return whether the value moved since the last check (False while it cannot be read)."""
        value = self._read()
        if value is _UNREAD:
            return False
        moved = self.last is not _UNREAD and value != self.last
        self.last = value
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
