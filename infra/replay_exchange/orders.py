"""Spot orders on the replay exchange: one account, Binance's filters and errors, matching against the tape.

The replay has no order book, so the liquidity an order meets is the trades
replayed *after* it was placed: each trade offers its own size at its own
price (orders do not compete with each other for it).  Matching is lazy: the
account catches up with what the replay has streamed (``ReplayEngine.horizon``)
before every signed request, so what a client sees is the same as if orders
had been matched trade by trade.

- ``MARKET``: fills at the next trades' prices, each up to the trade's size.
- ``LIMIT`` (GTC) at ``L``: if it was marketable when placed (buy with ``L`` at
  or above the last trade price) it takes trades at ``price <= L`` at their
  price (taker); otherwise it rests and fills at ``L`` (maker) on trades that
  go *through* it (buy: ``price < L``).  ``LIMIT_MAKER`` that would take is
  refused (-2010).
- ``STOP_LOSS[_LIMIT]`` / ``TAKE_PROFIT[_LIMIT]`` with ``stopPrice`` ``S``: a sell
  stop (buy take-profit) triggers on a trade at or below ``S``, a buy stop (sell
  take-profit) at or above; one already past its trigger is refused (-2010
  "Order would trigger immediately.").  Once triggered it works as a market
  (or limit) order from the triggering trade on.
- ``orderList/oco``: two orders (``above*`` / ``below*`` parameters) sharing one
  lock; the first fill of one expires the other, canceling one cancels both.
- Balances: a sell locks its quantity, a limit buy ``qty * price``, a market
  buy ``qty * reference price`` (last trade, or ``stopPrice``); fills settle
  from the lock (then from free funds; a market buy that runs out of quote
  expires).  Commission: the received asset, at the maker or taker rate.

Errors are Binance's: -1013 filter failures (``PRICE_FILTER``, ``LOT_SIZE``,
``NOTIONAL``), -2010 insufficient balance or duplicate client id among open
orders, -2011 cancel of an unknown or finished order, -2013 query of an
unknown order, -1102/-1100/-1106/-1115/-1116 bad parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np

from infra.replay_exchange.engine import ReplayEngine
from infra.replay_exchange.tape import MarketData, TradeTape
from infra.replay_exchange.wire import (
    BinanceError,
    illegal_param,
    invalid_symbol,
    missing_param,
    step_str,
)

ORDER_TYPES = ("MARKET", "LIMIT", "LIMIT_MAKER", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT")
MIN_NOTIONAL = Decimal("5")
MAX_PRICE, MAX_QTY = Decimal("1000000"), Decimal("9000000")
_EPS = 1e-12


def insufficient() -> BinanceError:
    """Return Binance's -2010 insufficient balance error."""
    return BinanceError(-2010, "Account has insufficient balance for requested action.")


@dataclass(eq=False)
class ReplayOrder:
    """One order on the replay exchange (``next_idx`` = the tape row it will look at next)."""

    order_id: int
    client_id: str
    market_id: str
    side: str
    type: str
    qty: float
    price: float
    stop_price: float
    time: int
    next_idx: int
    working: bool
    taker: bool
    lock_asset: str
    locked: float
    status: str = "NEW"
    executed: float = 0.0
    cum_quote: float = 0.0
    update_time: int = 0
    working_time: int = -1
    fills: list[dict[str, Any]] = field(default_factory=list)
    sibling: int | None = None  # the other order of an OCO pair

    @property
    def is_open(self) -> bool:
        """Return True while the order can fill."""
        return self.status in ("NEW", "PARTIALLY_FILLED")

    @property
    def list_id(self) -> int:
        """Return the OCO list id (its first order's id), -1 for a lone order."""
        return -1 if self.sibling is None else min(self.order_id, self.sibling)


