"""Paper broker: next-open fills with fees and slippage, limits only when traded through, stops and legs,
latency, idempotent submits, snapshot and restore."""

from __future__ import annotations

import json

import pytest

from flows.execution.config import ExecutionConfig, SlippageConfig
from flows.execution.orders import OrderStatus, client_order_id
from flows.execution.paper import PaperBroker
from flows.records import Bar, OrderIntent

M, T = 60_000, 1_722_470_400_000  # 1m bars; a decision at close T
SLIP = SlippageConfig(base_bps=2.0, impact_bps=50.0, impact_exponent=0.5, volatility_coef=0.05, max_bps=200.0)
CFG = ExecutionConfig(maker_fee=0.0005, taker_fee=0.001, slippage=SLIP)


def bar(ts: int, o: float, h: float, lo: float, c: float, v: float = 4.0, sym: str = "BTC/USDT") -> Bar:
    return Bar(sym, "1m", ts, o, h, lo, c, v, v * c, 10, c, v / 2)


def intent(side: str, qty: float, kind: str = "market", limit: float | None = None, stop: float | None = None,
           ts: int = T, leg: str = "entry", sym: str = "BTC/USDT") -> OrderIntent:
    return OrderIntent("cs", sym, side, qty, kind, limit, stop, ts, leg, "test")


def test_market_orders_fill_at_the_next_open_with_taker_fee_and_slippage_by_hand() -> None:
    broker = PaperBroker(CFG, {"USDT": 1000.0})
    assert broker.on_bar(bar(T - M, 90, 91, 89, 100)) == []  # the bar that closed at T: before the order
    order = broker.submit(intent("buy", 1.0))
    assert order.status is OrderStatus.NEW and order.client_order_id == client_order_id("cs", "BTC/USDT", T, "entry")
    (fill,) = broker.on_bar(bar(T, 100, 102, 98, 101))
    # slippage: 2 bps + 50 bps * sqrt(1 / 4) + 0.05 * (102 - 98) / 100 = 0.0002 + 0.0025 + 0.002
    assert fill.price == pytest.approx(100 * 1.0047)
    assert fill.fee == pytest.approx(100 * 1.0047 * 0.001) and fill.fee_asset == "USDT"
    assert (fill.ts, fill.qty, fill.liquidity, fill.side) == (T, 1.0, "taker", "buy")
    assert broker.balances() == pytest.approx({"USDT": 1000 - 100.47 - 0.10047, "BTC": 1.0})
    sell = broker.submit(intent("sell", 1.0, ts=T + M))
    (out,) = broker.on_bar(bar(T + M, 101, 101.5, 100.5, 101, v=16.0))
    assert out.price == pytest.approx(101 * (1 - (0.0002 + 0.0050 * 0.25 + 0.05 * 1 / 101)))
    assert sell.status is OrderStatus.NEW and broker.book.get(sell.client_order_id).status is OrderStatus.FILLED


def test_slippage_is_capped_and_a_bar_without_volume_fills_nothing() -> None:
    broker = PaperBroker(CFG)
    broker.submit(intent("buy", 100.0))
    assert broker.on_bar(bar(T, 100, 100, 100, 100, v=0.0)) == []
    (fill,) = broker.on_bar(bar(T + M, 100, 110, 90, 100, v=1.0))
    assert fill.price == pytest.approx(100 * 1.02) and fill.ts == T + M


def test_latency_moves_the_fill_into_the_bar() -> None:
    broker = PaperBroker(CFG.model_copy(update={"latency_ms": 15_000, "slippage": SlippageConfig(
        base_bps=0, impact_bps=0, volatility_coef=0)}))
    broker.submit(intent("buy", 1.0))
    (fill,) = broker.on_bar(bar(T, 100, 102, 98, 104))
    assert fill.price == pytest.approx(100 + 4 * 0.25) and fill.ts == T + 15_000
    slow = PaperBroker(CFG.model_copy(update={"latency_ms": 60_000}))
    slow.submit(intent("buy", 1.0))
    assert slow.on_bar(bar(T, 100, 102, 98, 104)) == [], "arrives after that bar"
    assert len(slow.on_bar(bar(T + M, 104, 105, 103, 104))) == 1


