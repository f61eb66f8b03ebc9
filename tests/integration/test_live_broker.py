"""The live broker through ccxt against a real replay exchange (order endpoints, matching on replayed trades).

The replay serves 48 hourly candles of ``ABC/USDT`` (tick 0.01, lot 0.001, min
notional 5) expanded into trades; the tests move its clock with the admin
``seek`` and hand the broker the candle that just closed, as the flow does.
Needs no TimescaleDB or Redis.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
import requests

from flows.exchange.binance import make_binance
from flows.execution.config import ExecutionConfig, LiveConfig
from flows.execution.live import LiveBroker
from flows.execution.orders import OrderStatus, client_order_id
from flows.execution.venue import load_keys
from flows.records import Bar, OrderIntent
from flows.settings import ExchangeSettings, SettingsError
from tests.kit.replay import signed_replay

SYM, H = "ABC/USDT", 3_600_000
KEY, SECRET = "k-live-test", "s3cret-never-logged"


class Market:
    """A running replay exchange and the candles it replays, with a clock to move."""

    def __init__(self, ex: Any, candles: pd.DataFrame) -> None:
        self.ex, self.candles = ex, candles
        self.t0 = int(candles.ts.iloc[0])

    def seek(self, hours: float) -> None:
        """Stream every trade before ``t0 + hours``."""
        r = requests.post(self.ex.http_url + "/replay/control", timeout=5,
                          data=orjson.dumps({"action": "seek", "time": self.t0 + int(hours * H)}))
        r.raise_for_status()

    def bar(self, k: int) -> Bar:
        """Return candle ``k`` as the flow's closed bar."""
        c = self.candles.iloc[k]
        return Bar(SYM, "1h", int(c.ts), float(c.open), float(c.high), float(c.low), float(c.close),
                   float(c.volume), float(c.volume * c.close), 8, float(c.close), 0.0)

    def client(self, secret: str = SECRET) -> Any:
        """Return a separate signed ccxt client (an observer, or someone trading while the broker is down)."""
        return make_binance(self.ex.http_url, apiKey=KEY, secret=secret)

    def broker(self, **execution: Any) -> LiveBroker:
        """Return a live broker on this exchange (keys from the settings, as from the environment)."""
        live = LiveConfig(confirm=True, max_capital=execution.pop("max_capital", 1e9))
        settings = ExchangeSettings(http_url=self.ex.http_url, api_key=KEY, api_secret=SECRET)
        return LiveBroker(ExecutionConfig(broker="live", live=live, **execution), settings)


@pytest.fixture
def market(tmp_path: Path) -> Iterator[Market]:
    with signed_replay(tmp_path, 48, KEY, SECRET, {"USDT": 10_000.0, "ABC": 50.0}) as (ex, candles):
        m = Market(ex, candles)
        m.seek(1)
        yield m


def intent(side: str, qty: float, bar_ts: int, kind: str = "market", limit: float | None = None,
           leg: str = "entry") -> OrderIntent:
    return OrderIntent("cs", SYM, side, qty, kind, limit, None, bar_ts, leg, "test")


def test_quantity_and_price_are_rounded_to_the_market_before_sending(market: Market) -> None:
    broker = market.broker()
    broker.on_bar(market.bar(0))
    order = broker.submit(intent("buy", 0.123456, market.t0, "limit", 90.123456))
    remote = market.client().fetch_order(order.exchange_id, SYM)["info"]
    assert (remote["origQty"], remote["price"], remote["status"]) == ("0.12300000", "90.12000000", "NEW")
    assert remote["clientOrderId"] == order.client_order_id == client_order_id("cs", SYM, market.t0, "entry")
    assert order.intent.qty == 0.123 and order.intent.limit_price == 90.12


def test_below_min_notional_is_rejected_with_the_reason_and_nothing_is_sent(market: Market) -> None:
    broker = market.broker()
    broker.on_bar(market.bar(0))
    broker.client.load_markets()
    before = broker.client.last_request_url
    order = broker.submit(intent("buy", 0.02, market.t0))  # about 2 USDT at ~100
    assert order.status is OrderStatus.REJECTED
    assert "below the market's minimum notional 5" in order.reject_reason and "no order sent" in order.reject_reason
    assert broker.client.last_request_url == before, "no request may reach the exchange"
    assert market.ex.account.orders == {}
    dust = broker.submit(intent("buy", 0.0004, market.t0 + H))
    assert dust.status is OrderStatus.REJECTED and "below the market's minimum 0.001" in dust.reject_reason


