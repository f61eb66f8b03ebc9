"""Signed order endpoints of the replay exchange: authentication, filters, errors, matching, balances."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
import requests

from infra.replay_exchange.config import ReplayConfig
from tests.kit.replay import signed_replay

KEY, SECRET, H = "key-1", "secret-1", 3_600_000


class Api:
    """Raw signed requests (so the tests control every parameter), and the replay's clock."""

    def __init__(self, ex: Any, t0: int) -> None:
        self.ex, self.t0 = ex, t0

    def call(self, method: str, path: str, key: str = KEY, secret: str = SECRET, **params: Any) -> tuple[int, Any]:
        params.setdefault("timestamp", int(time.time() * 1000))
        query = urlencode(params)
        sig = hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
        url = f"{self.ex.http_url}/api/v3/{path}"
        headers = {"X-MBX-APIKEY": key} if key else {}
        if method == "POST":
            r = requests.post(url, data=f"{query}&signature={sig}", headers={
                **headers, "Content-Type": "application/x-www-form-urlencoded"}, timeout=5)
        else:
            r = requests.request(method, f"{url}?{query}&signature={sig}", headers=headers, timeout=5)
        return r.status_code, r.json()

    def ok(self, method: str, path: str, **params: Any) -> Any:
        status, body = self.call(method, path, **params)
        assert status == 200, body
        return body

    def seek(self, hours: float) -> None:
        requests.post(f"{self.ex.http_url}/replay/control", timeout=5,
                      data=orjson.dumps({"action": "seek", "time": self.t0 + int(hours * H)})).raise_for_status()

    def balance(self, asset: str) -> tuple[float, float]:
        row = next(b for b in self.ok("GET", "account")["balances"] if b["asset"] == asset)
        return float(row["free"]), float(row["locked"])


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with signed_replay(tmp_path, 24, KEY, SECRET, {"USDT": 1000.0, "ABC": 2.0}) as (ex, candles):
        a = Api(ex, int(candles.ts.iloc[0]))
        a.seek(1)
        yield a


def test_keys_and_signatures_are_checked(api: Api) -> None:
    assert api.call("GET", "account", key="") == (401, {"code": -2014, "msg": "API-key format invalid."})
    assert api.call("GET", "account", key="other")[1]["code"] == -2015
    assert api.call("GET", "account", secret="wrong") == (400, {"code": -1022,
                                                                 "msg": "Signature for this request is not valid."})
    assert api.call("GET", "account", timestamp="")[1]["code"] == -1102
    assert "secret-1" not in repr(api.ex.config) and "secret-1" not in repr(api.ex.signed)
    with pytest.raises(ValueError, match="balances"):
        ReplayConfig(balances={"USDT": -1.0})


@pytest.mark.parametrize(("params", "code", "msg"), [
    ({"quantity": "0.0015"}, -1013, "Filter failure: LOT_SIZE"),
    ({"quantity": "0.0001"}, -1013, "Filter failure: LOT_SIZE"),
    ({"price": "99.995"}, -1013, "Filter failure: PRICE_FILTER"),
    ({"quantity": "0.04"}, -1013, "Filter failure: NOTIONAL"),
    ({"quantity": "20"}, -2010, "Account has insufficient balance for requested action."),
    ({"timeInForce": "IOC"}, -1115, "Invalid timeInForce."),
    ({"type": "ICEBERG"}, -1116, "Invalid orderType."),
    ({"quantity": "abc"}, -1100, None),
])
def test_orders_breaking_the_rules_get_binance_errors(api: Api, params: dict, code: int, msg: str | None) -> None:
    order = {"symbol": "ABCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1",
             "price": "99.99", **params}
    status, body = api.call("POST", "order", **order)
    assert status == 400 and body["code"] == code and (msg is None or body["msg"] == msg)
    assert api.ok("GET", "openOrders") == [] and api.balance("USDT") == (1000.0, 0.0)


