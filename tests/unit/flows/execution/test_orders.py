"""Client order ids, the order state machine and order records."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.execution.orders import (
    CLIENT_ID_RE,
    LEG_CODES,
    TRANSITIONS,
    IllegalTransition,
    Order,
    OrderStatus,
    client_order_id,
    validate_intent,
)
from flows.records import OrderIntent

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
strategies = st.text(_UPPER + _UPPER.lower()[:26] + "_-", min_size=1, max_size=16)
symbols = st.builds(lambda b, q: f"{b}/{q}", st.text(_UPPER, min_size=1, max_size=15),
                    st.text(_UPPER, min_size=1, max_size=10))
bar_times = st.integers(0, 4_102_444_800_000)  # up to 2100
legs = st.sampled_from(sorted(LEG_CODES))


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.tuples(strategies, symbols, bar_times, legs), min_size=2, max_size=6, unique=True))
def test_client_ids_are_binance_valid_and_distinct_for_distinct_decisions(keys: list[tuple[str, str, int, str]]) -> None:
    ids = [client_order_id(*k) for k in keys]
    assert all(CLIENT_ID_RE.match(i) for i in ids), ids
    assert len(set(ids)) == len(ids)
    assert ids == [client_order_id(*k) for k in keys], "deterministic"


def test_client_ids_separate_symbols_legs_and_bars_that_look_alike() -> None:
    t = 1_722_470_400_000
    cases = [("cs", s, b, leg) for s, b, leg in itertools.product(
        ("BTC/USDT", "BTCU/SDT", "BT/CUSDT", "ETH/USDT"), (t, t + 1, t + 60_000, 0), sorted(LEG_CODES))]
    ids = [client_order_id(*c) for c in cases]
    assert len(set(ids)) == len(cases)
    strategy, symbol, stamp, leg = client_order_id("cs", "BTC/USDT", t, "entry").split(".")
    assert (strategy, symbol, int(stamp, 36), leg) == ("cs", "BTC/USDT", t, "e")
    long = client_order_id("strategy_name_16", "LONGBASECOIN123/LONGQUOTE1", t, "stop_loss")
    assert len(long) == 36 and long.startswith("strategy.") and CLIENT_ID_RE.match(long)


@pytest.mark.parametrize(("args", "field"), [
    (("c s", "BTC/USDT", 0, "entry"), "strategy"), (("cs", "BTCUSDT", 0, "entry"), "symbol"),
    (("cs", "BTC/USDT", -1, "entry"), "bar_ts"), (("cs", "BTC/USDT", 0, "hedge"), "leg"),
])
def test_client_id_refuses_bad_parts_naming_them(args: tuple, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        client_order_id(*args)


def test_transition_table_allows_exactly_the_legal_moves() -> None:
    S = OrderStatus
    legal = {(S.NEW, s) for s in S} | {(S.PARTIALLY_FILLED, s) for s in (S.PARTIALLY_FILLED, S.FILLED, S.CANCELED,
                                                                          S.EXPIRED)}
    legal |= {(s, s) for s in S}
    for a, b in itertools.product(S, S):
        order = Order("x", OrderIntent("cs", "BTC/USDT", "buy", 1.0, "market", None, None, 0, "entry", ""), a)
        if (a, b) in legal:
            order.transition(b, 5)
            assert order.status is b and b in TRANSITIONS[a]
        else:
            with pytest.raises(IllegalTransition, match=f"{a.value} -> {b.value}"):
                order.transition(b, 5)
            assert order.status is a


def test_fills_move_an_order_to_partially_filled_then_filled_and_it_round_trips() -> None:
    order = Order("x", OrderIntent("cs", "BTC/USDT", "buy", 3.0, "limit", 100.0, None, 0, "entry", ""), OrderStatus.NEW)
    order.add_fill(1.0, 100.0, 10)
    assert (order.status, order.remaining, order.updated_ts) == (OrderStatus.PARTIALLY_FILLED, 2.0, 10)
    order.add_fill(2.0, 97.0, 20)
    assert order.status is OrderStatus.FILLED and order.avg_price == pytest.approx(98.0)
    back = Order.from_dict(json.loads(json.dumps(order.to_dict())))
    assert back == order and isinstance(back.intent, OrderIntent) and back.status is OrderStatus.FILLED
    with pytest.raises(IllegalTransition):
        order.transition(OrderStatus.CANCELED, 30)


@pytest.mark.parametrize(("change", "field"), [
    ({"side": "long"}, "side"), ({"qty": 0.0}, "qty"), ({"order_type": "iceberg"}, "order_type"),
    ({"order_type": "limit"}, "limit_price"), ({"order_type": "stop_market"}, "stop_price"), ({"leg": "x"}, "leg"),
])
def test_bad_intents_are_named(change: dict, field: str) -> None:
    good = OrderIntent("cs", "BTC/USDT", "buy", 1.0, "market", None, None, 0, "entry", "")
    assert validate_intent(good) is None
    assert field in (validate_intent(good._replace(**change)) or "")


def test_adopted_exchange_orders_recover_strategy_bar_and_leg_from_our_ids_only() -> None:
    from flows.execution.venue import intent_from_report

    def report(cid: str) -> dict:
        return {"clientOrderId": cid, "symbol": "BTC/USDT", "side": "sell", "amount": 0.5, "price": 0.0,
                "timestamp": 123, "type": "market", "info": {"type": "STOP_LOSS", "stopPrice": "95.5"}}

    t = 1_722_470_400_000
    ours = intent_from_report(report(client_order_id("cs", "BTC/USDT", t, "stop_loss")))
    assert (ours.strategy, ours.bar_ts, ours.leg, ours.order_type, ours.stop_price) == ("cs", t, "stop_loss",
                                                                                      "stop_market", 95.5)
    hashed = client_order_id("strategy_name_16", "LONGBASECOIN123/USDT", t, "entry")
    assert len(hashed) == 36 and intent_from_report({**report(hashed), "symbol": "LONGBASECOIN123/USDT"}).strategy \
        == "strategy"
    for foreign in ("web_abc123", "my.order.x-y.e", client_order_id("cs", "ETH/USDT", t, "entry")):
        got = intent_from_report(report(foreign))
        assert (got.strategy, got.bar_ts) == ("external", 123), foreign