def test_limit_orders_fill_only_when_traded_through_at_the_limit_with_maker_fee() -> None:
    broker = PaperBroker(CFG)
    broker.submit(intent("buy", 1.0, "limit", 99.0))
    assert broker.on_bar(bar(T, 100, 101, 99.0, 100)) == [], "touching the limit is not trading through it"
    (fill,) = broker.on_bar(bar(T + M, 100, 100.5, 98.9, 99.5))
    assert (fill.price, fill.liquidity) == (99.0, "maker") and fill.fee == pytest.approx(99.0 * 0.0005)
    broker.submit(intent("sell", 2.0, "limit", 103.0, ts=T + 2 * M))
    assert broker.on_bar(bar(T + 2 * M, 102, 103.0, 101, 102)) == []
    (fill,) = broker.on_bar(bar(T + 3 * M, 102, 103.5, 101, 102))
    assert (fill.price, fill.side, fill.liquidity) == (103.0, "sell", "maker")


def test_a_marketable_limit_takes_at_the_open_but_never_beyond_its_limit() -> None:
    broker = PaperBroker(CFG)
    broker.submit(intent("buy", 1.0, "limit", 100.2))
    (fill,) = broker.on_bar(bar(T, 100, 102, 98, 101))
    assert (fill.price, fill.liquidity) == (100.2, "taker"), "open * (1 + 0.0047) would pass the limit"
    broker.submit(intent("sell", 1.0, "limit", 90.0, ts=T + M))
    (fill,) = broker.on_bar(bar(T + M, 100, 102, 98, 101))
    assert fill.price == pytest.approx(100 * (1 - 0.0047)) and fill.liquidity == "taker"


def test_default_limit_price_comes_from_the_last_close() -> None:
    broker = PaperBroker(CFG.model_copy(update={"default_order_type": "limit", "limit_offset_bps": 10.0}))
    broker.on_bar(bar(T - M, 100, 100, 100, 100))
    order = broker.submit(intent("buy", 1.0, "limit"))
    assert order.intent.limit_price == pytest.approx(99.9)


def test_stop_loss_and_take_profit_legs_follow_the_entry_and_cancel_each_other() -> None:
    cfg = CFG.model_copy(update={"stop_loss_pct": 0.02, "take_profit_pct": 0.05,
                                 "slippage": SlippageConfig(base_bps=0, impact_bps=0, volatility_coef=0)})
    broker = PaperBroker(cfg)
    broker.submit(intent("buy", 2.0))
    (entry,) = broker.on_bar(bar(T, 100, 100.5, 99.5, 100))
    legs = {o.intent.leg: o for o in broker.open_orders()}
    assert legs["stop_loss"].intent.stop_price == pytest.approx(98.0)
    assert legs["take_profit"].intent.stop_price == pytest.approx(105.0)
    assert legs["stop_loss"].client_order_id == client_order_id("cs", "BTC/USDT", T, "stop_loss")
    assert {o.intent.side for o in legs.values()} == {"sell"} and {o.intent.qty for o in legs.values()} == {2.0}
    assert broker.on_bar(bar(T + M, 100, 104, 98.5, 103)) == []
    (stop,) = broker.on_bar(bar(T + 2 * M, 103, 103, 97, 98))  # touches 98: sold at the stop
    assert (stop.price, stop.qty, stop.side, stop.liquidity) == (98.0, 2.0, "sell", "taker")
    assert broker.open_orders() == [] and broker.book.get(legs["take_profit"].client_order_id).status is \
        OrderStatus.CANCELED
    assert entry.price == 100.0


def test_a_gap_through_the_stop_fills_at_the_open_and_stops_win_ties() -> None:
    cfg = CFG.model_copy(update={"stop_loss_pct": 0.02, "take_profit_pct": 0.02,
                                 "slippage": SlippageConfig(base_bps=0, impact_bps=0, volatility_coef=0)})
    broker = PaperBroker(cfg)
    broker.submit(intent("sell", 1.0))  # a short: stop above, take-profit below
    broker.on_bar(bar(T, 100, 100, 100, 100))
    legs = {o.intent.leg: o.intent for o in broker.open_orders()}
    assert (legs["stop_loss"].side, legs["stop_loss"].stop_price) == ("buy", pytest.approx(102.0))
    assert legs["take_profit"].stop_price == pytest.approx(98.0)
    (fill,) = broker.on_bar(bar(T + M, 97, 103, 96, 100))  # reaches both: the stop is taken
    assert fill.client_order_id.endswith(".s") and fill.price == pytest.approx(102.0)
    gap = PaperBroker(cfg)
    gap.submit(intent("buy", 1.0))
    gap.on_bar(bar(T, 100, 100, 100, 100))
    (fill,) = gap.on_bar(bar(T + M, 95, 96, 94, 95))
    assert fill.price == 95.0, "opened below the stop: sold at the open"