def test_partial_fills_by_replayed_trade_sizes_then_filled(market: Market) -> None:
    broker = market.broker()
    broker.on_bar(market.bar(0))
    vol = market.candles.volume
    qty = round(float(vol.iloc[1] + vol.iloc[2] / 2), 3)  # more than candle 1 trades, less than 1 + 2
    order = broker.submit(intent("buy", qty, market.t0 + H, "limit", 150.0))  # marketable: takes at trade prices
    assert order.status is OrderStatus.NEW and order.filled_qty == 0
    market.seek(2)
    fills = broker.on_bar(market.bar(1))
    now = broker.open_orders()[0]
    assert now.status is OrderStatus.PARTIALLY_FILLED
    assert sum(f.qty for f in fills) == pytest.approx(vol.iloc[1]) == pytest.approx(now.filled_qty)
    market.seek(4)  # candle 2, and the empty candle 3
    fills += broker.on_bar(market.bar(2))
    assert broker.open_orders() == [] and sum(f.qty for f in fills) == pytest.approx(qty)
    remote = market.client().fetch_my_trades(SYM)
    assert [f.trade_id for f in fills] == [str(t["id"]) for t in remote]
    for f, t in zip(fills, remote, strict=True):
        assert (f.price, f.liquidity, f.fee_asset) == (t["price"], "taker", "ABC")
        assert f.fee == pytest.approx(t["fee"]["cost"] * t["price"])  # commission in base, fee in quote
    final = broker.book.orders[order.client_order_id]
    assert final.status is OrderStatus.FILLED
    assert final.avg_price == pytest.approx(sum(f.qty * f.price for f in fills) / qty)
    assert broker.on_bar(market.bar(3)) == [], "fills are handed out once"


def test_cancel_and_cancel_again(market: Market) -> None:
    broker = market.broker()
    broker.on_bar(market.bar(0))
    order = broker.submit(intent("buy", 0.5, market.t0, "limit", 50.0))
    done = broker.cancel(order.client_order_id)
    assert done.status is OrderStatus.CANCELED
    assert market.client().fetch_order(order.exchange_id, SYM)["info"]["status"] == "CANCELED"
    assert broker.cancel(order.client_order_id).status is OrderStatus.CANCELED
    assert [u.status for u in broker.drain_updates()] == [OrderStatus.NEW, OrderStatus.CANCELED]
    with pytest.raises(KeyError, match="not an order of this broker"):
        broker.cancel("cs.nope")
    # Cancel a partly filled order before any poll saw its fills: they are handed out at the next bar.
    vol1 = float(market.candles.volume.iloc[1])
    part = broker.submit(intent("buy", round(vol1 + 3, 3), market.t0 + H, "limit", 150.0))
    market.seek(2)
    late = broker.cancel(part.client_order_id)
    assert late.status is OrderStatus.CANCELED and late.filled_qty == pytest.approx(vol1)
    fills = broker.on_bar(market.bar(1))
    assert sum(f.qty for f in fills) == pytest.approx(vol1) and {f.client_order_id for f in fills} == {
        part.client_order_id}


def test_a_replayed_decision_never_places_a_second_order(market: Market) -> None:
    broker = market.broker()
    broker.on_bar(market.bar(0))
    want = intent("buy", 0.5, market.t0, "limit", 50.0)
    first = broker.submit(want)
    assert broker.submit(want) == first
    fresh = market.broker()  # a restart without any saved state, the decision replayed
    again = fresh.submit(want)
    assert again.exchange_id == first.exchange_id and again.status is OrderStatus.NEW
    assert len(market.ex.account.orders) == 1


def test_reconcile_adopts_orders_placed_while_down_and_their_fills(market: Market) -> None:
    broker = market.broker()
    broker.on_bar(market.bar(0))
    broker.submit(intent("buy", 0.5, market.t0, "limit", 50.0))
    assert broker.reconcile()[0].startswith("balances taken from the exchange")
    saved = json.loads(json.dumps(broker.snapshot()))  # what the flow's snapshot keeps
    # While the broker is down, its last decisions reach the exchange and the market moves: one order
    # fills completely, the other partly (more than the candle's volume).
    vol1 = float(market.candles.volume.iloc[1])
    big, small = client_order_id("cs", SYM, market.t0 + H, "entry"), client_order_id("cs", SYM, market.t0 + H, "exit")
    other = market.client()
    other.create_order(SYM, "limit", "buy", 0.1, 150.0, {"newClientOrderId": small})
    other.create_order(SYM, "limit", "buy", round(vol1 + 5, 3), 150.0, {"newClientOrderId": big})
    other.create_order(SYM, "limit", "buy", 0.1, 150.0, {"newClientOrderId": "by-hand"})
    resting = client_order_id("cs", SYM, market.t0 + 2 * H, "entry")
    other.create_order(SYM, "limit", "buy", 0.1, 60.0, {"newClientOrderId": resting})
    other.create_order(SYM, "limit", "buy", 0.1, 60.0, {"newClientOrderId": "by-hand-resting"})
    market.seek(2)
    restarted = market.broker()
    restarted.restore(saved)
    notes = restarted.reconcile()
    assert any(n.startswith(f"adopted order {big}") and "PARTIALLY_FILLED" in n for n in notes), notes
    assert any(n.startswith(f"adopted order {small}") and "FILLED" in n for n in notes), notes
    assert any(n.startswith(f"adopted open order {resting}") for n in notes), notes
    assert any("by-hand-resting on ABC/USDT is not one of ours" in n for n in notes), notes
    adopted = restarted.book.orders[big]
    assert (adopted.intent.bar_ts, adopted.intent.leg, adopted.intent.side) == (market.t0 + H, "entry", "buy")
    assert adopted.status is OrderStatus.PARTIALLY_FILLED
    assert restarted.book.orders[small].status is OrderStatus.FILLED
    assert restarted.book.orders[resting].intent.limit_price == 60.0
    assert not {"by-hand", "by-hand-resting"} & set(restarted.book.orders), "other programs' orders are left alone"
    assert any("balance ABC" in n for n in notes) and any("balance USDT" in n for n in notes)
    fills = restarted.on_bar(market.bar(1))
    by = {c: sum(f.qty for f in fills if f.client_order_id == c) for c in (big, small)}
    assert by[small] == pytest.approx(0.1) and by[small] + by[big] == pytest.approx(0.1 + vol1 - 0.0)
    assert [n for n in restarted.reconcile() if "not one of ours" not in n] == [], "nothing else differs"
    assert len(market.ex.account.orders) == 6


