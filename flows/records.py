"""Small typed records that travel through the flows.

Times inside the flow are integers: milliseconds since the Unix epoch, UTC by
definition.  They become timezone-aware ``datetime`` objects only at the sinks,
which keeps the per-trade path free of object allocation.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import NamedTuple


class Trade(NamedTuple):
    """One exchange trade."""

    symbol: str
    trade_id: int
    ts: int
    price: float
    qty: float
    buyer_is_maker: bool


class Bar(NamedTuple):
    """One closed OHLCV bar; ``ts`` is the bar's open time, the bar covers ``[ts, ts + tf)``."""

    symbol: str
    timeframe: str
    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    trade_count: int
    vwap: float
    taker_buy_volume: float


class DeadLetter(NamedTuple):
    """An input that could not be used, kept with the reason it was refused."""

    source: str
    symbol: str | None
    ts: int
    reason: str
    payload: str


def utc(ts_ms: int) -> datetime:
    """Return the timezone-aware UTC datetime of an epoch-milliseconds timestamp."""
    return datetime.fromtimestamp(ts_ms / 1000.0, tz=timezone.utc)


class FeatureRow(NamedTuple):
    """Features of one symbol known at ``ts`` (the bar's close), for one table."""

    table: str
    symbol: str
    timeframe: str
    ts: int
    values: dict[str, float]


class BarReturn(NamedTuple):
    """A symbol's one-bar log return at a bar's close, the input of the cross-asset step."""

    symbol: str
    timeframe: str
    ts: int
    ret_1: float