def test_same_client_id_returns_the_existing_order_and_bad_intents_are_rejected() -> None:
    broker = PaperBroker(CFG)
    first = broker.submit(intent("buy", 1.0))
    assert broker.submit(intent("buy", 5.0)) == first, "the replayed decision changes nothing"
    bad = broker.submit(intent("buy", 1.0, "limit", None, ts=T + M))
    assert bad.status is OrderStatus.REJECTED and "limit_price" in (bad.reject_reason or "")
    assert len(broker.open_orders()) == 1
    assert broker.cancel(first.client_order_id).status is OrderStatus.CANCELED
    assert broker.on_bar(bar(T, 100, 101, 99, 100)) == []
    with pytest.raises(KeyError, match="not an order"):
        broker.cancel("nope")


def test_snapshot_restore_round_trip_continues_identically() -> None:
    cfg = CFG.model_copy(update={"stop_loss_pct": 0.01, "take_profit_pct": 0.01})
    bars = [bar(T + k * M, 100 + k, 101 + k, 99 + k - (k % 3), 100.5 + k) for k in range(8)]

    def run(restart_at: int | None) -> list:
        broker, out = PaperBroker(cfg, {"USDT": 500.0}), []
        for k, b in enumerate(bars):
            if k == restart_at:
                snap = json.loads(json.dumps(broker.snapshot()))
                broker = PaperBroker(cfg)
                broker.restore(snap)
            out += broker.on_bar(b)
            if k % 2 == 0:
                broker.submit(intent("buy" if k % 4 == 0 else "sell", 0.5, ts=b.ts + M))
        return [*out, broker.balances(), sorted(o.client_order_id for o in broker.open_orders())]

    straight = run(None)
    assert len(straight) > 4
    for k in range(1, 8):
        assert run(k) == straight
    with pytest.raises(ValueError, match="not a paper broker"):
        PaperBroker(cfg).restore({"kind": "live"})


def test_finished_orders_are_forgotten_past_a_bound_and_open_ones_never() -> None:
    broker = PaperBroker(CFG)
    broker.book.keep_finished = 5
    resting = broker.submit(intent("buy", 1.0, "limit", 1.0, ts=T - M))
    for k in range(20):
        broker.submit(intent("buy", 0.1, ts=T + k * M))
        broker.on_bar(bar(T + k * M, 100, 101, 99, 100))
    assert len(broker.book.orders) == 6 and broker.open_orders() == [broker.book.get(resting.client_order_id)]
    snap = json.loads(json.dumps(broker.snapshot()))
    again = PaperBroker(CFG)
    again.restore(snap)
    again.book.keep_finished = 5
    again.submit(intent("buy", 0.1, ts=T + 20 * M))
    again.on_bar(bar(T + 20 * M, 100, 101, 99, 100))
    assert len(again.book.orders) == 6 and client_order_id("cs", "BTC/USDT", T + 20 * M, "entry") in again.book.orders


def test_on_bars_is_on_bar_of_each_in_order() -> None:
    """A close's bars at once (the decision step's call) give the fills, orders and state of on_bar of each."""
    cfg = CFG.model_copy(update={"stop_loss_pct": 0.02, "take_profit_pct": 0.05})
    one, many = PaperBroker(cfg), PaperBroker(cfg)
    syms = ("BTC/USDT", "ETH/USDT")
    closes = [[bar(T + k * M, 100 + k, 101 + k + 3 * (k == 4), 99 + k - 4 * (k == 6), 100.5 + k, sym=s)
               for s in syms] for k in range(9)]
    for k, bars in enumerate(closes):
        if k in (1, 3):
            for b in (one, many):
                b.submit(intent("buy" if k == 1 else "sell", 1.5, ts=T + k * M, sym="ETH/USDT"))
                b.submit(intent("buy", 0.5, "limit", limit=101.0 + k, ts=T + k * M))
        got = many.on_bars(bars)
        assert got == [f for b in bars for f in one.on_bar(b)]
        assert many.drain_updates() == one.drain_updates()
    assert json.dumps(many.snapshot(), sort_keys=True) == json.dumps(one.snapshot(), sort_keys=True)
    assert many.last_close == one.last_close == {"BTC/USDT": 108.5, "ETH/USDT": 108.5}
