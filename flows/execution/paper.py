"""Paper broker: simulated fills against closed bars with fees, slippage and latency.

Timing: an order decided at bar close ``T`` reaches the market at
``T + latency_ms`` and can first fill on the bar that contains that time (with
no latency, the bar that opens at ``T``).  The reference price at arrival is
the bar's open, or with latency inside the bar ``open + (close - open) * f``
where ``f`` is the elapsed fraction of the bar (bars carry no finer path).
A bar without volume fills nothing: there was nobody to trade with.

Prices, for a bar with ``open``, ``high``, ``low``, ``volume`` and reference
price ``ref``:

- market: ``ref * (1 + s)`` for a buy, ``ref * (1 - s)`` for a sell, taker fee;
  ``s = base_bps/1e4 + impact_bps/1e4 * (qty / volume) ** impact_exponent
  + volatility_coef * (high - low) / open``, at most ``max_bps/1e4``;
- limit ``L``: marketable at arrival (buy ``ref <= L``): ``min(ref * (1 + s), L)``,
  taker; otherwise it rests and fills at ``L`` with the maker fee only when the
  bar trades *through* it (buy: ``low < L``; sell: ``high > L``);
- stop-market / take-profit with trigger ``S``: a sell stop (or buy
  take-profit) triggers when the price falls to ``S`` (``low <= S``), a buy
  stop (sell take-profit) when it rises to ``S``; the fill is at ``S`` moved
  by the slippage, or at ``ref`` when the bar already opened past ``S`` (a
  gap); taker fee.  ``stop_limit`` / ``take_profit_limit`` become a limit at
  their ``limit_price`` once triggered.  Stops are checked before
  take-profits, so a bar touching both is taken as the stop (conservative).

Fees are charged in the quote currency.  Balances start from
``initial_balances`` and move by fills; the paper broker does not refuse
orders for lack of balance (sizing is the risk engine's job; shorts are
allowed).  Orders filled by a bar may be followed by protective legs (see
:mod:`flows.execution.book`), which can first fill on the next bar.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from flows.execution.book import OrderBook
from flows.execution.orders import Order, OrderStatus, base_quote, client_order_id, validate_intent
from flows.records import Bar, Fill, OrderIntent
from flows.timeframes import timeframe_ms

if TYPE_CHECKING:  # the settings models (pydantic) load only when a default config is built
    from flows.execution.config import ExecutionConfig

_FALLING = {("stop", "sell"), ("take", "buy")}
_PRIORITY = {"stop_loss": 0, "entry": 1, "exit": 1, "take_profit": 2}


def slippage(config: ExecutionConfig, qty: float, bar: Bar) -> float:
    """Return the slippage fraction of a fill of ``qty`` on ``bar`` (see the module docstring)."""
    sc = config.slippage
    impact = sc.impact_bps / 1e4 * (qty / bar.volume) ** sc.impact_exponent if bar.volume > 0 else 0.0
    rng = (bar.high - bar.low) / bar.open if bar.open > 0 else 0.0
    return min(sc.base_bps / 1e4 + impact + sc.volatility_coef * rng, sc.max_bps / 1e4)


class PaperBroker:
    """Simulated broker with the :class:`~flows.execution.orders.Broker` interface.

    Args:
        config: Fees, slippage, latency, protective legs.
        initial_balances: Starting balance per asset, e.g. ``{"USDT": 10_000}``.
    """

    def __init__(self, config: ExecutionConfig | None = None,
                 initial_balances: Mapping[str, float] | None = None) -> None:
        if config is None:
            from flows.execution.config import ExecutionConfig

            config = ExecutionConfig()
        self.config = config
        self.book = OrderBook()
        self._balances: dict[str, float] = {k: float(v) for k, v in (initial_balances or {}).items()}
        self.arrival: dict[str, int] = {}
        self.last_close: dict[str, float] = {}

    # -- Broker interface ----------------------------------------------------------------------
    def submit(self, intent: OrderIntent, arrival_ts: int | None = None) -> Order:
        """Accept an order (or return the one with the same client id); invalid intents are REJECTED."""
        cid = client_order_id(intent.strategy, intent.symbol, intent.bar_ts, intent.leg)
        if cid in self.book.orders:
            return self.book.orders[cid].copy()
        if intent.order_type == "limit" and intent.limit_price is None and intent.symbol in self.last_close:
            off = self.config.limit_offset_bps / 1e4
            ref = self.last_close[intent.symbol]
            intent = intent._replace(limit_price=ref * (1 - off) if intent.side == "buy" else ref * (1 + off))
        order = Order(cid, intent, OrderStatus.NEW, updated_ts=intent.bar_ts)
        problem = validate_intent(intent)
        if problem is not None:
            order.transition(OrderStatus.REJECTED, intent.bar_ts)
            order.reject_reason = problem
        self.arrival[cid] = intent.bar_ts + self.config.latency_ms if arrival_ts is None else arrival_ts
        return self.book.add(order).copy()

    def cancel(self, client_order_id: str) -> Order:
        """Cancel an open order; a finished one is returned as it is."""
        order = self.book.get(client_order_id)
        if order.status.is_open:
            order.transition(OrderStatus.CANCELED, order.updated_ts)
            self.book.touched(order)
        return order.copy()

    def on_bar(self, bar: Bar) -> list[Fill]:
        """Match the symbol's open orders against a closed bar; return the fills."""
        self.last_close[bar.symbol] = bar.close
        fills: list[Fill] = []
        if not self.book.has_open():
            return fills
        pending = self.book.open_orders(bar.symbol)
        if bar.volume <= 0 or not pending:
            return fills
        tf = timeframe_ms(bar.timeframe)
        end = bar.ts + tf
        pending.sort(key=lambda o: _PRIORITY.get(o.intent.leg, 1))
        for order in pending:
            arrival = self.arrival.get(order.client_order_id, order.intent.bar_ts)
            if not order.status.is_open or arrival >= end:
                continue
            t0 = max(bar.ts, arrival)
            ref = bar.open + (bar.close - bar.open) * (t0 - bar.ts) / tf
            matched = self._match(order.intent, order.remaining, bar, ref)
            if matched is None:
                continue
            fills.append(self._fill(order, matched[0], matched[1], t0))
            cancels, legs = self.book.follow_ups(order, self.config)
            for cid in cancels:
                self.cancel(cid)
            for leg in legs:
                self.submit(leg, arrival_ts=end)
        if len(self.arrival) > len(self.book.orders) + 256:  # forgotten orders' arrival times
            self.arrival = {c: t for c, t in self.arrival.items() if c in self.book.orders}
        return fills

    def on_bars(self, bars: Iterable[Bar]) -> list[Fill]:
        """Match several closed bars in order (one close's): the fills of :meth:`on_bar` of each.

        Without an open order a bar only moves its symbol's last close: one call per close.
        """
        if not self.book.has_open():
            last = self.last_close
            for bar in bars:
                last[bar.symbol] = bar.close
            return []
        fills: list[Fill] = []
        for bar in bars:
            fills += self.on_bar(bar)
        return fills

    def open_orders(self) -> list[Order]:
        """Return the orders that can still fill."""
        return [o.copy() for o in self.book.open_orders()]

    def balances(self) -> dict[str, float]:
        """Return the balance per asset (starting balances moved by fills and fees)."""
        return dict(self._balances)

    def reconcile(self) -> list[str]:
        """Return no differences: the paper broker is its own venue."""
        return []

    def drain_updates(self) -> list[Order]:
        """Return the order changes (placements, fills, cancels, legs) since the last call."""
        return self.book.drain_updates()

    def snapshot(self) -> dict[str, Any]:
        """Return the state as plain data."""
        return {"kind": "paper", "book": self.book.to_dict(), "balances": dict(self._balances),
                "arrival": dict(self.arrival), "last_close": dict(self.last_close)}

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore :meth:`snapshot`'s state."""
        self.book = OrderBook.from_snapshot(snap, "paper")
        self._balances = {k: float(v) for k, v in snap["balances"].items()}
        self.arrival = {k: int(v) for k, v in snap["arrival"].items()}
        self.last_close = {k: float(v) for k, v in snap["last_close"].items()}

    # -- matching ------------------------------------------------------------------------------
    def _match(self, it: OrderIntent, qty: float, bar: Bar, ref: float) -> tuple[float, str] | None:
        """Return (price, liquidity) if the order fills on ``bar``, else None."""
        buy = it.side == "buy"
        s = slippage(self.config, qty, bar)
        taker = ref * (1 + s) if buy else ref * (1 - s)
        kind = it.order_type
        if kind == "market":
            return taker, "taker"
        if kind.startswith(("stop", "take")):
            stop = float(it.stop_price or 0.0)
            if (kind.split("_")[0], it.side) in _FALLING:
                trig = ref if ref <= stop else (stop if bar.low <= stop else None)
            else:
                trig = ref if ref >= stop else (stop if bar.high >= stop else None)
            if trig is None:
                return None
            if not kind.endswith("limit"):
                return (trig * (1 + s) if buy else trig * (1 - s)), "taker"
            ref, taker = trig, (trig * (1 + s) if buy else trig * (1 - s))
        limit = float(it.limit_price or 0.0)
        if (buy and ref <= limit) or (not buy and ref >= limit):
            return (min(taker, limit) if buy else max(taker, limit)), "taker"
        if (buy and bar.low < limit) or (not buy and bar.high > limit):
            return limit, "maker"
        return None

    def _fill(self, order: Order, price: float, liquidity: str, ts: int) -> Fill:
        # Paper orders fill whole, so one fill per order and a stable fill id.
        it = order.intent
        qty = order.remaining
        rate = self.config.maker_fee if liquidity == "maker" else self.config.taker_fee
        fee = qty * price * rate
        base, quote = base_quote(it.symbol)
        fill = Fill(f"{order.client_order_id}#1", order.client_order_id, ts, it.symbol, it.side, qty, price, fee,
                    quote, liquidity)
        order.add_fill(qty, price, ts)
        self.book.touched(order)
        self.book.apply(fill)
        sign = 1.0 if it.side == "buy" else -1.0
        self._balances[base] = self._balances.get(base, 0.0) + sign * qty
        self._balances[quote] = self._balances.get(quote, 0.0) - sign * qty * price - fee
        return fill
