"""Order book: a symbol's open orders (from the per-symbol index) are the open orders of that symbol, in
placement order, through fills, protective legs, cancels and a snapshot round trip."""

from __future__ import annotations

import random

from flows.execution.book import OrderBook
from flows.execution.config import ExecutionConfig
from flows.execution.orders import Order
from flows.execution.paper import PaperBroker
from flows.records import Bar, OrderIntent

M, T = 60_000, 1_722_470_400_000
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")


def of_symbol(book: OrderBook, symbol: str) -> list[Order]:
    """The open orders of ``symbol`` as a scan of every open order finds them."""
    return [o for o in book.open_orders() if o.intent.symbol == symbol]


def ids(orders: list[Order]) -> list[str]:
    return [o.client_order_id for o in orders]


def test_a_symbols_open_orders_are_its_open_orders_in_placement_order_through_fills_legs_and_cancels() -> None:
    rng = random.Random(5)
    broker = PaperBroker(ExecutionConfig(stop_loss_pct=0.01, take_profit_pct=0.01), {"USDT": 1e6})
    seen_open = 0
    for k in range(60):
        ts = T + k * M
        for sym in SYMBOLS:
            if rng.random() < 0.5:
                kind = rng.choice(("market", "limit"))
                limit = 100.0 * (1 + rng.uniform(-0.01, 0.01)) if kind == "limit" else None
                broker.submit(OrderIntent("cs", sym, rng.choice(("buy", "sell")), 1.0, kind, limit, None, ts,
                                          "entry", "test"))
        if rng.random() < 0.2 and broker.book.has_open():
            broker.cancel(rng.choice(broker.book.open_orders()).client_order_id)
        for sym in SYMBOLS:
            px = 100.0 * (1 + rng.uniform(-0.02, 0.02))
            broker.on_bar(Bar(sym, "1m", ts, px, px * 1.01, px * 0.99, px, 5.0, 5.0 * px, 3, px, 2.5))
        book = broker.book
        seen_open = max(seen_open, len(book.open_orders()))
        for sym in (*SYMBOLS, "XRP/USDT"):
            assert ids(book.open_orders(sym)) == ids(of_symbol(book, sym))
    assert seen_open > len(SYMBOLS)  # legs and resting limits: several symbols' orders open at once
    again = OrderBook.from_dict(broker.book.to_dict())
    for sym in SYMBOLS:
        assert ids(again.open_orders(sym)) == ids(of_symbol(broker.book, sym))