def test_duplicate_open_client_id_unknown_cancel_and_query(api: Api) -> None:
    order = {"symbol": "ABCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1",
             "price": "50.00", "newClientOrderId": "dup-1"}
    placed = api.ok("POST", "order", **order)
    assert placed["status"] == "NEW" and placed["clientOrderId"] == "dup-1" and placed["fills"] == []
    assert api.balance("USDT") == (950.0, 50.0)
    assert api.call("POST", "order", **order)[1] == {"code": -2010, "msg": "Duplicate order sent."}
    assert api.call("GET", "order", symbol="ABCUSDT", orderId=99)[1]["code"] == -2013
    assert api.call("DELETE", "order", symbol="ABCUSDT", origClientOrderId="nope")[1]["code"] == -2011
    gone = api.ok("DELETE", "order", symbol="ABCUSDT", origClientOrderId="dup-1")
    assert gone["status"] == "CANCELED" and gone["origClientOrderId"] == "dup-1"
    assert api.call("DELETE", "order", symbol="ABCUSDT", orderId=placed["orderId"])[1]["code"] == -2011
    assert api.balance("USDT") == (1000.0, 0.0)
    assert api.ok("POST", "order", **order)["orderId"] != placed["orderId"], "a finished id can be used again"
    assert api.ok("POST", "order/test", **{**order, "newClientOrderId": "t"}) == {}
    assert [o["clientOrderId"] for o in api.ok("GET", "allOrders", symbol="ABCUSDT")] == ["dup-1", "dup-1"]


def test_market_orders_take_the_next_replayed_trades_by_size(api: Api) -> None:
    tape = api.ex.data.tapes["ABCUSDT"]
    h = api.ex.engine.horizon("ABCUSDT")
    placed = api.ok("POST", "order", symbol="ABCUSDT", side="BUY", type="MARKET", quantity="1.5")
    assert placed["status"] == "NEW", "no book: the liquidity is the trades replayed after the order"
    api.seek(3)
    trades = api.ok("GET", "myTrades", symbol="ABCUSDT")
    sizes = [float(t["qty"]) for t in trades]
    want, left = [], 1.5
    for q in tape.qty[h:].tolist():
        want.append(min(q, left))
        left -= want[-1]
        if left <= 1e-12:
            break
    assert sizes == pytest.approx(want) and [float(t["price"]) for t in trades] == tape.price[h:h + len(want)].tolist()
    assert all(t["commissionAsset"] == "ABC" and not t["isMaker"] for t in trades)
    got = api.ok("GET", "order", symbol="ABCUSDT", orderId=placed["orderId"])
    cost = sum(float(t["quoteQty"]) for t in trades)
    assert got["status"] == "FILLED" and float(got["cummulativeQuoteQty"]) == pytest.approx(cost)
    assert api.balance("ABC")[0] == pytest.approx(2.0 + 1.5 * (1 - 0.001))
    assert api.balance("USDT")[0] == pytest.approx(1000.0 - cost)


