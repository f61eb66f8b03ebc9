"""Orders, fills and the broker interface shared by the paper and live brokers.

An :class:`OrderIntent` is what the decision step wants (strategy, symbol,
side, size, type, the bar it was decided on and the leg: entry, stop-loss,
take-profit or exit).  Its client order id, :func:`client_order_id`, is a pure
function of strategy, symbol, bar time and leg, so a decision replayed after a
restart asks for the same id and a broker answers with the order it already
has instead of placing a second one.

An :class:`Order` moves through :class:`OrderStatus` by the transition table
:data:`TRANSITIONS`; an illegal move (a filled order becoming open again, a
cancel after the fill) raises :class:`IllegalTransition` rather than being
applied silently.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any, Protocol

from flows.records import Bar, Fill, OrderIntent

SIDES = ("buy", "sell")
ORDER_TYPES = ("market", "limit", "stop_market", "stop_limit", "take_profit", "take_profit_limit")
LEG_CODES = {"entry": "e", "stop_loss": "s", "take_profit": "t", "exit": "x"}
CLIENT_ID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
_STRATEGY_RE = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,15}/[A-Z0-9]{1,10}$")
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


class OrderStatus(str, Enum):
    """Binance's order states (the paper broker uses the same ones)."""

    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"

    @property
    def is_open(self) -> bool:
        """Return True while the order can still fill."""
        return self in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)


_OPEN = (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)
_END = (OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED)
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.NEW: frozenset((*_OPEN, *_END, OrderStatus.REJECTED)),
    OrderStatus.PARTIALLY_FILLED: frozenset((OrderStatus.PARTIALLY_FILLED, *_END)),
    OrderStatus.FILLED: frozenset((OrderStatus.FILLED,)),
    OrderStatus.CANCELED: frozenset((OrderStatus.CANCELED,)),
    OrderStatus.REJECTED: frozenset((OrderStatus.REJECTED,)),
    OrderStatus.EXPIRED: frozenset((OrderStatus.EXPIRED,)),
}


class IllegalTransition(ValueError):
    """Raised when an order is asked to move to a state its current state cannot reach."""


@dataclass(slots=True)
class Order:
    """An order and what has happened to it so far."""

    client_order_id: str
    intent: OrderIntent
    status: OrderStatus
    filled_qty: float = 0.0
    avg_price: float = 0.0
    exchange_id: str | None = None
    updated_ts: int = 0
    reject_reason: str | None = None

    @property
    def remaining(self) -> float:
        """Return the quantity still to fill."""
        return max(self.intent.qty - self.filled_qty, 0.0)

    def transition(self, status: OrderStatus, ts: int) -> None:
        """Move to ``status`` at ``ts`` (ms), refusing moves the table does not allow."""
        if status not in TRANSITIONS[self.status]:
            raise IllegalTransition(f"order {self.client_order_id}: {self.status.value} -> {status.value} "
                                    "is not a legal transition")
        self.status, self.updated_ts = status, max(int(ts), self.updated_ts)

    def add_fill(self, qty: float, price: float, ts: int) -> None:
        """Record an execution of ``qty`` at ``price``; the status becomes partially filled or filled."""
        total = self.filled_qty + qty
        self.avg_price = (self.avg_price * self.filled_qty + price * qty) / total
        self.filled_qty = total
        done = total >= self.intent.qty * (1 - 1e-9)
        self.transition(OrderStatus.FILLED if done else OrderStatus.PARTIALLY_FILLED, ts)

    def to_dict(self) -> dict[str, Any]:
        """Return the order as plain JSON-able data."""
        out = asdict(self)
        out["intent"] = list(self.intent)
        out["status"] = self.status.value
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Order:
        """Rebuild an order from :meth:`to_dict`."""
        fields = dict(d)
        fields["intent"] = OrderIntent(*fields["intent"])
        fields["status"] = OrderStatus(fields["status"])
        return cls(**fields)

    def copy(self) -> Order:
        """Return an independent copy (what brokers hand out, so callers cannot change their books)."""
        return Order(self.client_order_id, self.intent, self.status, self.filled_qty, self.avg_price,
                     self.exchange_id, self.updated_ts, self.reject_reason)