class Account:
    """The replay exchange's single spot account, its orders and its trades."""

    def __init__(self, data: MarketData, engine: ReplayEngine, balances: dict[str, float],
                 maker: float, taker: float) -> None:
        """Start with ``balances`` (free) and the commission rates ``maker`` / ``taker``."""
        self.data, self.engine, self.maker, self.taker = data, engine, maker, taker
        self.free: dict[str, float] = {k: float(v) for k, v in balances.items()}
        self.locked: dict[str, float] = {k: 0.0 for k in balances}
        self.orders: dict[int, ReplayOrder] = {}
        self.trades: list[dict[str, Any]] = []
        self._next_order, self._next_trade = 1, 1

    # -- queries ---------------------------------------------------------------------------
    def now_ms(self) -> int:
        """Return the replay clock in ms."""
        return self.engine.clock_ns() // 1_000_000

    def tape(self, market_id: str | None) -> TradeTape:
        """Return the tape of a market id (-1102 when missing, -1121 when unknown)."""
        if not market_id:
            raise missing_param("symbol")
        tape = self.data.tape(market_id.upper())
        if tape is None:
            raise invalid_symbol()
        return tape

    def find(self, market_id: str, order_id: str | None, client_id: str | None, code: int) -> ReplayOrder:
        """Return an order by id or client id (client id: the newest with it); else error ``code``."""
        msg = "Unknown order sent." if code == -2011 else "Order does not exist."
        if order_id is None and client_id is None:
            raise BinanceError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        if order_id is not None:
            try:
                o = self.orders.get(int(order_id))
            except ValueError:
                raise illegal_param("orderId") from None
            if o is None or o.market_id != market_id:
                raise BinanceError(code, msg)
            return o
        for o in reversed(self.orders.values()):
            if o.market_id == market_id and o.client_id == client_id:
                return o
        raise BinanceError(code, msg)

    def last_price(self, tape: TradeTape) -> float | None:
        """Return the last streamed trade price of a market, or None before its first trade."""
        h = self.engine.horizon(tape.market.market_id)
        return float(tape.price[h - 1]) if h else None

    # -- placing and canceling ---------------------------------------------------------------
    def place_oco(self, p: dict[str, str]) -> tuple[ReplayOrder, ReplayOrder]:
        """Accept an OCO pair (``orderList/oco``): two orders, one lock; the first to fill expires the other."""
        legs = []
        for pos in ("above", "below"):
            leg = {"symbol": p.get("symbol", ""), "side": p.get("side", ""), "quantity": p.get("quantity", ""),
                   "type": p.get(f"{pos}Type", "")}
            for name, key in (("price", "Price"), ("stopPrice", "StopPrice"), ("timeInForce", "TimeInForce"),
                              ("newClientOrderId", "ClientOrderId")):
                if p.get(pos + key):
                    leg[name] = p[pos + key]
            if not leg["type"]:
                raise missing_param(f"{pos}Type")
            legs.append(leg)
        first = self.place(legs[0])
        try:
            second = self.place(legs[1], shares_lock=first)
        except BinanceError:
            self._finish(first, "CANCELED", first.time)
            del self.orders[first.order_id]
            raise
        first.sibling, second.sibling = second.order_id, first.order_id
        return first, second

    def place(self, p: dict[str, str], shares_lock: ReplayOrder | None = None) -> ReplayOrder:
        """Validate and accept a new order from request parameters (Binance names).

        ``shares_lock``: the other order of an OCO pair, whose lock covers this one too.
        """
        tape = self.tape(p.get("symbol"))
        self.catch_up()
        m = tape.market
        side, kind = (p.get("side") or "").upper(), (p.get("type") or "").upper()
        if side not in ("BUY", "SELL"):
            raise missing_param("side") if not side else BinanceError(-1100, f"Invalid side '{side}'.")
        if kind not in ORDER_TYPES:
            raise missing_param("type") if not kind else BinanceError(-1116, "Invalid orderType.")
        if "quantity" not in p:
            raise missing_param("quantity")
        qty = _decimal(p, "quantity")
        price = _decimal(p, "price") if kind in ("LIMIT", "LIMIT_MAKER") or kind.endswith("_LIMIT") else None
        stop = _decimal(p, "stopPrice") if kind.startswith(("STOP", "TAKE")) else None
        tif = p.get("timeInForce")
        if price is not None and kind != "LIMIT_MAKER" and tif != "GTC":
            raise missing_param("timeInForce") if tif is None else BinanceError(-1115, "Invalid timeInForce.")
        step, tick = Decimal(step_str(m.qty_decimals)), Decimal(step_str(m.price_decimals))
        if qty < step or qty > MAX_QTY or qty % step != 0:
            raise BinanceError(-1013, "Filter failure: LOT_SIZE")
        for x in (price, stop):
            if x is not None and (x < tick or x > MAX_PRICE or x % tick != 0):
                raise BinanceError(-1013, "Filter failure: PRICE_FILTER")
        last = self.last_price(tape)
        ref = price if price is not None else (stop if stop is not None else (Decimal(repr(last)) if last else None))
        if ref is not None and qty * ref < MIN_NOTIONAL:
            raise BinanceError(-1013, "Filter failure: NOTIONAL")
        cid = p.get("newClientOrderId") or f"replay-{self._next_order}"
        if any(o.is_open and o.client_id == cid for o in self.orders.values()):
            raise BinanceError(-2010, "Duplicate order sent.")
        falling = (kind.startswith("STOP") and side == "SELL") or (kind.startswith("TAKE") and side == "BUY")
        if stop is not None and last is not None and (last <= float(stop) if falling else last >= float(stop)):
            raise BinanceError(-2010, "Order would trigger immediately.")
        buy = side == "BUY"
        taker = price is None or last is None or (last <= float(price) if buy else last >= float(price))
        if kind == "LIMIT_MAKER" and last is not None and taker:
            raise BinanceError(-2010, "Order would immediately match and take.")
        asset = m.quote if buy else m.base
        need = float(qty * ref) if buy and ref is not None else (0.0 if buy else float(qty))
        if shares_lock is not None:
            need = 0.0
        if self.free.get(asset, 0.0) + _EPS < need:
            raise insufficient()
        self.free[asset] = self.free.get(asset, 0.0) - need
        self.locked[asset] = self.locked.get(asset, 0.0) + need
        now = self.now_ms()
        o = ReplayOrder(self._next_order, cid, m.market_id, side, kind, float(qty), float(price or 0),
                        float(stop or 0), now, self.engine.horizon(m.market_id), stop is None, taker, asset, need,
                        update_time=now, working_time=now if stop is None else -1)
        self._next_order += 1
        self.orders[o.order_id] = o
        return o

    def cancel(self, o: ReplayOrder) -> ReplayOrder:
        """Cancel an open order, and its OCO sibling (-2011 when it is finished)."""
        self.catch_up()
        if not o.is_open:
            raise BinanceError(-2011, "Unknown order sent.")
        self._finish(o, "CANCELED", self.now_ms())
        if o.sibling is not None and self.orders[o.sibling].is_open:
            self._finish(self.orders[o.sibling], "CANCELED", self.now_ms())
        return o

    def _finish(self, o: ReplayOrder, status: str, ts: int) -> None:
        o.status, o.update_time = status, ts
        self.free[o.lock_asset] = self.free.get(o.lock_asset, 0.0) + o.locked
        self.locked[o.lock_asset] -= o.locked
        o.locked = 0.0

    # -- matching ----------------------------------------------------------------------------
    def catch_up(self) -> None:
        """Match every open order against the trades streamed since it last looked."""
        for o in list(self.orders.values()):
            if o.is_open:
                tape = self.data.tapes[o.market_id]
                self._match(o, tape, self.engine.horizon(o.market_id))

    def _match(self, o: ReplayOrder, tape: TradeTape, h: int) -> None:
        lo = o.next_idx
        if h <= lo:
            return
        o.next_idx = h
        prices = tape.price[lo:h]
        buy = o.side == "BUY"
        if not o.working:
            falling = (o.type.startswith("STOP") and not buy) or (o.type.startswith("TAKE") and buy)
            hit = np.flatnonzero(prices <= o.stop_price if falling else prices >= o.stop_price)
            if len(hit) == 0:
                return
            k = int(hit[0])
            o.working, o.working_time, lo = True, int(tape.ts[lo + k]), lo + k
            prices = tape.price[lo:h]
            last = float(prices[0])
            o.taker = o.price == 0 or (last <= o.price if buy else last >= o.price)
        if o.price == 0:  # market
            rows, fill_px = np.arange(len(prices)), prices
        elif o.taker:
            rows = np.flatnonzero(prices <= o.price if buy else prices >= o.price)
            fill_px = prices[rows]
        else:
            rows = np.flatnonzero(prices < o.price if buy else prices > o.price)
            fill_px = np.full(len(rows), o.price)
        for r, px in zip(rows.tolist(), fill_px.tolist(), strict=True):
            i = lo + r
            q = min(float(tape.qty[i]), o.qty - o.executed)
            if q <= 0:
                continue
            if not self._settle(o, q, px, int(tape.ts[i]), tape):
                self._finish(o, "EXPIRED", int(tape.ts[i]))
                return
            if o.executed >= o.qty - _EPS:
                self._finish(o, "FILLED", int(tape.ts[i]))
                return

    def _settle(self, o: ReplayOrder, q: float, px: float, ts: int, tape: TradeTape) -> bool:
        """Move balances for one execution; False when a market buy has no quote left for it."""
        m = tape.market
        if o.sibling is not None and self.orders[o.sibling].is_open:  # OCO: the other leg expires, its lock moves here
            other = self.orders[o.sibling]
            o.locked, other.locked = o.locked + other.locked, 0.0
            self._finish(other, "EXPIRED", ts)
        maker = not o.taker
        rate = self.maker if maker else self.taker
        cost = q * px
        if o.side == "BUY":
            from_lock = min(cost, o.locked)
            if self.free.get(m.quote, 0.0) + _EPS < cost - from_lock:
                return False
            o.locked -= from_lock
            self.locked[m.quote] -= from_lock
            self.free[m.quote] = self.free.get(m.quote, 0.0) - (cost - from_lock)
            commission, asset = q * rate, m.base
            self.free[m.base] = self.free.get(m.base, 0.0) + q - commission
        else:
            o.locked -= q
            self.locked[m.base] -= q
            commission, asset = cost * rate, m.quote
            self.free[m.quote] = self.free.get(m.quote, 0.0) + cost - commission
        o.executed += q
        o.cum_quote += cost
        o.status, o.update_time = "PARTIALLY_FILLED", ts
        fill = {"symbol": m.market_id, "id": self._next_trade, "orderId": o.order_id, "orderListId": o.list_id,
                "price": tape.price_str(px), "qty": tape.qty_str(q), "quoteQty": f"{cost:.8f}",
                "commission": f"{commission:.8f}", "commissionAsset": asset, "time": ts,
                "isBuyer": o.side == "BUY", "isMaker": maker, "isBestMatch": True}
        self._next_trade += 1
        o.fills.append(fill)
        self.trades.append(fill)
        return True


def _decimal(p: dict[str, str], name: str) -> Decimal:
    raw = p.get(name)
    if raw is None or raw == "":
        raise missing_param(name)
    try:
        x = Decimal(raw)
    except InvalidOperation:
        raise illegal_param(name, "^([0-9]{1,20})(\\.[0-9]{1,20})?$") from None
    if not x.is_finite() or x <= 0:
        raise illegal_param(name, "^([0-9]{1,20})(\\.[0-9]{1,20})?$")
    return x