def test_resting_limits_fill_at_their_price_only_through_it_and_stops_trigger(api: Api) -> None:
    tape = api.ex.data.tapes["ABCUSDT"]
    h = api.ex.engine.horizon("ABCUSDT")
    later = tape.price[h:]
    level = float(later[:40].min()) + 0.01  # some later trade goes below it
    resting = api.ok("POST", "order", symbol="ABCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                     quantity="0.1", price=f"{level:.2f}")
    at_level = float(later.min())  # only touched, never traded through: no fill
    touched = api.ok("POST", "order", symbol="ABCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                     quantity="0.1", price=f"{at_level:.2f}")
    last = float(tape.price[h - 1])
    assert api.call("POST", "order", symbol="ABCUSDT", side="SELL", type="STOP_LOSS", quantity="0.1",
                    stopPrice=f"{last + 1:.2f}")[1] == {"code": -2010, "msg": "Order would trigger immediately."}
    stop = api.ok("POST", "order", symbol="ABCUSDT", side="SELL", type="STOP_LOSS", quantity="0.1",
                  stopPrice=f"{level:.2f}")
    assert api.balance("ABC") == (1.9, 0.1)
    api.seek(24)
    fills = api.ok("GET", "myTrades", symbol="ABCUSDT", orderId=resting["orderId"])
    assert fills and all(float(f["price"]) == round(level, 2) and f["isMaker"] for f in fills)
    assert float(fills[0]["commission"]) == pytest.approx(float(fills[0]["qty"]) * 0.001)
    assert api.ok("GET", "order", symbol="ABCUSDT", orderId=touched["orderId"])["status"] == "NEW"
    trig = api.ok("GET", "order", symbol="ABCUSDT", orderId=stop["orderId"])
    first = int(next(i for i in range(h, len(tape)) if tape.price[i] <= round(level, 2)))
    assert trig["status"] == "FILLED" and trig["isWorking"] and trig["workingTime"] == int(tape.ts[first])
    sold = api.ok("GET", "myTrades", symbol="ABCUSDT", orderId=stop["orderId"])
    assert float(sold[0]["price"]) == float(tape.price[first]) and sold[0]["commissionAsset"] == "USDT"
    assert [o["orderId"] for o in api.ok("GET", "openOrders", symbol="ABCUSDT")] == [touched["orderId"]]


def test_oco_pairs_lock_once_and_one_ends_the_other(api: Api) -> None:
    tape = api.ex.data.tapes["ABCUSDT"]
    h = api.ex.engine.horizon("ABCUSDT")
    last, later = float(tape.price[h - 1]), tape.price[h:]
    below = round(float(later.min()) + 0.01, 2)  # some later trade reaches it
    pair = {"symbol": "ABCUSDT", "side": "SELL", "quantity": "1.5", "aboveType": "TAKE_PROFIT",
            "aboveStopPrice": f"{last * 10:.2f}", "belowType": "STOP_LOSS", "belowStopPrice": f"{below:.2f}",
            "aboveClientOrderId": "tp", "belowClientOrderId": "sl"}
    placed = api.ok("POST", "orderList/oco", **pair)
    assert placed["contingencyType"] == "OCO" and [o["clientOrderId"] for o in placed["orders"]] == ["tp", "sl"]
    assert api.balance("ABC") == (0.5, 1.5), "the pair locks the coins once"
    assert api.call("POST", "orderList/oco", **{**pair, "aboveClientOrderId": "x", "belowClientOrderId": "y"})[1] \
        == {"code": -2010, "msg": "Account has insufficient balance for requested action."}
    bad_second = {**pair, "quantity": "0.4", "belowStopPrice": "1.005", "aboveClientOrderId": "x"}
    assert api.call("POST", "orderList/oco", **bad_second)[1]["msg"] == "Filter failure: PRICE_FILTER"
    assert api.balance("ABC") == (0.5, 1.5) and len(api.ok("GET", "openOrders")) == 2, "a refused pair leaves nothing"
    api.seek(24)
    states = {o["clientOrderId"]: o["status"] for o in api.ok("GET", "allOrders", symbol="ABCUSDT")}
    assert states == {"tp": "EXPIRED", "sl": "FILLED"}
    free, locked = api.balance("ABC")
    assert locked == pytest.approx(0.0) and free == pytest.approx(0.5)
    again = api.ok("POST", "orderList/oco", **{**pair, "quantity": "0.2", "belowStopPrice": f"{below / 2:.2f}"})
    api.ok("DELETE", "order", symbol="ABCUSDT", origClientOrderId="sl")
    assert {o["status"] for o in api.ok("GET", "allOrders", symbol="ABCUSDT", orderId=again["orderListId"])} == \
        {"CANCELED"} and api.balance("ABC") == (pytest.approx(0.5), 0.0)


def test_command_line_account_options() -> None:
    from infra.replay_exchange.__main__ import parse_args

    config, _, _ = parse_args(["--balance", "usdt=5", "--balance", "BTC=1.5", "--api-key", "a", "--api-secret", "b",
                               "--taker-commission", "0.002"])
    assert config.balances == (("BTC", 1.5), ("USDT", 5.0)) and config.taker_commission == 0.002
    assert (config.api_key, config.api_secret) == ("a", "b")
    assert parse_args([])[0].balances == (("USDT", 100_000.0),)
    with pytest.raises(SystemExit):
        parse_args(["--balance", "USDT"])
