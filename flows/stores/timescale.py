"""The ``timescale`` profile's stores: the hypertables of ``sql/migrations`` through psycopg 3.

Writes go through COPY into a staging table and an upsert on the natural key
(``flows.stores.pgcopy.copy_upsert``), one transaction per batch, so a replay or a restart
never duplicates a row.  JSON columns arrive encoded (bytes) and are sent as they are.

A server that goes away (a restart, a dropped connection) does not stop the flow: the
writer reconnects and writes the same batch again (:mod:`flows.stores.retry`) for up to
``stores.write_retry_s``, while the flow waits, so no row is lost and none is duplicated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from flows.stores.base import HistoryTables, Tables
from flows.stores.config import StoreConfig
from flows.stores.retry import pg_outage, retry_through_outage
from flows.stores.schema import COLUMNS, TABLES, last_per_key

if TYPE_CHECKING:
    import pandas as pd


def _orjson_passthrough(obj: Any) -> bytes:
    """psycopg's JSON dumps: bytes are JSON already encoded by the decision sink."""
    return obj if isinstance(obj, bytes) else orjson.dumps(obj)


def connect(dsn: str) -> Any:
    """Return a psycopg connection whose jsonb parameters may be encoded JSON bytes."""
    import psycopg
    from psycopg.types.json import set_json_dumps

    conn = psycopg.connect(dsn)
    set_json_dumps(_orjson_passthrough, context=conn)
    return conn


class TimescaleHistory:
    """History writer: each :meth:`write` is one transaction (nothing buffered), retried through an outage."""

    what = "TimescaleDB history"

    def __init__(self, dsn: str, config: StoreConfig | None = None) -> None:
        from flows.stores.pgcopy import copy_upsert

        self.copy_upsert = copy_upsert
        self.dsn = dsn
        self.config = config or StoreConfig()
        self.conn: Any = connect(dsn)  # unreachable at start: a configuration problem, said at once

    def _connect(self) -> Any:
        if self.conn is None:
            self.conn = connect(self.dsn)
        return self.conn

    def _drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()

    def write(self, tables: Tables) -> None:
        """Upsert every table's rows in one transaction (again on a new connection after an outage)."""
        retry_through_outage(self.what, lambda: self._write(tables), pg_outage, self._drop, self.config)

    def _write(self, tables: Tables) -> None:
        conn = self._connect()
        with conn.transaction():
            for table, rows in tables.items():
                self.copy_upsert(conn, table, COLUMNS[table], rows, TABLES[table].write_key)

    def flush(self) -> None:
        """Nothing is buffered."""

    def close(self) -> None:
        """Close the connection."""
        self._drop()


class TimescaleDecisions(TimescaleHistory):
    """Decision writer: each :meth:`write` is one transaction, run by the sink's writer thread."""

    background = True
    what = "TimescaleDB decisions"

    def _write(self, tables: Tables) -> None:
        conn = self._connect()
        with conn.transaction():
            for table, rows in tables.items():
                # The last version of each key only (an order placed and filled within the batch): what the
                # merge would keep, and the plain COPY then goes through unless the key is stored already.
                self.copy_upsert(conn, table, COLUMNS[table], last_per_key(table, rows), TABLES[table].key)


class TimescaleReader(HistoryTables):
    """Reads bars and decision records from TimescaleDB (one connection per call)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def _history(self, table: str, symbols: Sequence[str], timeframe: str, start: pd.Timestamp,
                 end: pd.Timestamp, columns: Sequence[str]) -> pd.DataFrame:
        import pandas as pd
        import psycopg
        from psycopg import sql

        cols = list(columns)
        q = sql.SQL("SELECT {} FROM {} WHERE timeframe = %s AND symbol = ANY(%s) AND ts >= %s AND ts < %s "
                    "ORDER BY symbol, ts").format(sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(table))
        with psycopg.connect(self.dsn) as conn:
            cur = conn.execute(q, (timeframe, list(symbols), start.to_pydatetime(), end.to_pydatetime()))
            return pd.DataFrame(cur.fetchall(), columns=cols)

    def table(self, table: str, since: pd.Timestamp | None = None) -> pd.DataFrame:
        """Return every stored row of a decision table (from ``since`` on, when given), sorted by time."""
        import pandas as pd
        import psycopg
        from psycopg import sql

        cols = list(COLUMNS[table])
        q = sql.SQL("SELECT {} FROM {} WHERE %(since)s::timestamptz IS NULL OR ts >= %(since)s ORDER BY ts").format(
            sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(table))
        with psycopg.connect(self.dsn) as conn:
            at = since.to_pydatetime() if since is not None else None
            return pd.DataFrame(conn.execute(q, {"since": at}).fetchall(), columns=cols)
