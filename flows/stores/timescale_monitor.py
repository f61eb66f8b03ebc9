"""The dashboard's reads of the ``timescale`` profile: SQL that aggregates or limits before rows leave the server.

Every query returns at most what a page shows: ``time_bucket`` + ``last()`` for curves,
``ORDER BY ts DESC LIMIT n`` for recent rows (served by the tables' time indexes),
``GROUP BY`` for totals, and for freshness one ``max(ts)`` per (symbol, timeframe),
answered from the primary key index's newest chunk.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from psycopg import sql

from flows.stores.schema import COLUMNS, FEATURE_GROUPS, last_row, time_order
from flows.timeframes import timeframe_ms

if TYPE_CHECKING:
    import pandas as pd


class TimescaleMonitor:
    """:class:`flows.stores.base.MonitorReader` over the hypertables (one short connection per call)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def _query(self, query: Any, params: Any = None, columns: Sequence[str] | None = None) -> pd.DataFrame:
        import pandas as pd
        import psycopg

        with psycopg.connect(self.dsn) as conn:
            cur = conn.execute(query, params)
            cols = list(columns) if columns else [d.name for d in cur.description or ()]
            return pd.DataFrame(cur.fetchall(), columns=cols)

    def _newest(self, table: str, run: str, limit: int) -> pd.DataFrame:
        cols = COLUMNS[table]
        order = time_order(table)
        q = sql.SQL("SELECT * FROM (SELECT {} FROM {} WHERE run_id = %s ORDER BY {} LIMIT %s) t ORDER BY {}").format(
            sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(table),
            sql.SQL(", ").join(sql.SQL("{} DESC").format(sql.Identifier(c)) for c in order),
            sql.SQL(", ").join(map(sql.Identifier, order)))
        return self._query(q, (run, limit), cols)

    def runs(self) -> pd.DataFrame:
        """Return ``run_id, first, last`` per run, the latest run first.

        The distinct runs by a skip scan of the primary key (run_id, ts): one index probe per
        run and chunk instead of reading every row; then each run's ends from the same index.
        """
        return self._query(
            "WITH RECURSIVE r AS (SELECT min(run_id) AS run_id FROM portfolio_state UNION ALL "
            "SELECT (SELECT min(run_id) FROM portfolio_state p WHERE p.run_id > r.run_id) FROM r "
            "WHERE r.run_id IS NOT NULL) "
            "SELECT r.run_id, (SELECT min(ts) FROM portfolio_state p WHERE p.run_id = r.run_id), "
            "(SELECT max(ts) FROM portfolio_state p WHERE p.run_id = r.run_id) AS last "
            "FROM r WHERE r.run_id IS NOT NULL ORDER BY last DESC", columns=["run_id", "first", "last"])

    def equity(self, run: str, points: int) -> pd.DataFrame:
        """Return the run's equity curve, the last row of each of about ``points`` time buckets."""
        span = self._query("SELECT min(ts), max(ts) FROM portfolio_state WHERE run_id = %s", (run,))
        first, last = span.iloc[0, 0], span.iloc[0, 1]
        cols = ["ts", "equity", "drawdown", "gross_exposure", "net_exposure"]
        if first is None or first != first:
            return self._query("SELECT " + ", ".join(cols) + " FROM portfolio_state WHERE false", columns=cols)
        width = max(timedelta(microseconds=1), (last - first) / points)
        return self._query(
            "SELECT max(ts), last(equity, ts), max(drawdown), last(gross_exposure, ts), last(net_exposure, ts) "
            "FROM portfolio_state WHERE run_id = %s GROUP BY time_bucket(%s, ts, %s) ORDER BY 1",
            (run, width, first), cols)

    def daily(self, run: str) -> pd.DataFrame:
        """Return ``day, first, last`` equity per UTC day."""
        return self._query("SELECT time_bucket('1 day', ts) AS day, first(equity, ts), last(equity, ts) "
                           "FROM portfolio_state WHERE run_id = %s GROUP BY day ORDER BY day", (run,),
                           ["day", "first", "last"])

    def latest_state(self, run: str) -> dict[str, Any] | None:
        """Return the run's last ``portfolio_state`` row (JSON columns decoded by psycopg)."""
        return last_row("portfolio_state", self._newest("portfolio_state", run, 1))

    def symbol_flows(self, run: str) -> pd.DataFrame:
        """Return the run's fills summed per symbol (``bought``/``sold``: quote notional)."""
        return self._query(
            "SELECT symbol, count(*), "
            "coalesce(sum(qty * price) FILTER (WHERE side = 'buy'), 0), "
            "coalesce(sum(qty * price) FILTER (WHERE side <> 'buy'), 0), sum(fee), "
            "sum(CASE WHEN side = 'buy' THEN qty ELSE -qty END) "
            "FROM fills WHERE run_id = %s GROUP BY symbol ORDER BY symbol", (run,),
            ["symbol", "fills", "bought", "sold", "fees", "net_qty"])

    def fills(self, run: str, limit: int, timeframe: str) -> pd.DataFrame:
        """Return the last ``limit`` fills with the decision time and price of their order."""
        cols = COLUMNS["fills"]
        tf = timedelta(milliseconds=timeframe_ms(timeframe))
        q = sql.SQL(
            "SELECT f.*, o.decided, b.close AS decision_price FROM "
            "(SELECT {} FROM fills WHERE run_id = %s ORDER BY ts DESC, fill_id DESC LIMIT %s) f "
            "LEFT JOIN LATERAL (SELECT min(ts) AS decided FROM orders o "
            "  WHERE o.client_order_id = f.client_order_id AND o.ts <= f.ts) o ON true "
            "LEFT JOIN bars b ON b.symbol = f.symbol AND b.timeframe = %s AND b.ts = o.decided - %s "
            "ORDER BY f.ts, f.fill_id").format(sql.SQL(", ").join(map(sql.Identifier, cols)))
        df = self._query(q, (run, limit, timeframe, tf), [*cols, "decided", "decision_price"])
        df["decision_price"] = df["decision_price"].astype(float)
        return df

    def orders(self, run: str, limit: int) -> pd.DataFrame:
        """Return the last ``limit`` orders."""
        return self._newest("orders", run, limit)

    def predictions(self, run: str, limit: int) -> pd.DataFrame:
        """Return the last ``limit`` predictions (``payload`` as JSON text)."""
        df = self._newest("predictions", run, limit)
        df["payload"] = [p if isinstance(p, str) or p is None else json.dumps(p) for p in df["payload"]]
        return df

    def risk_events(self, run: str, limit: int) -> pd.DataFrame:
        """Return the last ``limit`` risk events."""
        return self._newest("risk_events", run, limit)

    def risk_counts(self, run: str) -> pd.DataFrame:
        """Return ``rule, events, last`` per rule, most frequent first."""
        return self._query("SELECT rule, count(*), max(ts) FROM risk_events WHERE run_id = %s GROUP BY rule "
                           "ORDER BY 2 DESC, 1", (run,), ["rule", "events", "last"])

    def freshness(self, symbols: Sequence[str], timeframes: Sequence[str]) -> pd.DataFrame:
        """Return the newest stored time per group, timeframe and symbol."""
        import pandas as pd

        parts = [sql.SQL("SELECT {g}, s.symbol, t.tf, (SELECT max(ts) FROM {table} x "
                         "WHERE x.symbol = s.symbol AND x.timeframe = t.tf) FROM unnest(%(s)s::text[]) s(symbol), "
                         "unnest(%(t)s::text[]) t(tf)").format(g=sql.Literal(g), table=sql.Identifier(g))
                 for g in FEATURE_GROUPS]
        df = self._query(sql.SQL(" UNION ALL ").join(parts), {"s": list(symbols), "t": list(timeframes)},
                         ["group", "symbol", "timeframe", "last"])
        df["last"] = pd.to_datetime(df["last"], utc=True)
        order = {g: i for i, g in enumerate(FEATURE_GROUPS)}
        df = df.sort_values(["group", "timeframe", "symbol"], key=lambda c: c.map(order) if c.name == "group" else c)
        return df[["group", "timeframe", "symbol", "last"]].reset_index(drop=True)