def _base36(n: int) -> str:
    if n < 0:
        raise ValueError(f"bar_ts must be >= 0 ms, got {n}")
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _B36[r] + out
        if n == 0:
            return out


def client_order_id(strategy: str, symbol: str, bar_ts: int, leg: str) -> str:
    """Return the deterministic client order id of one leg of one decision.

    ``<strategy>.<BASE/QUOTE>.<bar_ts base 36>.<leg code>``: the parts cannot
    contain the ``.`` separator, so different inputs give different ids
    (``cs.BTC/USDT.lx3k2p40.e``, 22 characters).  When that passes Binance's 36
    characters (long strategy and symbol names), the id is the strategy's first
    8 characters and 27 hex digits (108 bits) of the SHA-256 of the long form.

    Raises:
        ValueError: naming the argument that cannot be part of an id.
    """
    if not _STRATEGY_RE.match(strategy):
        raise ValueError(f"strategy {strategy!r} must match {_STRATEGY_RE.pattern}")
    if not _SYMBOL_RE.match(symbol):
        raise ValueError(f"symbol {symbol!r} must look like BTC/USDT")
    if leg not in LEG_CODES:
        raise ValueError(f"leg {leg!r} must be one of {', '.join(LEG_CODES)}")
    full = f"{strategy}.{symbol}.{_base36(int(bar_ts))}.{LEG_CODES[leg]}"
    if len(full) <= 36:
        return full
    return f"{strategy[:8]}.{hashlib.sha256(full.encode()).hexdigest()[:27]}"


def validate_intent(intent: OrderIntent) -> str | None:
    """Return why ``intent`` cannot be placed, or None when it is well formed."""
    if intent.side not in SIDES:
        return f"side {intent.side!r} must be buy or sell"
    if not intent.qty > 0:
        return f"qty {intent.qty!r} must be > 0"
    if intent.order_type not in ORDER_TYPES:
        return f"order_type {intent.order_type!r} must be one of {', '.join(ORDER_TYPES)}"
    if intent.order_type in ("limit", "stop_limit", "take_profit_limit") and not (intent.limit_price or 0) > 0:
        return f"order_type {intent.order_type} needs limit_price > 0, got {intent.limit_price!r}"
    if intent.order_type.startswith(("stop", "take")) and not (intent.stop_price or 0) > 0:
        return f"order_type {intent.order_type} needs stop_price > 0, got {intent.stop_price!r}"
    if intent.leg not in LEG_CODES:
        return f"leg {intent.leg!r} must be one of {', '.join(LEG_CODES)}"
    return None


def base_quote(symbol: str) -> tuple[str, str]:
    """Return ``("BTC", "USDT")`` for ``"BTC/USDT"``."""
    base, _, quote = symbol.partition("/")
    return base, quote


class Broker(Protocol):
    """What the decision step needs from a broker (paper or live)."""

    def submit(self, intent: OrderIntent) -> Order:
        """Place an order; the same client order id twice returns the existing order."""

    def cancel(self, client_order_id: str) -> Order:
        """Cancel an open order; a finished order is returned unchanged."""

    def on_bar(self, bar: Bar) -> list[Fill]:
        """Advance to a closed bar; return the fills it brought."""

    def on_bars(self, bars: Iterable[Bar]) -> list[Fill]:
        """Advance to several closed bars (one close's); return their fills, as :meth:`on_bar` of each in order."""

    def open_orders(self) -> list[Order]:
        """Return the orders that can still fill."""

    def balances(self) -> dict[str, float]:
        """Return the balance per asset."""

    def reconcile(self) -> list[str]:
        """Bring local state in line with the venue; return the differences found and fixed."""

    def drain_updates(self) -> list[Order]:
        """Return the order changes (placements, fills, cancels, legs) since the last call."""

    def snapshot(self) -> dict[str, Any]:
        """Return the state as plain data (no secrets)."""

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore the state of :meth:`snapshot`."""