def test_protective_legs_on_the_exchange_one_cancels_the_other(market: Market) -> None:
    low = market.candles.low
    pct = round((1 - low.iloc[2:].min() / low.iloc[1]) / 2, 4)  # a stop some later candle reaches
    assert pct > 0.002
    broker = market.broker(stop_loss_pct=pct, take_profit_pct=0.5)
    broker.on_bar(market.bar(0))
    broker.submit(intent("buy", 0.2, market.t0))
    market.seek(2)
    fills = broker.on_bar(market.bar(1))
    assert sum(f.qty for f in fills) == pytest.approx(0.2)
    legs = {o.intent.leg: o for o in broker.open_orders()}
    assert set(legs) == {"stop_loss", "take_profit"}
    remote = {o["clientOrderId"]: o["info"] for o in market.client().fetch_open_orders(SYM)}
    assert {c: r["type"] for c, r in remote.items()} == {legs["stop_loss"].client_order_id: "STOP_LOSS",
                                                         legs["take_profit"].client_order_id: "TAKE_PROFIT"}
    assert len({r["orderListId"] for r in remote.values()}) == 1 and -1 not in {r["orderListId"] for r in remote.values()}
    assert market.ex.account.locked["ABC"] == pytest.approx(0.2), "one OCO list locks the coins once"
    entry = sum(f.qty * f.price for f in fills) / 0.2
    assert legs["stop_loss"].intent.stop_price == pytest.approx(entry * (1 - pct), abs=0.01)
    assert legs["take_profit"].intent.stop_price == pytest.approx(entry * 1.5, abs=0.01)
    assert legs["stop_loss"].intent.qty == legs["take_profit"].intent.qty == 0.2  # the account held ABC before
    k = next(i for i in range(2, 48) if low.iloc[i] <= legs["stop_loss"].intent.stop_price)
    market.seek(k + 1)
    out = broker.on_bar(market.bar(k))
    assert [f.client_order_id for f in out] == [legs["stop_loss"].client_order_id] * len(out) and out
    assert broker.open_orders() == [] and market.client().fetch_open_orders(SYM) == []
    take = broker.book.get(legs["take_profit"].client_order_id)
    assert take.status is OrderStatus.EXPIRED and market.ex.account.locked["ABC"] == pytest.approx(0.0)


def test_max_capital_cuts_buys(market: Market) -> None:
    broker = market.broker(max_capital=60.0)
    broker.on_bar(market.bar(0))
    order = broker.submit(intent("buy", 5.0, market.t0))
    close = float(market.candles.close.iloc[0])
    assert order.intent.qty == pytest.approx(int(60.0 / close * 1000) / 1000)
    assert "max_capital 60" in order.intent.reason


