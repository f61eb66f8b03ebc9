"""Event-time OHLCV bars as a pure state machine.

One :class:`BarBuilder` per (symbol, timeframe).  A bar ``[t, t + tf)`` closes
when the event-time watermark (the latest trade time seen) reaches
``t + tf + allowed_lateness``: with the default lateness of zero, the first
trade past the boundary closes the bar.  A trade for a bar that is still open
amends it, even when it arrives out of order.  A trade for a bar already closed
is *late*: it is returned to the caller, never silently dropped, so the flow can
count and keep it.  Gaps between trades become empty bars at the last close
(volume 0) so every symbol has one bar per period, at most ``max_empty_bars`` in
a row: past that the gap stays open (recorded in :attr:`BarBuilder.unfilled`),
so one implausible trade time cannot make millions of bars.  A gap in the
stream is the websocket source's to fill from REST, not the bar builder's.

Volumes are summed exactly, as integers: quantity ``q`` counts ``round(q * 1e8)`` units
(Binance's lot step is at least 1e-8; a finer quantity, which Binance never sends, is
rounded to it), quote volume ``round(p * 1e16) * round(q * 1e8)`` units of 1e-24 (any
fixed integer of the price would do: the trades of one aggregate share their price).
A float sum would depend on how trades are grouped; an exact one does not, so a bar
rebuilt from aggregated trades (one price, one taker side, the summed quantity;
:mod:`flows.sources.rest_fill`) equals the bar of the single trades bit for bit.  The
floats of a closed bar are the correctly rounded quotients of those integers.

The state is plain data (:meth:`BarBuilder.snapshot`) for Bytewax recovery.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flows.records import Bar, Trade
from flows.timeframes import timeframe_ms

# Accumulator slots of an open bar, kept as a list for speed.
_O, _H, _L, _C, _V, _QV, _N, _TB = range(8)
MAX_EMPTY_BARS = 1440  # a day of 1m bars
UNITS = 100_000_000  # quantities count in steps of 1e-8 (see the module docstring)
PRICE_UNITS = 10**16  # prices, in the quote volume
_SCALE, _P_SCALE = float(UNITS), float(PRICE_UNITS)
_QV_UNITS = UNITS * PRICE_UNITS


def _to_units(acc: list) -> list:
    """Convert an open bar of a snapshot taken before exact sums (float volumes) to units."""
    acc = list(acc)
    acc[_V], acc[_TB] = round(acc[_V] * _SCALE), round(acc[_TB] * _SCALE)
    acc[_QV] = round(acc[_QV] * _SCALE * _P_SCALE)
    return acc


class BarBuilder:
    """Build bars of one timeframe for one symbol from trades in event time."""

    def __init__(
        self,
        symbol: str,
        timeframe: str,
        allowed_lateness_ms: int = 0,
        fill_empty: bool = True,
        state: dict[str, Any] | None = None,
        max_empty_bars: int = MAX_EMPTY_BARS,
    ) -> None:
        self.symbol = symbol
        self.timeframe = timeframe
        self.tf_ms = timeframe_ms(timeframe)
        self.lateness_ms = allowed_lateness_ms
        self.fill_empty = fill_empty
        self.max_empty_bars = max_empty_bars
        # gaps [start, end) left without empty bars (more than max_empty_bars); the caller drains it
        self.unfilled: list[tuple[int, int]] = []
        state = state or {}
        # open bars by start time; values are [o, h, l, c, v, qv, n, taker_buy_v], v, qv and taker_buy_v in units
        exact = state.get("units") == UNITS
        self.open: dict[int, list] = {int(k): list(v) if exact else _to_units(v) for k, v in state.get("open", {}).items()}
        self.watermark: int = state.get("watermark", -1)
        self.closed_until: int | None = state.get("closed_until")  # end of the last closed bar
        self.last_close: float | None = state.get("last_close")

    def snapshot(self) -> dict[str, Any]:
        """Return the state as plain data."""
        return {
            "open": {k: list(v) for k, v in self.open.items()},
            "units": UNITS,
            "watermark": self.watermark,
            "closed_until": self.closed_until,
            "last_close": self.last_close,
        }

    def update(self, trades: Iterable[Trade]) -> tuple[list[Bar], list[Trade]]:
        """Add trades (of this symbol) and return the bars they close and the late trades."""
        tf, lateness = self.tf_ms, self.lateness_ms
        opened = self.open
        closed: list[Bar] = []
        late: list[Trade] = []
        closed_until, watermark = self.closed_until, self.watermark
        # The earliest moment at which some open bar is due to close.
        due = min(opened) + tf + lateness if opened else None
        # Consecutive trades mostly fall into one bar: remember the open bar [lo, hi)
        # the previous trade went to and skip the bar lookup and lateness test for it.
        lo = hi = 0
        acc: list = []
        scale, p_scale = _SCALE, _P_SCALE
        last_price, price_units = None, 0
        for tr in trades:
            _, _, ts, price, qty, buyer_is_maker = tr
            if not lo <= ts < hi:
                start = ts - ts % tf
                if closed_until is not None and start < closed_until:
                    late.append(tr)
                    continue
                lo, hi = start, start + tf
                acc = opened.get(start)  # type: ignore[assignment]
                if acc is None:
                    # An empty bar that the amendment below turns into this trade's bar
                    # (adding to 0.0 is exact, so the sums equal starting from the trade).
                    acc = opened[start] = [price, price, price, price, 0, 0, 0, 0]
                    if due is None or hi + lateness < due:
                        due = hi + lateness
            if price > acc[_H]:
                acc[_H] = price
            elif price < acc[_L]:
                acc[_L] = price
            acc[_C] = price
            units = round(qty * scale)
            if price != last_price:  # runs of one price are common (the fills of one order)
                last_price, price_units = price, round(price * p_scale)
            acc[_V] += units
            acc[_QV] += price_units * units
            acc[_N] += 1
            if not buyer_is_maker:
                acc[_TB] += units
            if ts > watermark:
                watermark = ts
                # Close as we go, so later trades of the same batch are judged late correctly.
                if due is not None and ts >= due:
                    closed.extend(self._close_through(ts))
                    closed_until = self.closed_until
                    due = min(opened) + tf + lateness if opened else None
                    lo = hi = 0  # the remembered bar may have closed
        self.watermark = watermark
        return closed, late

    def advance(self, watermark_ms: int) -> list[Bar]:
        """Close bars up to an external watermark (for example wall-clock time when a symbol is quiet)."""
        if watermark_ms > self.watermark:
            self.watermark = watermark_ms
        return self._close_through(self.watermark)

    def _close_through(self, watermark: int) -> list[Bar]:
        tf, lateness = self.tf_ms, self.lateness_ms
        out: list[Bar] = []
        due = watermark - lateness - tf  # a bar starting at or before this is due
        due_end = (due // tf + 1) * tf  # the start of the first bar not due
        while True:
            t = self.closed_until
            if t is None or self.last_close is None or not self.fill_empty:
                if not self.open:
                    break
                t = min(self.open)
            if t > due:
                break
            acc = self.open.pop(t, None)
            if acc is None:
                c = self.last_close
                assert c is not None  # an empty bar is only filled after a real one closed
                # The run of empty bars up to the next open bar or the first bar not due.
                end = min(min(self.open), due_end) if self.open else due_end
                stop = min(end, t + self.max_empty_bars * tf)
                sym, tfname = self.symbol, self.timeframe
                out.extend(Bar(sym, tfname, s, c, c, c, c, 0.0, 0.0, 0, c, 0.0) for s in range(t, stop, tf))
                if stop < end:
                    self.unfilled.append((stop, end))
                self.closed_until = end
                continue
            v, qv = acc[_V], acc[_QV]
            # int / int is correctly rounded; a bar of sub-unit trades only (none from Binance) has v = 0
            out.append(Bar(self.symbol, self.timeframe, t, acc[_O], acc[_H], acc[_L], acc[_C],
                           v / UNITS, qv / _QV_UNITS, int(acc[_N]), qv / (v * PRICE_UNITS) if v else acc[_C],
                           acc[_TB] / UNITS))
            self.last_close = acc[_C]
            self.closed_until = t + tf
        return out
