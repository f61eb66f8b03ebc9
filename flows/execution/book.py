"""The book a broker keeps: its orders, changes not yet handed out, positions from its own fills, and
the protective legs (stop-loss, take-profit) that follow a position.

Shared by :class:`~flows.execution.paper.PaperBroker` and
:class:`~flows.execution.live.LiveBroker`, so both apply the same rules:

- when an entry or exit order is done (filled, or canceled/expired after a
  partial fill), the symbol's open legs are canceled and, if a position
  remains and ``stop_loss_pct`` / ``take_profit_pct`` are set, new legs are
  asked for: the whole position, the other side, at the average entry price
  moved by the percentage (a stop below a long, above a short);
- when a leg fills, its sibling is canceled (one cancels the other);
- legs take the entry's bar time, so their client ids are deterministic too.

Finished orders are kept (for idempotent resubmits) up to ``keep_finished``,
the oldest forgotten first, so the book and its snapshot stay bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from flows.execution.orders import Order, client_order_id
from flows.records import Fill, OrderIntent

if TYPE_CHECKING:
    from flows.execution.config import ExecutionConfig

LEGS = ("stop_loss", "take_profit")
KEEP_FINISHED = 2_000  # a replay after a restart starts at the last snapshot, far fewer orders back


class OrderBook:
    """Orders by client id, pending updates and the positions the broker's own fills made."""

    def __init__(self, keep_finished: int = KEEP_FINISHED) -> None:
        """Start empty; keep the latest ``keep_finished`` finished orders (older ones are forgotten)."""
        self.orders: dict[str, Order] = {}
        self.updates: list[Order] = []
        self.positions: dict[str, float] = {}
        self.entry_price: dict[str, float] = {}
        self.keep_finished = keep_finished
        self._open: dict[str, None] = {}  # client ids of open orders, in placement order
        self._open_of: dict[str, dict[str, None]] = {}  # symbol -> its client ids of :attr:`_open`, same order
        self._finished: dict[str, None] = {}  # client ids of finished orders, oldest first

    def get(self, cid: str) -> Order:
        """Return the order with client id ``cid`` (KeyError naming it when unknown)."""
        try:
            return self.orders[cid]
        except KeyError:
            raise KeyError(f"client_order_id {cid!r} is not an order of this broker") from None

    def add(self, order: Order) -> Order:
        """Keep a new order and note it as changed; return it."""
        self.orders[order.client_order_id] = order
        self.touched(order)
        return order

    def touched(self, order: Order) -> None:
        """Note that ``order`` changed (handed out by :meth:`drain_updates`); index it as open or finished."""
        self.updates.append(order.copy())
        cid = order.client_order_id
        if order.status.is_open:
            self._open[cid] = None
            self._open_of.setdefault(order.intent.symbol, {})[cid] = None
            return
        if cid in self._open:
            del self._open[cid], self._open_of[order.intent.symbol][cid]
        self._finished[cid] = None
        while len(self._finished) > self.keep_finished:
            old = next(iter(self._finished))
            del self._finished[old]
            self.orders.pop(old, None)

    def drain_updates(self) -> list[Order]:
        """Return the order changes since the last call, oldest first (one entry per change)."""
        out, self.updates = self.updates, []
        return out

    def has_open(self) -> bool:
        """Return whether any order can still fill."""
        return bool(self._open)

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Return the open orders (of ``symbol``), in placement order.

        A symbol's come from its own index: the paper broker asks once per bar, and scanning every
        open order for each of 200 symbols' bars was a sixth of the decision step's time per close
        (``tests/bench/bench_scale.py --sections 2``, issue 21).
        """
        orders = self.orders
        return [orders[c] for c in (self._open if symbol is None else self._open_of.get(symbol, ()))]

    def apply(self, fill: Fill) -> None:
        """Move the position and its average entry price by a fill (average cost; flips restart it)."""
        sign = 1.0 if fill.side == "buy" else -1.0
        old = self.positions.get(fill.symbol, 0.0)
        new = old + sign * fill.qty
        if abs(new) < 1e-12:
            self.positions.pop(fill.symbol, None)
            self.entry_price.pop(fill.symbol, None)
            return
        if old == 0.0 or (old > 0) != (new > 0):
            self.entry_price[fill.symbol] = fill.price
        elif abs(new) > abs(old):
            self.entry_price[fill.symbol] = (self.entry_price[fill.symbol] * abs(old) + fill.price * fill.qty) / abs(new)
        self.positions[fill.symbol] = new

    def follow_ups(self, order: Order, config: ExecutionConfig) -> tuple[list[str], list[OrderIntent]]:
        """Return (client ids to cancel, leg intents to place) after ``order`` finished."""
        if order.status.is_open or order.filled_qty <= 0:
            return [], []
        it = order.intent
        cancels = [o.client_order_id for o in self.open_orders(it.symbol) if o.intent.leg in LEGS]
        return cancels, [] if it.leg in LEGS else list(self.leg_intents(it, config))

    def leg_intents(self, entry: OrderIntent, config: ExecutionConfig) -> Iterator[OrderIntent]:
        """Yield the protective legs of the symbol's position after ``entry`` (not those the book already has)."""
        pos = self.positions.get(entry.symbol, 0.0)
        if pos == 0.0:
            return
        avg = self.entry_price[entry.symbol]
        long = pos > 0
        side = "sell" if long else "buy"
        for leg, pct, sign in (("stop_loss", config.stop_loss_pct, -1.0), ("take_profit", config.take_profit_pct, 1.0)):
            if pct is None:
                continue
            cid = client_order_id(entry.strategy, entry.symbol, entry.bar_ts, leg)
            if cid in self.orders:
                continue
            price = avg * (1.0 + sign * pct) if long else avg * (1.0 - sign * pct)
            kind = "stop_market" if leg == "stop_loss" else "take_profit"
            yield OrderIntent(entry.strategy, entry.symbol, side, abs(pos), kind, None, price, entry.bar_ts, leg,
                              f"{leg} {pct:.2%} from entry {avg:g}")

    def to_dict(self) -> dict[str, Any]:
        """Return the book as plain data (pending updates included)."""
        return {"orders": [o.to_dict() for o in self.orders.values()], "finished": list(self._finished),
                "updates": [o.to_dict() for o in self.updates],
                "positions": dict(self.positions), "entry_price": dict(self.entry_price)}

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any], kind: str) -> OrderBook:
        """Return the book of a broker snapshot after checking it is a ``kind`` broker's."""
        if snap.get("kind") != kind:
            raise ValueError(f"broker snapshot kind {snap.get('kind')!r} is not a {kind} broker's")
        return cls.from_dict(snap["book"])

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OrderBook:
        """Rebuild a book from :meth:`to_dict`."""
        book = cls()
        book.orders = {o["client_order_id"]: Order.from_dict(o) for o in d.get("orders", [])}
        book._open = {c: None for c, o in book.orders.items() if o.status.is_open}
        for c in book._open:
            book._open_of.setdefault(book.orders[c].intent.symbol, {})[c] = None
        book._finished = {c: None for c in d.get("finished", []) if c in book.orders}
        book.updates = [Order.from_dict(o) for o in d.get("updates", [])]
        book.positions = {k: float(v) for k, v in d.get("positions", {}).items()}
        book.entry_price = {k: float(v) for k, v in d.get("entry_price", {}).items()}
        return book