def test_keys_never_in_logs_snapshots_or_reprs(market: Market, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    broker = market.broker(stop_loss_pct=0.05)
    broker.on_bar(market.bar(0))
    broker.submit(intent("buy", 0.2, market.t0))
    broker.submit(intent("buy", 0.001, market.t0 + H))  # rejected: logged
    market.seek(2)
    broker.on_bar(market.bar(1))
    broker.reconcile()
    text = caplog.text + json.dumps(broker.snapshot()) + repr(broker) + repr(market.ex.config)
    assert caplog.text and SECRET not in text and KEY not in text
    with pytest.raises(Exception, match="-1022"):
        market.client(secret="wrong").fetch_balance()


def test_keys_from_a_secrets_file(tmp_path: Path) -> None:
    env = ExchangeSettings()
    (tmp_path / "k.json").write_text(json.dumps({"api_key": "a", "api_secret": "b"}))
    (tmp_path / "k.toml").write_text('api_key = "c"\napi_secret = "d"\n')
    assert load_keys(env, tmp_path / "k.json") == ("a", "b")
    assert load_keys(env, tmp_path / "k.toml") == ("c", "d")
    assert load_keys(ExchangeSettings(api_key="e", api_secret="f"), tmp_path / "k.json") == ("e", "f")
    (tmp_path / "bad.json").write_text(json.dumps({"api_key": "a"}))
    with pytest.raises(SettingsError, match="missing api_secret"):
        load_keys(env, tmp_path / "bad.json")
    with pytest.raises(SettingsError, match="API_KEY"):
        load_keys(env, None)


def test_a_stopped_exchange_is_survived_and_orders_are_refused_with_the_reason(tmp_path: Path) -> None:
    with signed_replay(tmp_path, 8, KEY, SECRET) as (ex, candles):
        m = Market(ex, candles)
        broker = m.broker()
        broker.on_bar(m.bar(0))
        order = broker.submit(intent("buy", 0.5, m.t0, "limit", 50.0))
    broker.client.timeout = 1000  # the server is gone: connection refused
    assert broker.on_bar(m.bar(1)) == [] and broker.open_orders()[0].client_order_id == order.client_order_id
    refused = broker.submit(intent("buy", 0.5, m.t0 + H, "limit", 50.0))
    assert refused.status is OrderStatus.REJECTED and refused.reject_reason.startswith("not placed: ")


def test_the_decision_step_trades_live_and_a_replayed_decision_places_nothing_twice(market: Market, tmp_path: Path) -> None:
    """DecisionStep + real portfolio and risk engine + LiveBroker (from the settings) on the replay exchange."""
    from flows.execution.orders import Order
    from flows.operators.decisions import DecisionStep
    from flows.records import Fill, PortfolioRow, Prediction
    from flows.settings import load_settings
    from flows.wiring import build_deps

    env = {"CRYPTOSTREAM_MODE": "live", "CRYPTOSTREAM_SYMBOLS": SYM, "CRYPTOSTREAM_BARS__TIMEFRAMES": "1h",
           "CRYPTOSTREAM_DATA_DIR": str(tmp_path), "CRYPTOSTREAM_EXCHANGE__HTTP_URL": market.ex.http_url,
           "CRYPTOSTREAM_EXCHANGE__API_KEY": KEY, "CRYPTOSTREAM_EXCHANGE__API_SECRET": SECRET,
           "CRYPTOSTREAM_EXECUTION__BROKER": "live", "CRYPTOSTREAM_EXECUTION__LIVE__CONFIRM": "true",
           "CRYPTOSTREAM_EXECUTION__LIVE__MAX_CAPITAL": "5000"}
    settings = load_settings(env=env)

    def pred(k: int, p: float) -> Prediction:
        return Prediction(SYM, "1h", market.t0 + (k + 1) * H, {}, p, abs(p - 0.5) * 2, int(p > 0.5), float("nan"),
                          {}, 0.0, 0.01)

    probs = [0.9, 0.9, 0.1, 0.1, 0.9, 0.9]
    step = DecisionStep((SYM,), H, build_deps(settings))
    out: list = []
    saved = None
    for k, p in enumerate(probs):
        market.seek(k + 1)
        if k == 3:
            saved = step.snapshot()
        out += step.on_bar(market.bar(k)) + step.on_predictions([pred(k, p)])
    market.seek(len(probs) + 1)
    out += step.on_bar(market.bar(len(probs)))
    orders = [o for o in out if isinstance(o, Order)]
    fills = [f for f in out if isinstance(f, Fill)]
    placed = market.ex.account.orders
    assert orders and len(placed) == len({o.client_order_id for o in orders})
    assert {o.client_id for o in placed.values()} == {o.client_order_id for o in orders}
    assert sorted(f.trade_id for f in fills) == sorted(str(t["id"]) for t in market.ex.account.trades)
    rows = [r for r in out if isinstance(r, PortfolioRow)]
    held = sum((1 if f.side == "buy" else -1) * f.qty for f in fills)
    assert rows[-1].state["positions"].get(SYM, 0.0) == pytest.approx(held)
    # Restart from the snapshot taken before bar 3 and replay bars 3..: nothing reaches the exchange twice.
    again = DecisionStep.from_snapshot(saved)
    again.attach(build_deps(settings))
    for k in range(3, len(probs)):
        again.on_bar(market.bar(k))
        again.on_predictions([pred(k, probs[k])])
    assert len(market.ex.account.orders) == len(placed)
