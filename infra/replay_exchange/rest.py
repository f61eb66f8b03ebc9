"""Binance spot REST endpoints ccxt's ``binance`` calls for public market data.

``/api/v3/ping``, ``time``, ``exchangeInfo``, ``klines`` (and ``uiKlines``),
``trades``, ``historicalTrades``, ``aggTrades`` and ``ticker/24hr`` (the rolling
24 h statistics a pairlist ranks markets by, over the trades within the REST
horizon), with Binance's parameter
rules and error payloads (HTTP 400, ``{"code": -1121, "msg": "Invalid
symbol."}``; -1102 missing, -1100 malformed, -1120 bad interval, -1128 bad
combination).  Trades are served only up to the REST horizon: the whole data
set (``all``) or what the replay has streamed so far (``clock``).

Aggregate trades are built as Binance builds them: consecutive trades (by id)
with the same time, price and taker side form one aggregate ``{a, p, q, f, l,
T, m, M}`` with the summed quantity (exact on the lot grid) and trade ids
``f..l``; aggregate ids ``a`` are their own consecutive sequence (not trade
ids).  ``fromId`` is an aggregate id; ``startTime``/``endTime`` are inclusive;
``fromId`` with a time is -1128, a window longer than an hour -1127.  Only
aggregates whose every trade is within the REST horizon are served (an
exchange publishes a match whole).  Every reply carries Binance's
``X-MBX-USED-WEIGHT-1M`` header (the weights of :data:`WEIGHTS`, per minute of
the host clock).
"""

from __future__ import annotations

import time as _time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import orjson
from aiohttp import web

from infra.replay_exchange.engine import ReplayEngine
from infra.replay_exchange.klines import select_klines
from infra.replay_exchange.tape import MarketData, TradeTape
from infra.replay_exchange.wire import (
    BinanceError,
    exchange_info,
    illegal_param,
    invalid_symbol,
    missing_param,
)

# Request weights of Binance's spot REST API (GET /api/v3/..., its current documentation;
# ccxt 4.5's rate limiter budgets aggTrades at 2 and historicalTrades at 10, older figures).
WEIGHTS = {"ping": 1, "time": 1, "exchangeInfo": 20, "klines": 2, "uiKlines": 2, "trades": 25,
           "historicalTrades": 25, "aggTrades": 4, "ticker/24hr": 80}
