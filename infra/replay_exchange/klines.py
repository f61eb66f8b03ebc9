"""Klines (``/api/v3/klines``) from a tape: vectorised bucketing of trades.

At a candle file's own interval the file's candles are served verbatim (the
generated trades only add quote volume, trade count and taker volumes); any
other interval, and the candle still in progress under the clock horizon, is
aggregated from the trades.  Binance semantics: rows with ``startTime <=
openTime <= endTime``; with no ``startTime`` the last ``limit`` rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infra.replay_exchange.tape import TradeTape
from infra.replay_exchange.wire import (
    KLINE_INTERVALS_MS,
    KLINE_OFFSET_MS,
    BinanceError,
    exact_str,
    format_number,
)


@dataclass(frozen=True)
class KlineColumns:
    """Klines as columns; ``open_ms`` increasing."""

    open_ms: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    quote_volume: np.ndarray
    trades: np.ndarray
    taker_base: np.ndarray
    taker_quote: np.ndarray

    def __len__(self) -> int:
        return len(self.open_ms)

    def take(self, sl: slice) -> KlineColumns:
        """Return the rows in ``sl``."""
        return KlineColumns(*(getattr(self, f)[sl] for f in self.__dataclass_fields__))

    @staticmethod
    def concat(parts: list[KlineColumns]) -> KlineColumns:
        """Concatenate row blocks."""
        return KlineColumns(*(np.concatenate([getattr(p, f) for p in parts]) for f in KlineColumns.__dataclass_fields__))


def aggregate(ts: np.ndarray, price: np.ndarray, qty: np.ndarray, buyer_maker: np.ndarray, interval_ms: int, offset_ms: int = 0) -> KlineColumns:
    """Bucket trades (sorted by time) into klines of ``interval_ms``."""
    bucket = (ts - offset_ms) // interval_ms * interval_ms + offset_ms
    if len(ts) == 0:
        empty_f, empty_i = np.empty(0), np.empty(0, dtype=np.int64)
        return KlineColumns(empty_i, empty_f, empty_f, empty_f, empty_f, empty_f, empty_f, empty_i, empty_f, empty_f)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(bucket)) + 1])
    ends = np.concatenate([starts[1:], [len(ts)]])
    notional = price * qty
    taker_buy = ~buyer_maker
    return KlineColumns(
        open_ms=bucket[starts],
        open=price[starts],
        high=np.maximum.reduceat(price, starts),
        low=np.minimum.reduceat(price, starts),
        close=price[ends - 1],
        volume=np.add.reduceat(qty, starts),
        quote_volume=np.add.reduceat(notional, starts),
        trades=ends - starts,
        taker_base=np.add.reduceat(np.where(taker_buy, qty, 0.0), starts),
        taker_quote=np.add.reduceat(np.where(taker_buy, notional, 0.0), starts),
    )


def select_klines(
    tape: TradeTape, interval: str, start: int | None, end: int | None, limit: int, horizon: int
) -> list[list[object]]:
    """Return Binance kline rows of ``tape`` visible under ``horizon`` trades.

    Args:
        tape: The symbol's trades.
        interval: Binance interval, e.g. ``1m``.
        start: ``startTime`` in ms or None.
        end: ``endTime`` in ms or None.
        limit: Maximum number of rows.
        horizon: Number of the tape's trades that may be used (REST horizon).

    Raises:
        BinanceError: -1120 for an interval this server does not serve.
    """
    interval_ms = KLINE_INTERVALS_MS.get(interval)
    if interval_ms is None:
        raise BinanceError(-1120, "Invalid interval.")
    offset = KLINE_OFFSET_MS.get(interval, 0)
    c = tape.candles
    if c is not None and c.interval_ms == interval_ms:
        cols = _candle_columns(tape, horizon)
    else:
        lo, hi = _trade_window(tape.ts[:horizon], interval_ms, offset, start, end, limit)
        cols = aggregate(tape.ts[lo:hi], tape.price[lo:hi], tape.qty[lo:hi], tape.buyer_maker[lo:hi], interval_ms, offset)
    a = 0 if start is None else int(np.searchsorted(cols.open_ms, start, "left"))
    b = len(cols) if end is None else int(np.searchsorted(cols.open_ms, end, "right"))
    sl = slice(a, min(b, a + limit)) if start is not None else slice(max(a, b - limit), b)
    return _rows(tape, cols.take(sl), interval_ms)


def _trade_window(ts: np.ndarray, interval_ms: int, offset: int, start: int | None, end: int | None, limit: int) -> tuple[int, int]:
    """Return the trade index range that can contribute to the requested rows."""
    if len(ts) == 0:
        return 0, 0
    lo, hi = 0, len(ts)
    if end is not None:
        end_open = (end - offset) // interval_ms * interval_ms + offset
        hi = int(np.searchsorted(ts, end_open + interval_ms, "left"))
    if start is not None:
        first_open = -((offset - start) // interval_ms) * interval_ms + offset  # ceil to a bucket
        lo = int(np.searchsorted(ts, first_open, "left"))
        hi = min(hi, int(np.searchsorted(ts, first_open + limit * interval_ms, "left")))
    elif hi > 0:
        last_open = (int(ts[hi - 1]) - offset) // interval_ms * interval_ms + offset
        lo = int(np.searchsorted(ts, last_open - (limit - 1) * interval_ms, "left"))
    return lo, max(lo, hi)


def _candle_columns(tape: TradeTape, horizon: int) -> KlineColumns:
    """Return the file's candles visible under ``horizon``, the last one partial if in progress."""
    c = tape.candles
    assert c is not None
    full = KlineColumns(c.ts, c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.trades, c.taker_base, c.taker_quote)
    if horizon >= len(tape):
        return full
    if horizon == 0:
        return full.take(slice(0, 0))
    visible = int(np.searchsorted(c.ts, tape.ts[horizon - 1], "right"))
    complete = int(np.searchsorted(c.trade_end, horizon, "right"))
    if complete >= visible:
        return full.take(slice(0, visible))
    lo = int(c.trade_end[visible - 2]) if visible >= 2 else 0
    offset = int(c.ts[visible - 1]) % c.interval_ms  # file candles need not align to the epoch
    part = aggregate(
        tape.ts[lo:horizon], tape.price[lo:horizon], tape.qty[lo:horizon], tape.buyer_maker[lo:horizon], c.interval_ms, offset
    )
    return KlineColumns.concat([full.take(slice(0, visible - 1)), part])


def _rows(tape: TradeTape, k: KlineColumns, interval_ms: int) -> list[list[object]]:
    dp, qd = tape.market.price_decimals, tape.market.qty_decimals
    # Sums of grid values are grid values: round away the float noise of adding them.
    volume = np.round(k.volume, qd) if qd is not None else k.volume
    taker_base = np.round(k.taker_base, qd) if qd is not None else k.taker_base
    rows: list[list[object]] = []
    for t, o, h, lo, c, v, qv, n, tb, tq in zip(
        k.open_ms.tolist(), k.open.tolist(), k.high.tolist(), k.low.tolist(), k.close.tolist(),
        volume.tolist(), np.round(k.quote_volume, 8).tolist(), k.trades.tolist(), taker_base.tolist(),
        np.round(k.taker_quote, 8).tolist(), strict=True,
    ):
        rows.append([
            t, format_number(o, dp), format_number(h, dp), format_number(lo, dp), format_number(c, dp),
            exact_str(v), t + interval_ms - 1, exact_str(qv), n, exact_str(tb), exact_str(tq), "0",
        ])
    return rows
