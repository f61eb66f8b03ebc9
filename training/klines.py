"""Klines from the exchange through ccxt REST, for the backfill.

ccxt's ``fetch_ohlcv`` keeps only OHLCV, so this calls Binance's klines endpoint
through ccxt's implicit API (``publicGetKlines``): same client, same URLs, same
rate limiting and error mapping, and the rows keep quote volume, trade count and
taker buy volume, which the bar features use.  Pages of 1000 are fetched
forward from ``start`` until ``end`` or until the exchange has no more closed
bars; the still-open bar is never returned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import ccxt

from flows.exchange.binance import make_binance
from flows.records import Bar
from flows.settings import Settings
from flows.timeframes import timeframe_ms

log = logging.getLogger(__name__)
PAGE = 1000


def exchange_client(settings: Settings) -> ccxt.Exchange:
    """Return the sync ccxt client of the settings' exchange (the replay exchange when its URL is set)."""
    return make_binance(settings.exchange.http_url, settings.exchange.ws_url, enableRateLimit=True)


def fetch_klines(exchange: ccxt.Exchange, symbol: str, timeframe: str, start_ms: int | None,
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


def exchange_streams(settings: Settings, symbols: tuple[str, ...], timeframe: str,
                     start_ms: int | None, end_ms: int | None, closed_only: bool = True) -> dict[str, Iterator[Bar]]:
    """Return per-symbol bar iterators fetched from the settings' exchange."""
    exchange = exchange_client(settings)
    exchange.load_markets()
    missing = [s for s in symbols if s not in exchange.markets]
    if missing:
        raise ValueError(f"symbols not listed by the exchange: {', '.join(missing)}")
    log.info("klines from %s, %s %s", exchange.urls["api"]["public"], ",".join(symbols), timeframe)
    t0 = time.perf_counter()
    streams = {s: list(fetch_klines(exchange, s, timeframe, start_ms, end_ms, closed_only)) for s in symbols}
    log.info("fetched %d bars in %.1fs", sum(len(v) for v in streams.values()), time.perf_counter() - t0)
    return {s: iter(v) for s, v in streams.items()}