_DAY_MS = 86_400_000
_HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Aggregates:
    """A tape's aggregated trades: ``start[k]``..``end[k]`` (exclusive) are aggregate k's rows."""

    start: np.ndarray
    end: np.ndarray
    base: int  # the id of aggregate 0

    @classmethod
    def of(cls, tape: TradeTape) -> Aggregates:
        """Group consecutive trades with the same time, price and taker side (and consecutive ids)."""
        n = len(tape)
        if n == 0:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), 0)
        brk = ((np.diff(tape.ts) != 0) | (np.diff(tape.price) != 0) | (np.diff(tape.buyer_maker.astype(np.int8)) != 0)
               | (np.diff(tape.ids) != 1))
        start = np.concatenate([[0], np.flatnonzero(brk) + 1]).astype(np.int64)
        end = np.concatenate([start[1:], [n]]).astype(np.int64)
        return cls(start, end, int(tape.ids[0]) // 2)  # agg ids run below trade ids, as on Binance

    def complete(self, horizon: int) -> int:
        """Return how many aggregates lie wholly before row ``horizon``."""
        return int(np.searchsorted(self.end, horizon, "right"))


def json_response(body: Any, status: int = 200) -> web.Response:
    """Return a JSON response serialised with orjson."""
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def int_param(params: Mapping[str, str], name: str, required: bool = False) -> int | None:
    """Return an integer parameter (None when absent); -1102 when required and absent, -1100 when malformed."""
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise missing_param(name)
        return None
    try:
        return int(raw)
    except ValueError:
        raise illegal_param(name) from None


def limit_param(params: Mapping[str, str], default: int = 500, most: int = 1000) -> int:
    """Return the ``limit`` parameter, ``default`` when absent, at most ``most``."""
    limit = int_param(params, "limit")
    if limit is None:
        return default
    if limit < 1:
        raise illegal_param("limit", f"1-{most}")
    return min(limit, most)


class RestApi:
    """The REST handlers of one replay exchange.

    Args:
        data: The data being replayed.
        engine: The replay loop (clock and horizon).
        horizon: ``clock`` or ``all``.
    """

    def __init__(self, data: MarketData, engine: ReplayEngine, horizon: str) -> None:
        self.data = data
        self.engine = engine
        self.horizon_mode = horizon
        self._aggs: dict[str, Aggregates] = {}
        self._weight_minute, self._weight = 0, 0

    def used_weight(self, endpoint: str) -> int:
        """Count a request's weight; return the weight used in the current minute (host clock)."""
        minute = int(_time.time() // 60)
        if minute != self._weight_minute:
            self._weight_minute, self._weight = minute, 0
        self._weight += WEIGHTS.get(endpoint, 1)
        return self._weight

    @web.middleware
    async def weight_header(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Add ``X-MBX-USED-WEIGHT-1M`` to the replies of ``/api/v3/<endpoint>``."""
        response = await handler(request)
        if request.path.startswith("/api/v3/") and request.method == "GET":
            used = self.used_weight(request.path.removeprefix("/api/v3/"))
            response.headers["X-MBX-USED-WEIGHT-1M"] = str(used)
        return response

    def aggregates(self, tape: TradeTape) -> Aggregates:
        """Return the tape's aggregated trades (built once)."""
        key = tape.market.market_id
        if key not in self._aggs:
            self._aggs[key] = Aggregates.of(tape)
        return self._aggs[key]

    def routes(self) -> list[web.RouteDef]:
        """Return the route table."""
        return [
            web.get("/api/v3/ping", self.ping),
            web.get("/api/v3/time", self.time),
            web.get("/api/v3/exchangeInfo", self.exchange_info),
            web.get("/api/v3/klines", self.klines),
            web.get("/api/v3/uiKlines", self.klines),
            web.get("/api/v3/trades", self.trades),
            web.get("/api/v3/historicalTrades", self.historical_trades),
            web.get("/api/v3/aggTrades", self.agg_trades),
            web.get("/api/v3/ticker/24hr", self.ticker_24hr),
        ]

    def _tape(self, request: web.Request) -> tuple[TradeTape, int]:
        symbol = request.query.get("symbol")
        if not symbol:
            raise missing_param("symbol")
        tape = self.data.tape(symbol.upper())
        if tape is None:
            raise invalid_symbol()
        h = len(tape) if self.horizon_mode == "all" else self.engine.horizon(tape.market.market_id)
        return tape, h

    async def ping(self, request: web.Request) -> web.Response:
        """``GET /api/v3/ping``."""
        return json_response({})

    async def time(self, request: web.Request) -> web.Response:
        """``GET /api/v3/time``: the replay clock in ms."""
        return json_response({"serverTime": self.engine.clock_ns() // 1_000_000})

    async def exchange_info(self, request: web.Request) -> web.Response:
        """``GET /api/v3/exchangeInfo`` with optional ``symbol`` or ``symbols`` (a JSON list)."""
        wanted: list[str] | None = None
        if request.query.get("symbol"):
            wanted = [request.query["symbol"].upper()]
        elif request.query.get("symbols"):
            try:
                wanted = [str(s).upper() for s in orjson.loads(request.query["symbols"])]
            except orjson.JSONDecodeError:
                raise illegal_param("symbols", '["BTCUSDT","ETHUSDT"]') from None
        tapes = self.data.tapes
        if wanted is not None and any(w not in tapes for w in wanted):
            raise invalid_symbol()
        markets = [tapes[w].market for w in wanted] if wanted is not None else [t.market for t in tapes.values()]
        return json_response(exchange_info(markets, self.engine.clock_ns() // 1_000_000))

    async def ticker_24hr(self, request: web.Request) -> web.Response:
        """``GET /api/v3/ticker/24hr``: one market's (``symbol``) or every market's rolling 24 h statistics."""
        if request.query.get("symbol"):
            tape, h = self._tape(request)
            return json_response(_ticker(tape, h))
        rows = []
        for tape in self.data.tapes.values():
            h = len(tape) if self.horizon_mode == "all" else self.engine.horizon(tape.market.market_id)
            rows.append(_ticker(tape, h))
        return json_response(rows)

    async def klines(self, request: web.Request) -> web.Response:
        """``GET /api/v3/klines``: symbol, interval, startTime, endTime, limit (500, max 1000)."""
        tape, h = self._tape(request)
        interval = request.query.get("interval")
        if not interval:
            raise missing_param("interval")
        q = request.query
        start, end, limit = int_param(q, "startTime"), int_param(q, "endTime"), limit_param(q)
        return json_response(select_klines(tape, interval, start, end, limit, h))

    async def trades(self, request: web.Request) -> web.Response:
        """``GET /api/v3/trades``: the most recent ``limit`` trades."""
        tape, h = self._tape(request)
        limit = limit_param(request.query)
        return json_response(_trade_rows(tape, max(h - limit, 0), h))

    async def historical_trades(self, request: web.Request) -> web.Response:
        """``GET /api/v3/historicalTrades``: from ``fromId`` (else the most recent)."""
        tape, h = self._tape(request)
        limit, from_id = limit_param(request.query), int_param(request.query, "fromId")
        if from_id is None:
            return json_response(_trade_rows(tape, max(h - limit, 0), h))
        lo = int(np.searchsorted(tape.ids[:h], from_id, "left"))
        return json_response(_trade_rows(tape, lo, min(lo + limit, h)))

    async def agg_trades(self, request: web.Request) -> web.Response:
        """``GET /api/v3/aggTrades``: fromId (an aggregate id), or startTime/endTime (inclusive), or the most recent."""
        tape, h = self._tape(request)
        limit = limit_param(request.query)
        q = request.query
        from_id, start, end = int_param(q, "fromId"), int_param(q, "startTime"), int_param(q, "endTime")
        if from_id is not None and (start is not None or end is not None):
            raise BinanceError(-1128, "Combination of optional parameters invalid.")
        if start is not None and end is not None and end - start > _HOUR_MS:
            raise BinanceError(-1127, "More than 1 hours between startTime and endTime.")
        aggs = self.aggregates(tape)
        n = aggs.complete(h)
        if from_id is not None:
            lo = min(max(from_id - aggs.base, 0), n)
            hi = min(lo + limit, n)
        elif start is not None or end is not None:
            first_ts = tape.ts[aggs.start[:n]]  # an aggregate's trades share one time
            hi = n if end is None else int(np.searchsorted(first_ts, end, "right"))
            if start is not None:
                lo = int(np.searchsorted(first_ts, start, "left"))
                hi = max(lo, min(hi, lo + limit))
            else:
                lo = max(hi - limit, 0)
        else:
            lo, hi = max(n - limit, 0), n
        return json_response(_agg_rows(tape, aggs, lo, hi))


def _trade_rows(tape: TradeTape, lo: int, hi: int) -> list[dict[str, Any]]:
    rows = []
    for i, p, q, t, m in zip(
        tape.ids[lo:hi].tolist(), tape.price[lo:hi].tolist(), tape.qty[lo:hi].tolist(),
        tape.ts[lo:hi].tolist(), tape.buyer_maker[lo:hi].tolist(), strict=True,
    ):
        rows.append({
            "id": i, "price": tape.price_str(p), "qty": tape.qty_str(q), "quoteQty": _quote(p, q),
            "time": t, "isBuyerMaker": m, "isBestMatch": True,
        })
    return rows


def _agg_rows(tape: TradeTape, aggs: Aggregates, lo: int, hi: int) -> list[dict[str, Any]]:
    rows = []
    dq = tape.market.qty_decimals
    for k in range(lo, hi):
        i, j = int(aggs.start[k]), int(aggs.end[k])
        if dq is not None:  # sum on the lot grid: exact
            lots = int(np.round(tape.qty[i:j] * 10.0**dq).astype(np.int64).sum())
            qty = f"{Decimal(lots).scaleb(-dq):.8f}"
        else:
            qty = format(sum((Decimal(repr(float(x))) for x in tape.qty[i:j]), Decimal(0)), "f")
        rows.append({"a": aggs.base + k, "p": tape.price_str(float(tape.price[i])), "q": qty,
                     "f": int(tape.ids[i]), "l": int(tape.ids[j - 1]), "T": int(tape.ts[i]),
                     "m": bool(tape.buyer_maker[i]), "M": True})
    return rows


def _ticker(tape: TradeTape, h: int) -> dict[str, Any]:
    """Return Binance's 24 h ticker of the trades before row ``h``: the day up to the last of them."""
    sym = tape.market.market_id
    if h == 0:
        zero = "0.00000000"
        return {"symbol": sym, "priceChange": zero, "priceChangePercent": "0.000", "weightedAvgPrice": zero,
                "prevClosePrice": zero, "lastPrice": zero, "lastQty": zero, "bidPrice": zero, "bidQty": zero,
                "askPrice": zero, "askQty": zero, "openPrice": zero, "highPrice": zero, "lowPrice": zero,
                "volume": zero, "quoteVolume": zero, "openTime": 0, "closeTime": 0, "firstId": -1, "lastId": -1,
                "count": 0}
    close_t = int(tape.ts[h - 1])
    lo = int(np.searchsorted(tape.ts[:h], close_t - _DAY_MS, "right"))
    price, qty = tape.price[lo:h], tape.qty[lo:h]
    vol, quote = float(qty.sum()), float((price * qty).sum())
    first, last = float(price[0]), float(price[-1])
    return {
        "symbol": sym, "priceChange": tape.price_str(last - first),
        "priceChangePercent": f"{(last / first - 1) * 100:.3f}", "weightedAvgPrice": f"{quote / vol:.8f}",
        "prevClosePrice": tape.price_str(float(tape.price[lo - 1]) if lo else first),
        "lastPrice": tape.price_str(last), "lastQty": tape.qty_str(float(qty[-1])),
        "bidPrice": tape.price_str(last), "bidQty": "0.00000000", "askPrice": tape.price_str(last),
        "askQty": "0.00000000", "openPrice": tape.price_str(first), "highPrice": tape.price_str(float(price.max())),
        "lowPrice": tape.price_str(float(price.min())), "volume": f"{vol:.8f}", "quoteVolume": f"{quote:.8f}",
        "openTime": int(tape.ts[lo]), "closeTime": close_t, "firstId": int(tape.ids[lo]),
        "lastId": int(tape.ids[h - 1]), "count": h - lo,
    }


def _quote(price: float, qty: float) -> str:
    return f"{price * qty:.8f}"
