"""Klines from the exchange through ccxt REST, for the backfill (:mod:`flows.exchange.klines` fetches them)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import ccxt

from flows.exchange.binance import make_binance
from flows.exchange.klines import PAGE, fetch_klines
from flows.records import Bar
from flows.settings import Settings

__all__ = ["PAGE", "exchange_client", "exchange_streams", "fetch_klines"]
log = logging.getLogger(__name__)


def exchange_client(settings: Settings) -> ccxt.Exchange:
    """Return the sync ccxt client of the settings' exchange (the replay exchange when its URL is set)."""
    return make_binance(settings.exchange.http_url, settings.exchange.ws_url, enableRateLimit=True)


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
