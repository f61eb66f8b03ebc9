"""Binance spot's signed (account and trading) REST endpoints on the replay exchange.

``POST /api/v3/order`` (and ``/order/test``), ``POST /api/v3/orderList/oco``, ``GET`` / ``DELETE /api/v3/order``,
``GET`` / ``DELETE /api/v3/openOrders``, ``GET /api/v3/allOrders``,
``GET /api/v3/myTrades`` and ``GET /api/v3/account``, with the request and
answer shapes ccxt ``binance`` reads.  Every request must carry the configured
key in ``X-MBX-APIKEY`` (-2014 missing, -2015 wrong, HTTP 401) and a
``timestamp`` and ``signature``: the hex HMAC-SHA256, keyed with the secret,
of the query string followed by the body (``signature`` itself left out), as
Binance computes it (-1022 when it does not match).  The replay clock is in
the past, so ``timestamp`` is not compared with it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from infra.replay_exchange.orders import Account, ReplayOrder
from infra.replay_exchange.rest import int_param, json_response, limit_param
from infra.replay_exchange.wire import BinanceError, illegal_param, missing_param

_SIGNATURE = re.compile(r"&?signature=([0-9a-fA-F]*)")
_Z = "0.00000000"


class SignedApi:
    """Handlers of the signed endpoints for one :class:`Account`."""

    def __init__(self, account: Account, api_key: str, api_secret: str) -> None:
        """Serve ``account`` to requests signed with ``api_key`` / ``api_secret``."""
        self.account = account
        self._key = api_key
        self._secret = api_secret.encode()

    def __repr__(self) -> str:
        return "SignedApi(key=***, secret=***)"

    def routes(self) -> list[web.RouteDef]:
        """Return the route table."""
        return [
            web.post("/api/v3/order", self.new_order),
            web.post("/api/v3/order/test", self.test_order),
            web.post("/api/v3/orderList/oco", self.new_oco),
            web.get("/api/v3/order", self.get_order),
            web.delete("/api/v3/order", self.cancel_order),
            web.get("/api/v3/openOrders", self.open_orders),
            web.delete("/api/v3/openOrders", self.cancel_open_orders),
            web.get("/api/v3/allOrders", self.all_orders),
            web.get("/api/v3/myTrades", self.my_trades),
            web.get("/api/v3/account", self.account_info),
        ]

    async def _params(self, request: web.Request) -> dict[str, str]:
        """Check key and signature; return the query and form parameters."""
        key = request.headers.get("X-MBX-APIKEY")
        if not key:
            raise BinanceError(-2014, "API-key format invalid.", 401)
        if not hmac.compare_digest(key, self._key):
            raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        query, body = request.rel_url.raw_query_string, await request.text() if request.can_read_body else ""
        found = _SIGNATURE.search(query) or _SIGNATURE.search(body)
        if found is None:
            raise missing_param("signature")
        payload = _SIGNATURE.sub("", query) + _SIGNATURE.sub("", body)
        want = hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, found.group(1).lower()):
            raise BinanceError(-1022, "Signature for this request is not valid.")
        params = dict(parse_qsl(query, keep_blank_values=True))
        params.update(parse_qsl(body, keep_blank_values=True))
        if not params.get("timestamp"):
            raise missing_param("timestamp")
        if not params["timestamp"].isdigit():
            raise illegal_param("timestamp")
        self.account.catch_up()
        return params

    # -- orders --------------------------------------------------------------------------------
    async def new_order(self, request: web.Request) -> web.Response:
        """``POST /api/v3/order``: ACK, RESULT or FULL answer (``newOrderRespType``)."""
        p = await self._params(request)
        o = self.account.place(p)
        kind = (p.get("newOrderRespType") or "FULL").upper()
        ack = {"symbol": o.market_id, "orderId": o.order_id, "orderListId": o.list_id, "clientOrderId": o.client_id,
               "transactTime": o.time}
        if kind == "ACK":
            return json_response(ack)
        body = {**ack, **_order_fields(o), "workingTime": o.working_time,
                "selfTradePreventionMode": "EXPIRE_MAKER"}
        if kind == "FULL":
            body["fills"] = [{"price": f["price"], "qty": f["qty"], "commission": f["commission"],
                              "commissionAsset": f["commissionAsset"], "tradeId": f["id"]} for f in o.fills]
        return json_response(body)

    async def new_oco(self, request: web.Request) -> web.Response:
        """``POST /api/v3/orderList/oco``: a one-cancels-the-other pair (``above*`` and ``below*`` legs)."""
        p = await self._params(request)
        legs = self.account.place_oco(p)
        first = legs[0]
        return json_response({
            "orderListId": first.order_id, "contingencyType": "OCO", "listStatusType": "EXEC_STARTED",
            "listOrderStatus": "EXECUTING", "listClientOrderId": p.get("listClientOrderId") or f"list-{first.order_id}",
            "transactionTime": first.time, "symbol": first.market_id,
            "orders": [{"symbol": o.market_id, "orderId": o.order_id, "clientOrderId": o.client_id} for o in legs],
            "orderReports": [{"symbol": o.market_id, "orderId": o.order_id, "orderListId": first.order_id,
                              "clientOrderId": o.client_id, "transactTime": o.time, **_order_fields(o),
                              "workingTime": o.working_time, "selfTradePreventionMode": "EXPIRE_MAKER"}
                             for o in legs],
        })

    async def test_order(self, request: web.Request) -> web.Response:
        """``POST /api/v3/order/test``: validate only (nothing is placed)."""
        p = await self._params(request)
        acc = self.account
        before = (dict(acc.free), dict(acc.locked), acc._next_order)
        o = acc.place(p)
        del acc.orders[o.order_id]
        acc.free, acc.locked, acc._next_order = before
        return json_response({})

    async def get_order(self, request: web.Request) -> web.Response:
        """``GET /api/v3/order`` by ``orderId`` or ``origClientOrderId`` (-2013 unknown)."""
        p = await self._params(request)
        tape = self.account.tape(p.get("symbol"))
        o = self.account.find(tape.market.market_id, p.get("orderId"), p.get("origClientOrderId"), -2013)
        return json_response(order_json(o))

    async def cancel_order(self, request: web.Request) -> web.Response:
        """``DELETE /api/v3/order`` (-2011 unknown or finished)."""
        p = await self._params(request)
        tape = self.account.tape(p.get("symbol"))
        o = self.account.find(tape.market.market_id, p.get("orderId"), p.get("origClientOrderId"), -2011)
        self.account.cancel(o)
        return json_response(_cancel_json(o, p.get("newClientOrderId")))

    async def open_orders(self, request: web.Request) -> web.Response:
        """``GET /api/v3/openOrders`` of one symbol or all."""
        p = await self._params(request)
        market = self.account.tape(p["symbol"]).market.market_id if p.get("symbol") else None
        return json_response([order_json(o) for o in self.account.orders.values()
                              if o.is_open and market in (None, o.market_id)])

    async def cancel_open_orders(self, request: web.Request) -> web.Response:
        """``DELETE /api/v3/openOrders``: cancel every open order of a symbol."""
        p = await self._params(request)
        market = self.account.tape(p.get("symbol")).market.market_id
        done = [self.account.cancel(o) for o in list(self.account.orders.values())
                if o.is_open and o.market_id == market]
        return json_response([_cancel_json(o, None) for o in done])

    async def all_orders(self, request: web.Request) -> web.Response:
        """``GET /api/v3/allOrders``: symbol, orderId (from), startTime, endTime, limit (500, max 1000)."""
        p = await self._params(request)
        market = self.account.tape(p.get("symbol")).market.market_id
        first, start, end, limit = int_param(p, "orderId"), int_param(p, "startTime"), int_param(p, "endTime"), limit_param(p)
        rows = [o for o in self.account.orders.values() if o.market_id == market
                and (first is None or o.order_id >= first) and (start is None or o.time >= start)
                and (end is None or o.time <= end)]
        rows = rows[:limit] if first is not None or start is not None else rows[-limit:]
        return json_response([order_json(o) for o in rows])

    async def my_trades(self, request: web.Request) -> web.Response:
        """``GET /api/v3/myTrades``: symbol, orderId, fromId, startTime, endTime, limit (500, max 1000)."""
        p = await self._params(request)
        market = self.account.tape(p.get("symbol")).market.market_id
        oid, from_id = int_param(p, "orderId"), int_param(p, "fromId")
        start, end, limit = int_param(p, "startTime"), int_param(p, "endTime"), limit_param(p)
        rows = [t for t in self.account.trades if t["symbol"] == market
                and (oid is None or t["orderId"] == oid) and (from_id is None or t["id"] >= from_id)
                and (start is None or t["time"] >= start) and (end is None or t["time"] <= end)]
        rows = rows[:limit] if from_id is not None or start is not None else rows[-limit:]
        return json_response(rows)

    async def account_info(self, request: web.Request) -> web.Response:
        """``GET /api/v3/account``: balances (``omitZeroBalances`` honoured) and commission rates."""
        p = await self._params(request)
        acc = self.account
        assets = sorted(set(acc.free) | set(acc.locked))
        balances = [{"asset": a, "free": f"{max(acc.free.get(a, 0.0), 0.0):.8f}",
                     "locked": f"{max(acc.locked.get(a, 0.0), 0.0):.8f}"} for a in assets]
        if p.get("omitZeroBalances") == "true":
            balances = [b for b in balances if float(b["free"]) or float(b["locked"])]
        bps = lambda r: round(r * 10_000)  # noqa: E731 - Binance states commissions in bps
        return json_response({
            "makerCommission": bps(acc.maker), "takerCommission": bps(acc.taker), "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {"maker": f"{acc.maker:.8f}", "taker": f"{acc.taker:.8f}", "buyer": _Z, "seller": _Z},
            "canTrade": True, "canWithdraw": False, "canDeposit": False, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False, "updateTime": acc.now_ms(),
            "accountType": "SPOT", "balances": balances, "permissions": ["SPOT"], "uid": 1,
        })


def _order_fields(o: ReplayOrder) -> dict[str, Any]:
    out = {"price": f"{o.price:.8f}", "origQty": f"{o.qty:.8f}", "executedQty": f"{o.executed:.8f}",
           "origQuoteOrderQty": _Z, "cummulativeQuoteQty": f"{o.cum_quote:.8f}", "status": o.status,
           "timeInForce": "GTC", "type": o.type, "side": o.side}
    if o.stop_price:
        out["stopPrice"] = f"{o.stop_price:.8f}"
    return out


def order_json(o: ReplayOrder) -> dict[str, Any]:
    """Return an order as ``GET /api/v3/order`` answers it."""
    return {"symbol": o.market_id, "orderId": o.order_id, "orderListId": o.list_id, "clientOrderId": o.client_id,
            **_order_fields(o), "stopPrice": f"{o.stop_price:.8f}", "icebergQty": _Z, "time": o.time,
            "updateTime": o.update_time, "isWorking": o.working, "workingTime": o.working_time,
            "selfTradePreventionMode": "EXPIRE_MAKER"}


def _cancel_json(o: ReplayOrder, new_client_id: str | None) -> dict[str, Any]:
    return {"symbol": o.market_id, "origClientOrderId": o.client_id, "orderId": o.order_id, "orderListId": o.list_id,
            "clientOrderId": new_client_id or f"cancel-{o.order_id}", "transactTime": o.update_time,
            **_order_fields(o), "selfTradePreventionMode": "EXPIRE_MAKER"}

