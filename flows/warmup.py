"""A fresh start's warm-up: the klines before the first trade, fetched from the exchange's public REST endpoint.

A feature row comes out once every recursive mean of the features has converged
(:data:`flows.operators.features.WARMUP` bars, issue 17, defect 10).  A flow started
without a snapshot would otherwise publish no features for that many bars, and then
ones that start exactly as training's do.  So a symbol's pipeline, when it is created
(no snapshot) at its first trade, is first fed ``exchange.warmup_klines`` klines per
timeframe, those that end where the bar of its first trade opens (Binance's public
``/api/v3/klines``, no key; the replay exchange serves them alike): the first bar the
flow builds already has converged features, equal to a long history's.  The klines
pass through the pipeline as :class:`~flows.records.WarmupBar` records: the cross-asset
step warms its windows on their returns, the close barrier counts them as warm-up, and
nothing is stored, scored or traded on them.  A failed fetch is logged, and the symbol
then warms up on live bars.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import ccxt

from flows.exchange.binance import make_binance
from flows.exchange.klines import fetch_klines
from flows.records import Bar
from flows.timeframes import timeframe_ms

log = logging.getLogger(__name__)


class KlineWarmup:
    """Fetch a symbol's warm-up klines (``count`` per timeframe) from the exchange; one ccxt client per thread."""

    def __init__(self, http_url: str | None, ws_url: str | None, count: int, timeframes: tuple[str, ...]) -> None:
        """Reach the exchange at ``http_url``/``ws_url`` (None: Binance) for ``count`` klines of each timeframe."""
        self.http_url, self.ws_url, self.count, self.timeframes = http_url, ws_url, count, timeframes
        self._local = threading.local()

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = make_binance(self.http_url, self.ws_url, enableRateLimit=True)
        return client

    def bars(self, symbol: str, first_trade_ms: int) -> list[Bar]:
        """Return the klines of ``symbol`` before the bar of its first trade, every timeframe, oldest first per timeframe."""
        out: list[Bar] = []
        for tf in self.timeframes:
            tf_ms = timeframe_ms(tf)
            end = first_trade_ms - first_trade_ms % tf_ms
            try:
                got = list(fetch_klines(self._client(), symbol, tf, end - self.count * tf_ms, end, closed_only=False))
            except (ccxt.BaseError, OSError) as exc:
                log.warning("%s %s: warm-up klines not fetched (%s); the features warm up on live bars",
                            symbol, tf, type(exc).__name__)
                got = []
            if len(got) < self.count:
                log.warning("%s %s: %d of %d warm-up klines before the first trade; the first features may come "
                            "later", symbol, tf, len(got), self.count)
            else:
                log.info("%s %s: warmed up on %d klines", symbol, tf, len(got))
            out.extend(got)
        return out
