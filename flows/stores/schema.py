"""The stored tables, described once: names, columns (in order), keys; and the rows of the history tables.

Every store writes and reads these tables (TimescaleDB hypertables of ``sql/migrations``,
parquet files of the ``local`` profile); the Feast sources read the same columns, and
``tests/integration/test_store_schema.py`` checks this description against the migrations.
A column the database fills itself (a default, a generated key) is listed as ``stored``
only: writers never send it.

``created_at`` of the feature tables equals the event time so that the same input always
gives byte-identical rows (Feast only uses it to break ties between rows of one entity
and timestamp).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from operator import itemgetter
from typing import Any

from flows.feature_groups import GROUPS
from flows.records import Bar, DeadLetter, FeatureRow, utc


@dataclass(frozen=True)
class Table:
    """One stored table: the columns writers send (in order), its natural key and database-side columns."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    stored: tuple[str, ...] = ()  # columns only the database fills (defaults, generated keys)
    json: frozenset[str] = frozenset()  # columns holding JSON (jsonb in TimescaleDB, text in parquet)

    @property
    def write_key(self) -> tuple[str, ...] | None:
        """The key writers merge on (``None``: the key holds a generated column, the database dedupes)."""
        return None if set(self.key) & set(self.stored) else self.key


BAR_COLUMNS: tuple[str, ...] = ("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume",
                                "quote_volume", "trade_count", "vwap", "taker_buy_volume")
FEATURE_COLUMNS: dict[str, tuple[str, ...]] = {  # every feature group of the registry (flows/feature_groups.py)
    g.table: ("symbol", "timeframe", g.timestamp_field, "created_at", *g.features) for g in GROUPS
}
DEAD_LETTER_COLUMNS: tuple[str, ...] = ("ts", "source", "symbol", "reason", "payload")
_SERIES_KEY = ("symbol", "timeframe", "ts")

HISTORY: dict[str, Table] = {
    "bars": Table("bars", BAR_COLUMNS, _SERIES_KEY, stored=("run_id",)),
    **{t: Table(t, cols, _SERIES_KEY, stored=("run_id",)) for t, cols in FEATURE_COLUMNS.items()},
    "dead_letters": Table("dead_letters", DEAD_LETTER_COLUMNS, ("source", "ts", "payload_md5"),
                          stored=("payload_md5", "run_id", "created_at")),
}
DECISIONS: dict[str, Table] = {
    "predictions": Table("predictions", ("symbol", "timeframe", "ts", "model", "model_version", "prob_up",
                                         "confidence", "signal", "payload", "run_id"),
                         ("symbol", "timeframe", "ts", "model"), stored=("created_at",), json=frozenset({"payload"})),
    "orders": Table("orders", ("client_order_id", "ts", "symbol", "side", "type", "qty", "price", "status",
                               "exchange_order_id", "reason", "mode", "run_id", "updated_at"),
                    ("client_order_id", "ts")),
    "fills": Table("fills", ("fill_id", "client_order_id", "ts", "symbol", "side", "qty", "price", "fee",
                             "fee_currency", "liquidity", "run_id"), ("fill_id", "ts"), stored=("created_at",)),
    "risk_events": Table("risk_events", ("symbol", "ts", "rule", "reason", "requested", "allowed", "run_id"),
                         ("symbol", "ts", "rule"), stored=("created_at",)),
    "portfolio_state": Table("portfolio_state", ("ts", "run_id", "equity", "cash", "gross_exposure", "net_exposure",
                                                 "drawdown", "realized_pnl", "unrealized_pnl", "daily_pnl",
                                                 "positions", "leverage", "state"),
                             ("run_id", "ts"), json=frozenset({"positions", "state"})),
}
TABLES: dict[str, Table] = {**HISTORY, **DECISIONS}

def last_row(table: str, frame: Any) -> dict[str, Any] | None:
    """Return a frame's last row as a dict with the table's JSON columns decoded (``None`` when empty)."""
    import json

    if frame.empty:
        return None
    row: dict[str, Any] = frame.iloc[-1].to_dict()
    for c in TABLES[table].json:
        row[c] = json.loads(row[c]) if isinstance(row[c], (str, bytes)) else row[c]
    return row


def time_order(table: str) -> tuple[str, ...]:
    """Return the columns that order a table's rows in time: ``ts``, then the rest of its key (ties broken)."""
    return ("ts", *(k for k in KEYS[table] if k != "ts"))


FEATURE_GROUPS: tuple[str, ...] = ("bars", "bar_features", "cross_asset_features")  # the dashboard's freshness rows
COLUMNS: dict[str, tuple[str, ...]] = {t.name: t.columns for t in TABLES.values()}
KEYS: dict[str, tuple[str, ...]] = {t.name: t.key for t in TABLES.values()}
JSON_COLUMNS: frozenset[str] = frozenset().union(*(t.json for t in TABLES.values()))


def last_per_key(table: str, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Return ``rows`` with only the last row of each key (in the order of those last rows)."""
    cols = COLUMNS[table]
    at = [cols.index(k) for k in KEYS[table]]
    last = {tuple([r[i] for i in at]): n for n, r in enumerate(rows)}
    if len(last) == len(rows):
        return rows
    keep = set(last.values())
    return [r for n, r in enumerate(rows) if n in keep]


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
