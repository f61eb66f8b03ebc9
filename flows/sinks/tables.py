"""Rows of the stored tables, shared by the TimescaleDB and the parquet sinks.

Column names and order here equal the hypertables in ``sql/migrations``; the
Feast sources read the same columns.  ``created_at`` equals the event time so
that the same input always gives byte-identical rows (Feast only uses it to
break ties between rows of one entity and timestamp).
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from operator import itemgetter
from typing import Any

from flows.feature_catalog import BAR_FEATURES, CROSS_FEATURES
from flows.records import Bar, DeadLetter, FeatureRow, utc

BAR_COLUMNS: tuple[str, ...] = ("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume",
                                "quote_volume", "trade_count", "vwap", "taker_buy_volume")
FEATURE_COLUMNS: dict[str, tuple[str, ...]] = {
    "bar_features": ("symbol", "timeframe", "ts", "created_at", *BAR_FEATURES),
    "cross_asset_features": ("symbol", "timeframe", "ts", "created_at", *CROSS_FEATURES),
}
DEAD_LETTER_COLUMNS: tuple[str, ...] = ("ts", "source", "symbol", "reason", "payload")
KEYS: dict[str, tuple[str, ...]] = {
    "bars": ("symbol", "timeframe", "ts"),
    "bar_features": ("symbol", "timeframe", "ts"),
    "cross_asset_features": ("symbol", "timeframe", "ts"),
}


# Rows of one bar time share their timestamp (every symbol, bars and both feature
# tables): converting each distinct time once saves most datetime allocations.
_utc = lru_cache(maxsize=1024)(utc)
_VALUES = {table: itemgetter(*cols[4:]) for table, cols in FEATURE_COLUMNS.items()}


def bar_row(bar: Bar) -> tuple[Any, ...]:
    """Return a bar as a row of ``bars`` (``ts`` is the bar's open time)."""
    return (bar.symbol, bar.timeframe, _utc(bar.ts), bar.open, bar.high, bar.low, bar.close, bar.volume,
            bar.quote_volume, bar.trade_count, bar.vwap, bar.taker_buy_volume)


def feature_row(row: FeatureRow) -> tuple[Any, ...]:
    """Return features as a row of their table (``ts`` is the time they became known)."""
    ts: datetime = _utc(row.ts)
    return (row.symbol, row.timeframe, ts, ts, *_VALUES[row.table](row.values))


def dead_letter_row(d: DeadLetter) -> tuple[Any, ...]:
    """Return a dead letter as a row of ``dead_letters``."""
    return (utc(d.ts), d.source, d.symbol, d.reason, d.payload)
