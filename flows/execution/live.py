"""Live broker: orders on Binance spot through ccxt (the replay exchange in tests and the default run).

- Every order carries ``newClientOrderId`` = :func:`~flows.execution.orders.client_order_id`.
  Before placing an id it does not know, the broker asks the exchange for it,
  so a decision replayed after a crash adopts the order that already exists
  instead of placing a second one.
- Market rules are applied locally before any request: quantity truncated to
  the lot step, prices rounded to the tick, and an order whose notional is
  below the market's minimum is REJECTED with the reason (nothing is sent).
  Buys are capped by ``live.max_capital`` (held positions at the last price
  plus open buys); sells by the free base balance (spot cannot short).
- Fills come from ``myTrades`` (one source, deduplicated by trade id), order
  states from the exchange's reports through the local state machine; commissions
  are converted to the quote currency (``Fill.fee``) with their asset kept.
- :meth:`LiveBroker.reconcile` at start: adopts open orders the exchange has and
  the local state lacks (placed while the broker was down), settles local open
  orders the exchange finished meanwhile (their fills are handed out by the
  next :meth:`on_bar`), and adopts the exchange's balances.
- Protective legs (:mod:`flows.execution.book`): with both ``stop_loss_pct`` and
  ``take_profit_pct`` they go out as one OCO list (``orderList/oco``: one lock on
  the coins, the first fill expires the other); with one of them, as one order.
- Network errors: a failed poll is retried at the next bar (fills are never lost
  or repeated); an order that could not be checked before placing is REJECTED
  with the reason; one whose placement timed out stays NEW until a poll finds it.
- Keys come from the environment (``ExchangeSettings``) or ``live.secrets_file``;
  they live only inside the ccxt client, never in logs, reprs or snapshots.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import ccxt

from flows.execution.book import OrderBook
from flows.execution.config import ExecutionConfig
from flows.execution.orders import (
    IllegalTransition,
    Order,
    OrderStatus,
    base_quote,
    client_order_id,
    validate_intent,
)
from flows.execution.venue import intent_from_report, make_client
from flows.records import Bar, Fill, OrderIntent
from flows.settings import ExchangeSettings

log = logging.getLogger(__name__)
_CCXT_TYPE = {"market": ("market", None), "limit": ("limit", None), "stop_market": ("market", "stopLossPrice"),
              "stop_limit": ("limit", "stopLossPrice"), "take_profit": ("market", "takeProfitPrice"),
              "take_profit_limit": ("limit", "takeProfitPrice")}
_APPLIED_KEPT = 10_000


class LiveBroker:
    """The :class:`~flows.execution.orders.Broker` on a real (or replay) exchange through ccxt.

    Args:
        config: Execution settings (``live`` holds the guard, cap, secrets file and polling).
        exchange: Where the exchange is and, from the environment, its keys.
        client: A ccxt client to use instead of building one (tests).
    """

    def __init__(self, config: ExecutionConfig, exchange: ExchangeSettings, client: ccxt.Exchange | None = None) -> None:
        self.config = config
        self.client = client if client is not None else make_client(config, exchange)
        self.book = OrderBook()
        self.trade_seen: dict[str, int] = {}
        self.known_balances: dict[str, float] = {}
        self.last_price: dict[str, float] = {}
        self.bars_open: dict[str, int] = {}
        self.pending_fills: list[Fill] = []
        self.applied: dict[int, None] = {}  # trade ids already turned into fills (insertion-ordered, bounded)
        self._markets_loaded = False

    def __repr__(self) -> str:
        return f"LiveBroker(open_orders={len(self.book.open_orders())}, url={self.client.urls['api']['public']!r})"

    # -- Broker interface ----------------------------------------------------------------------
    def submit(self, intent: OrderIntent) -> Order:
        """Place an order once: a known id returns the existing order (locally or from the exchange)."""
        cid = client_order_id(intent.strategy, intent.symbol, intent.bar_ts, intent.leg)
        if cid in self.book.orders:
            return self.book.orders[cid].copy()
        self._load_markets()
        try:
            problem = validate_intent(intent)
            if problem is None:  # market rules first: a refused order costs no request
                intent, problem = self._shape(intent, caps=False)
            if problem is not None:
                return self._reject(cid, intent, problem)
            existing = self._fetch(intent.symbol, None, cid)
            if existing is not None:
                log.info("order %s already on the exchange: adopted, not placed again", cid)
                return self._adopt(existing, intent).copy()
            intent, problem = self._shape(intent, caps=True)
        except ccxt.NetworkError as exc:
            problem = f"not placed: {type(exc).__name__} while checking the order with the exchange"
        if problem is not None:
            return self._reject(cid, intent, problem)
        kind, trigger = _CCXT_TYPE[intent.order_type]
        params: dict[str, Any] = {"newClientOrderId": cid}
        if trigger is not None:
            params[trigger] = intent.stop_price
        try:
            report = self.client.create_order(intent.symbol, kind, intent.side, intent.qty,
                                              intent.limit_price if kind == "limit" else None, params)
        except (ccxt.InvalidOrder, ccxt.InsufficientFunds, ccxt.BadRequest) as exc:
            return self._reject(cid, intent, f"exchange refused: {exc}")
        except ccxt.NetworkError as exc:
            # The order may or may not have landed: keep it NEW without an exchange id; polling settles it.
            log.warning("order %s: %s while placing; its state is checked at the next poll", cid, type(exc).__name__)
            return self.book.add(Order(cid, intent, OrderStatus.NEW, updated_ts=intent.bar_ts)).copy()
        order = Order(cid, intent, OrderStatus.NEW, exchange_id=str(report["id"]), updated_ts=intent.bar_ts)
        self._apply_report(order, report)
        return self.book.add(order).copy()

    def cancel(self, client_order_id: str) -> Order:
        """Cancel an open order on the exchange; a finished order is returned as it is."""
        order = self.book.get(client_order_id)
        if not order.status.is_open:
            return order.copy()
        try:
            report = self.client.cancel_order(order.exchange_id, order.intent.symbol,
                                              {} if order.exchange_id else {"origClientOrderId": client_order_id})
        except ccxt.OrderNotFound:  # finished meanwhile (filled): learn how
            report = self._fetch(order.intent.symbol, order.exchange_id, client_order_id)
        if report is not None:
            self.pending_fills += self._collect_trades(order.intent.symbol)
            self._apply_report(order, report)
        return order.copy()

    def on_bar(self, bar: Bar) -> list[Fill]:
        """Poll the exchange for the symbol's fills and order updates; return new fills.

        A network error is logged and the poll is retried at the next bar; fills already
        applied are kept for the next call, so none is lost or handed out twice.
        """
        sym = bar.symbol
        self.last_price[sym] = bar.close
        if self.book.open_orders(sym):
            try:
                self._poll(sym)
            except ccxt.NetworkError as exc:
                log.warning("polling %s failed (%s); retried at the next bar", sym, type(exc).__name__)
        fills = [f for f in self.pending_fills if f.symbol == sym]
        self.pending_fills = [f for f in self.pending_fills if f.symbol != sym]
        return fills

    def on_bars(self, bars: Iterable[Bar]) -> list[Fill]:
        """Poll for each bar in order (one close's): the fills of :meth:`on_bar` of each."""
        fills: list[Fill] = []
        for bar in bars:
            fills += self.on_bar(bar)
        return fills

    def _poll(self, sym: str) -> None:
        self.pending_fills += self._collect_trades(sym)
        for order in self.book.open_orders(sym):
            report = self._fetch(sym, order.exchange_id, order.client_order_id)
            if report is None:
                if order.exchange_id is None:
                    self._set_status(order, OrderStatus.REJECTED, order.updated_ts,
                                     "not on the exchange after a network error while placing")
                continue
            self._apply_report(order, report)
        self.bars_open = {c: n for c, n in self.bars_open.items() if c in self.book.orders}
        for order in self.book.open_orders(sym):
            self.bars_open[order.client_order_id] = self.bars_open.get(order.client_order_id, 0) + 1
            limit = self.config.live.cancel_after_bars
            if limit is not None and order.intent.leg == "entry" and self.bars_open[order.client_order_id] > limit:
                self.cancel(order.client_order_id)

    def open_orders(self) -> list[Order]:
        """Return the orders that can still fill (local view, updated by polling)."""
        return [o.copy() for o in self.book.open_orders()]

    def balances(self) -> dict[str, float]:
        """Return the exchange's total balance per asset (non-zero ones)."""
        total = self.client.fetch_balance().get("total", {})
        return {k: float(v) for k, v in total.items() if v}

    def reconcile(self) -> list[str]:
        """Align local orders and balances with the exchange; return what differed (and was fixed)."""
        self._load_markets()
        notes: list[str] = []
        for sym in sorted(set(self.trade_seen) | {o.intent.symbol for o in self.book.orders.values()}):
            notes += self._adopt_traded(sym)
        remote = {str(r.get("clientOrderId")): r for r in self.client.fetch_open_orders()}
        for cid, report in remote.items():
            if cid not in self.book.orders and intent_from_report(report).strategy == "external":
                notes.append(f"open order {cid} on {report['symbol']} is not one of ours: left alone")
            elif cid not in self.book.orders:
                order = self._adopt(report, intent_from_report(report))
                it = order.intent
                notes.append(f"adopted open order {order.client_order_id} ({it.side} {it.qty:g} {it.symbol} "
                             f"{it.order_type}, {order.filled_qty:g} filled) that the local state did not have")
        for order in self.book.open_orders():
            if order.client_order_id in remote:
                continue
            before, n = order.status, len(self.pending_fills)
            self.pending_fills += self._collect_trades(order.intent.symbol)
            report = self._fetch(order.intent.symbol, order.exchange_id, order.client_order_id)
            if report is None:
                self._set_status(order, OrderStatus.REJECTED, order.updated_ts, "unknown to the exchange")
            else:
                self._apply_report(order, report)
            notes.append(f"order {order.client_order_id} was {before.value} locally, {order.status.value} on the "
                         f"exchange ({len(self.pending_fills) - n} fills handed out at the next bar)")
        actual = self.balances()
        if not self.known_balances:
            notes.append("balances taken from the exchange: " + ", ".join(f"{k} {v:g}" for k, v in sorted(actual.items())))
        for asset in sorted(set(actual) | set(self.known_balances)) if self.known_balances else ():
            mine, theirs = self.known_balances.get(asset, 0.0), actual.get(asset, 0.0)
            if abs(mine - theirs) > 1e-9 * max(1.0, abs(theirs)):
                notes.append(f"balance {asset}: local {mine:g}, exchange {theirs:g} (the exchange's adopted)")
        self.known_balances = actual
        for note in notes:
            log.warning("reconcile: %s", note)
        return notes

    def snapshot(self) -> dict[str, Any]:
        """Return the state as plain data (no keys, no client)."""
        return {"kind": "live", "book": self.book.to_dict(), "trade_seen": dict(self.trade_seen),
                "known_balances": dict(self.known_balances), "last_price": dict(self.last_price),
                "bars_open": dict(self.bars_open), "pending_fills": [list(f) for f in self.pending_fills],
                "applied": list(self.applied)}

    def restore(self, snap: dict[str, Any]) -> None:
        """Restore :meth:`snapshot`'s state (call :meth:`reconcile` afterwards)."""
        self.book = OrderBook.from_snapshot(snap, "live")
        self.trade_seen = {k: int(v) for k, v in snap["trade_seen"].items()}
        self.known_balances = {k: float(v) for k, v in snap["known_balances"].items()}
        self.last_price = {k: float(v) for k, v in snap["last_price"].items()}
        self.bars_open = {k: int(v) for k, v in snap.get("bars_open", {}).items()}
        self.pending_fills = [Fill(*f) for f in snap.get("pending_fills", [])]
        self.applied = dict.fromkeys(int(t) for t in snap.get("applied", []))

    def drain_updates(self) -> list[Order]:
        """Return the order changes since the last call."""
        return self.book.drain_updates()

    # -- helpers -------------------------------------------------------------------------------
    def _load_markets(self) -> None:
        if not self._markets_loaded:
            self.client.load_markets()
            self._markets_loaded = True

    def _reject(self, cid: str, intent: OrderIntent, reason: str) -> Order:
        order = Order(cid, intent, OrderStatus.REJECTED, updated_ts=intent.bar_ts, reject_reason=reason)
        log.warning("order %s rejected: %s", cid, reason)
        return self.book.add(order).copy()

    def _price(self, symbol: str) -> float | None:
        if symbol not in self.last_price:
            trades = self.client.fetch_trades(symbol, limit=1)
            if trades:
                self.last_price[symbol] = float(trades[-1]["price"])
        return self.last_price.get(symbol)

    def _shape(self, intent: OrderIntent, caps: bool) -> tuple[OrderIntent, str | None]:
        """Apply precision and the market's minimums; with ``caps`` the capital cap and the spot sell limit too."""
        c, sym = self.client, intent.symbol
        market = c.market(sym)
        if intent.limit_price is not None:
            intent = intent._replace(limit_price=float(c.price_to_precision(sym, intent.limit_price)))
        if intent.stop_price is not None:
            intent = intent._replace(stop_price=float(c.price_to_precision(sym, intent.stop_price)))
        price = intent.limit_price or intent.stop_price or self._price(sym)
        if price is None:
            return intent, f"no price known for {sym} to check the order's notional"
        qty, notes = intent.qty, []
        cap = self.config.live.max_capital
        if caps and intent.side == "buy" and cap is not None:
            room = max(cap - self._capital_used(), 0.0) / price
            if room < qty:
                qty, notes = room, [f"cut from {intent.qty:g} to stay within max_capital {cap:g}"]
        if caps and intent.side == "sell":
            base = base_quote(sym)[0]
            free = float(c.fetch_balance().get("free", {}).get(base) or 0.0)
            if free < qty:
                qty, notes = free, [f"cut from {intent.qty:g} to the free {base} balance {free:g} (spot cannot short)"]
        amount = float(c.decimal_to_precision(qty, ccxt.TRUNCATE, market["precision"]["amount"],
                                              c.precisionMode, ccxt.NO_PADDING)) if qty > 0 else 0.0
        limits = market["limits"]
        min_qty = float(limits["amount"]["min"] or 0.0)
        min_cost = float(limits["cost"]["min"] or 0.0)
        if amount <= 0 or amount < min_qty:
            return intent, (f"qty {intent.qty:g} {' '.join(notes)} rounds to {amount:g}, below the market's "
                            f"minimum {min_qty:g} {sym.split('/')[0]} (lot step {market['precision']['amount']:g}); "
                            "no order sent").replace("  ", " ")
        if amount * price < min_cost:
            return intent, (f"notional {amount * price:.4f} {sym.split('/')[1]} (qty {amount:g} x price {price:g}) is "
                            f"below the market's minimum notional {min_cost:g}; no order sent")
        reason = intent.reason + (f" ({'; '.join(notes)})" if notes else "")
        return intent._replace(qty=amount, reason=reason), None

    def _capital_used(self) -> float:
        held = sum(max(q, 0.0) * self.last_price.get(s, 0.0) for s, q in self.book.positions.items())
        buys = sum(o.remaining * (o.intent.limit_price or self.last_price.get(o.intent.symbol, 0.0))
                   for o in self.book.open_orders() if o.intent.side == "buy")
        return held + buys

    def _fetch(self, symbol: str, exchange_id: str | None, cid: str) -> dict[str, Any] | None:
        """Return the exchange's report of an order (by id, else client id), or None if it has none."""
        try:
            if exchange_id is not None:
                return self.client.fetch_order(exchange_id, symbol)
            return self.client.fetch_order(None, symbol, {"origClientOrderId": cid})
        except ccxt.OrderNotFound:
            return None

    def _adopt(self, report: dict[str, Any], intent: OrderIntent) -> Order:
        """Take an exchange order into the book; its fills so far are handed out at the next bar."""
        cid = str(report["clientOrderId"])
        intent = intent._replace(qty=float(report["amount"]))
        order = self.book.add(Order(cid, intent, OrderStatus.NEW, exchange_id=str(report["id"]),
                                    updated_ts=intent.bar_ts))
        if float(report.get("filled") or 0.0) > 0:
            trades = self.client.fetch_my_trades(intent.symbol, None, self.config.live.trades_limit,
                                                 {"orderId": order.exchange_id})
            self.pending_fills += self._apply_trades(intent.symbol, trades, advance=False)
        self._apply_report(order, report)
        return order

    def _adopt_traded(self, symbol: str) -> list[str]:
        """Adopt orders of ours that traded since the last seen trade but are not in the book (done while down)."""
        seen = self.trade_seen.get(symbol)
        params = {"fromId": seen + 1} if seen is not None else {}
        trades = self.client.fetch_my_trades(symbol, None, self.config.live.trades_limit, params)
        known = {o.exchange_id for o in self.book.orders.values()}
        notes = []
        for oid in dict.fromkeys(str(t["order"]) for t in trades if str(t["order"]) not in known):
            report = self._fetch(symbol, oid, "")
            intent = intent_from_report(report) if report is not None else None
            if report is None or intent is None or intent.strategy == "external":
                continue  # not one of ours (placed by hand or another program): left alone
            order = self._adopt(report, intent)
            notes.append(f"adopted order {order.client_order_id} ({intent.side} {intent.qty:g} {symbol}, "
                         f"{order.status.value}) that traded while the broker was down")
        return notes

    def _apply_report(self, order: Order, report: dict[str, Any]) -> None:
        """Move the order to the exchange's reported state (its fills come from its trades)."""
        info = report.get("info", {})
        status = OrderStatus(str(info.get("status") or "NEW"))
        ts = int(info.get("updateTime") or report.get("lastUpdateTimestamp") or report.get("timestamp") or 0)
        order.exchange_id = str(report.get("id") or order.exchange_id)
        if status in (OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED) and \
                order.filled_qty < float(report.get("filled") or 0.0) - 1e-12:
            return  # its trades are not in yet; the next poll brings them, then the state
        self._set_status(order, status, ts, None)

    def _set_status(self, order: Order, status: OrderStatus, ts: int, reason: str | None) -> None:
        if status == order.status:
            return
        try:
            order.transition(status, ts)
        except IllegalTransition as exc:
            log.warning("exchange report ignored: %s", exc)
            return
        order.reject_reason = reason or order.reject_reason
        self.book.touched(order)
        self._follow_up(order)

    def _follow_up(self, order: Order) -> None:
        cancels, legs = self.book.follow_ups(order, self.config)
        for cid in cancels:
            self.cancel(cid)
        if len(legs) == 2:
            self._submit_oco(legs[0], legs[1])
            return
        for leg in legs:
            self.submit(leg)

    def _submit_oco(self, stop: OrderIntent, take: OrderIntent) -> None:
        """Place stop-loss and take-profit as one OCO list: one lock on the coins, the first fill ends the other."""
        cids = [client_order_id(i.strategy, i.symbol, i.bar_ts, i.leg) for i in (stop, take)]
        if any(c in self.book.orders for c in cids):
            return
        try:
            stop, problem = self._shape(stop, caps=False)
            take, problem = (take, problem) if problem else self._shape(take, caps=False)
            found = None if problem else self._fetch(stop.symbol, None, cids[0])
            if found is not None:  # placed before a restart: adopt both legs
                for intent, cid in ((stop, cids[0]), (take, cids[1])):
                    report = self._fetch(intent.symbol, None, cid)
                    if report is not None:
                        self._adopt(report, intent)
                return
            if problem is None:
                stop, problem = self._shape(stop, caps=True)
            if problem is None:
                take = take._replace(qty=stop.qty)
                long = stop.side == "sell"  # protecting a long: take-profit above, stop below
                above, below = ((take, cids[1]), (stop, cids[0])) if long else ((stop, cids[0]), (take, cids[1]))
                c = self.client
                params = {"symbol": c.market_id(stop.symbol), "side": stop.side.upper(),
                          "quantity": c.amount_to_precision(stop.symbol, stop.qty)}
                for pos, (intent, cid) in (("above", above), ("below", below)):
                    params[pos + "Type"] = "STOP_LOSS" if intent.leg == "stop_loss" else "TAKE_PROFIT"
                    params[pos + "StopPrice"] = c.price_to_precision(intent.symbol, intent.stop_price)
                    params[pos + "ClientOrderId"] = cid
                reply = c.privatePostOrderListOco(params)
                ids = {str(o["clientOrderId"]): str(o["orderId"]) for o in reply["orders"]}
                for intent, cid in ((stop, cids[0]), (take, cids[1])):
                    self.book.add(Order(cid, intent, OrderStatus.NEW, exchange_id=ids[cid], updated_ts=intent.bar_ts))
                return
        except (ccxt.InvalidOrder, ccxt.InsufficientFunds, ccxt.BadRequest) as exc:
            problem = f"exchange refused the OCO pair: {exc}"
        except ccxt.NetworkError as exc:
            problem = f"not placed: {type(exc).__name__} while placing the OCO pair"
        for intent, cid in ((stop, cids[0]), (take, cids[1])):
            self._reject(cid, intent, problem or "")

    def _collect_trades(self, symbol: str) -> list[Fill]:
        """Fetch the symbol's own trades since the last seen one; apply them; return the new fills."""
        seen = self.trade_seen.get(symbol)
        params = {"fromId": seen + 1} if seen is not None else {}
        return self._apply_trades(symbol, self.client.fetch_my_trades(symbol, None, self.config.live.trades_limit,
                                                                      params))

    def _apply_trades(self, symbol: str, trades: list[dict[str, Any]], advance: bool = True) -> list[Fill]:
        """Turn own trades of known orders into fills once each (by trade id); update orders and balances.

        ``advance``: the trades are all of the symbol's since the last seen one, so move that mark.
        """
        by_exchange_id = {o.exchange_id: o for o in self.book.orders.values() if o.exchange_id}
        base, quote = base_quote(symbol)
        fills: list[Fill] = []
        for t in sorted(trades, key=lambda t: int(t["id"])):
            tid = int(t["id"])
            if advance:
                self.trade_seen[symbol] = max(self.trade_seen.get(symbol, 0), tid)
            order = by_exchange_id.get(str(t["order"]))
            if order is None or tid in self.applied:
                continue
            self.applied[tid] = None
            qty, price = float(t["amount"]), float(t["price"])
            fee = t.get("fee") or {}
            cost, asset = float(fee.get("cost") or 0.0), str(fee.get("currency") or quote)
            fee_quote = cost * price if asset == base else (cost if asset == quote else 0.0)
            fill = Fill(str(tid), order.client_order_id, int(t["timestamp"]), symbol, str(t["side"]), qty, price,
                        fee_quote, asset, str(t.get("takerOrMaker") or "taker"))
            sign = 1.0 if fill.side == "buy" else -1.0
            kb = self.known_balances
            kb[base] = kb.get(base, 0.0) + sign * qty - (cost if asset == base else 0.0)
            kb[quote] = kb.get(quote, 0.0) - sign * qty * price - (cost if asset == quote else 0.0)
            if order.status.is_open:
                order.add_fill(qty, price, fill.ts)
                self.book.touched(order)
            self.book.apply(fill)
            fills.append(fill)
            if not order.status.is_open:
                self._follow_up(order)
        while len(self.applied) > _APPLIED_KEPT:
            del self.applied[next(iter(self.applied))]
        return fills
