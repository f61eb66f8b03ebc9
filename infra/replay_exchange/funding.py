"""Binance USD-M funding rates from a file: ``/fapi/v1/fundingRate`` and the ``/fapi/v1/exchangeInfo`` ccxt loads.

The file is a CSV of either funding events (``fundingTime`` in ms, ``fundingRate``, optionally
``symbol``) or daily values (``date``, ``funding_mean``: the shared data set's
``funding_rates.csv``), which become three events a day at 00:00, 08:00 and 16:00 UTC with the
day's mean rate (Binance settles funding every 8 hours).  Replies follow Binance's format:
``[{"symbol", "fundingTime", "fundingRate", "markPrice"}]`` ascending, ``limit`` 100 by default
and at most 1000, ``startTime``/``endTime`` inclusive; errors as ``{"code", "msg"}``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from aiohttp import web

from infra.replay_exchange.rest import int_param, json_response, limit_param
from infra.replay_exchange.wire import BinanceError, invalid_symbol, missing_param

EIGHT_HOURS_MS = 8 * 3_600_000


def load_funding(path: Path, symbol: str = "BTCUSDT") -> dict[str, pd.DataFrame]:
    """Read a funding CSV into symbol -> frame of ``fundingTime`` (ms, ascending) and ``fundingRate``."""
    df = pd.read_csv(path)
    if {"fundingTime", "fundingRate"} <= set(df.columns):
        ev = df.assign(symbol=df["symbol"] if "symbol" in df.columns else symbol)
    elif {"date", "funding_mean"} <= set(df.columns):
        day = pd.to_datetime(df["date"], utc=True).astype("int64").to_numpy() // 1_000_000
        times = (day[:, None] + np.arange(3)[None, :] * EIGHT_HOURS_MS).reshape(-1)
        ev = pd.DataFrame({"symbol": symbol, "fundingTime": times,
                           "fundingRate": np.repeat(df["funding_mean"].to_numpy(float), 3)})
    else:
        raise ValueError(f"{path}: need columns fundingTime,fundingRate or date,funding_mean")
    return {s: g.sort_values("fundingTime").reset_index(drop=True)[["fundingTime", "fundingRate"]]
            for s, g in ev.groupby("symbol")}


def _market(symbol: str) -> dict[str, object]:
    base = symbol.removesuffix("USDT")
    return {"symbol": symbol, "pair": symbol, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
            "onboardDate": 1569398400000, "status": "TRADING", "baseAsset": base, "quoteAsset": "USDT",
            "marginAsset": "USDT", "pricePrecision": 2, "quantityPrecision": 3, "baseAssetPrecision": 8,
            "quotePrecision": 8, "underlyingType": "COIN", "settlePlan": 0, "triggerProtect": "0.0500",
            "filters": [{"filterType": "PRICE_FILTER", "minPrice": "0.10", "maxPrice": "4529764",
                         "tickSize": "0.10"},
                        {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"}],
            "orderTypes": ["LIMIT", "MARKET"], "timeInForce": ["GTC", "IOC", "FOK"]}


class FundingApi:
    """The USD-M endpoints of the replay: exchange info and funding-rate history."""

    def __init__(self, funding: dict[str, pd.DataFrame]) -> None:
        self.funding = funding

    def routes(self) -> list[web.RouteDef]:
        """Return the route table."""
        return [web.get("/fapi/v1/exchangeInfo", self.exchange_info),
                web.get("/fapi/v1/fundingRate", self.funding_rate)]

    async def exchange_info(self, request: web.Request) -> web.Response:
        """``GET /fapi/v1/exchangeInfo``: the perpetuals that have funding data."""
        return json_response({"timezone": "UTC", "serverTime": 0, "futuresType": "U_MARGINED", "rateLimits": [],
                              "exchangeFilters": [], "assets": [{"asset": "USDT", "marginAvailable": True}],
                              "symbols": [_market(s) for s in sorted(self.funding)]})

    async def funding_rate(self, request: web.Request) -> web.Response:
        """``GET /fapi/v1/fundingRate``: symbol, startTime, endTime (inclusive), limit (100, max 1000)."""
        q = request.query
        symbol = q.get("symbol", "").upper()
        if not symbol:
            raise missing_param("symbol")
        if symbol not in self.funding:
            raise invalid_symbol()
        start, end = int_param(q, "startTime"), int_param(q, "endTime")
        limit = limit_param(q, 100, 1000)
        if start is not None and end is not None and start > end:
            raise BinanceError(-1128, "startTime must be less than endTime")
        df = self.funding[symbol]
        t = df["fundingTime"].to_numpy()
        lo = 0 if start is None else int(np.searchsorted(t, start, "left"))
        hi = len(t) if end is None else int(np.searchsorted(t, end, "right"))
        if start is None:
            lo = max(lo, hi - limit)  # Binance: without startTime, the most recent ``limit`` (up to endTime)
        rows = df.iloc[lo:min(hi, lo + limit)]
        return json_response([{"symbol": symbol, "fundingTime": int(ft), "fundingRate": f"{fr:.8f}", "markPrice": ""}
                              for ft, fr in zip(rows["fundingTime"], rows["fundingRate"], strict=True)])
