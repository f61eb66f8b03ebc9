"""Klines (Binance's ``/api/v3/klines``) through ccxt REST: the backfill's history and the flow's warm-up.

ccxt's ``fetch_ohlcv`` keeps only OHLCV, so this calls Binance's klines endpoint
through ccxt's implicit API (``publicGetKlines``): same client, same URLs, same
rate limiting and error mapping, and the rows keep quote volume, trade count and
taker buy volume, which the bar features use.  Pages of 1000 are fetched
forward from ``start`` until ``end`` or until the exchange has no more closed
bars; the still-open bar is never returned.  Public endpoint: no key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flows.records import Bar
from flows.timeframes import timeframe_ms

PAGE = 1000


def fetch_klines(exchange: Any, symbol: str, timeframe: str, start_ms: int | None,
                 end_ms: int | None, closed_only: bool = True) -> Iterator[Bar]:
    """Yield bars of a symbol from ``start_ms`` (inclusive) to ``end_ms`` (exclusive), in order.

    With ``closed_only`` the bar still open at the exchange's server time is left out.
    """
    tf = timeframe_ms(timeframe)
    market_id = symbol.replace("/", "")
    since = start_ms if start_ms is not None else 0
    while True:
        params = {"symbol": market_id, "interval": timeframe, "startTime": since, "limit": PAGE}
        if end_ms is not None:
            params["endTime"] = end_ms - 1
        rows = exchange.publicGetKlines(params)
        # The exchange's clock, not ours: a replay's is in the past.
        now = int(exchange.fetch_time()) if closed_only else None
        for r in rows:
            t = int(r[0])
            if (end_ms is not None and t >= end_ms) or (now is not None and t + tf > now):
                return
            v = float(r[5])
            qv = float(r[7])
            c = float(r[4])
            yield Bar(symbol, timeframe, t, float(r[1]), float(r[2]), float(r[3]), c, v, qv, int(r[8]),
                      qv / v if v > 0 else c, float(r[9]))
        if len(rows) < PAGE:
            return
        since = int(rows[-1][0]) + tf
