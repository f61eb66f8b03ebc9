"""Decision sinks: predictions, orders, fills, risk events and portfolio state.

``timescale`` profile: each batch is upserted into the hypertables (``sql/migrations``
0003, 0004, 0008) through ``infra.pgcopy.copy_upsert`` in one transaction, then
every record is published to a Redis stream ``cryptostream:<table>``
(``XADD ... MAXLEN ~ N``) for dashboards and other consumers.  ``local`` profile:
one parquet file per table and UTC day under ``<data_dir>/decisions/<table>/``,
merged on the table's key with the offline store's upsert (newest row wins) and
replaced atomically.  Either way a replayed batch rewrites the same rows.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from flows.operators.decisions import PortfolioRow
from flows.operators.scoring import Prediction
from flows.records import utc
from flows.settings import Settings
from flows.sinks.parquet_store import _upsert

COLUMNS: dict[str, tuple[str, ...]] = {
    "predictions": ("symbol", "timeframe", "ts", "model", "model_version", "prob_up", "confidence", "signal",
                    "payload", "run_id"),
    "orders": ("client_order_id", "ts", "symbol", "side", "type", "qty", "price", "status", "exchange_order_id",
               "reason", "mode", "run_id", "updated_at"),
    "fills": ("fill_id", "client_order_id", "ts", "symbol", "side", "qty", "price", "fee", "fee_currency",
              "liquidity", "run_id"),
    "risk_events": ("symbol", "ts", "rule", "reason", "requested", "allowed", "run_id"),
    "portfolio_state": ("ts", "run_id", "equity", "cash", "gross_exposure", "net_exposure", "drawdown",
                        "realized_pnl", "unrealized_pnl", "daily_pnl", "positions", "leverage", "state"),
}
KEYS: dict[str, tuple[str, ...]] = {
    "predictions": ("symbol", "timeframe", "ts", "model"), "orders": ("client_order_id", "ts"),
    "fills": ("fill_id", "ts"), "risk_events": ("symbol", "ts", "rule"), "portfolio_state": ("run_id", "ts"),
}
JSON_COLUMNS = {"payload", "positions", "state"}
_TS = pa.timestamp("us", tz="UTC")
_NUMERIC = {"prob_up", "confidence", "qty", "price", "fee", "requested", "allowed", "equity", "cash",
            "gross_exposure", "net_exposure", "drawdown", "realized_pnl", "unrealized_pnl", "daily_pnl", "leverage"}


def _arrow_type(column: str) -> pa.DataType:
    if column in ("ts", "updated_at"):
        return _TS
    if column == "signal":
        return pa.int64()
    return pa.float64() if column in _NUMERIC else pa.string()


# Parquet files of the local profile: fixed column types, so a 0 written as an int in one
# batch and 120.3 in the next land in one column type (JSON columns as text).
SCHEMAS: dict[str, pa.Schema] = {t: pa.schema([(c, _arrow_type(c)) for c in cols]) for t, cols in COLUMNS.items()}


def _num(x: Any) -> float | None:
    x = float(x)
    return None if x != x else x  # NaN -> NULL


def rows_by_table(items: Iterable[Any], run_id: str, mode: str) -> dict[str, list[tuple[Any, ...]]]:
    """Turn decision records into rows per table (others, e.g. status lines, are skipped)."""
    out: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for it in items:
        if isinstance(it, Prediction):
            payload = {"members": {k: _num(v) for k, v in it.probabilities.items()},
                       "rl_target": _num(it.rl_target), "versions": it.versions}
            out["predictions"].append((it.symbol, it.timeframe, utc(it.ts), "ensemble",
                                       it.versions.get("ensemble", "?"), _num(it.probability),
                                       _num(it.confidence), int(it.signal), payload, run_id))
        elif isinstance(it, PortfolioRow):
            s = it.state
            out["portfolio_state"].append((utc(it.ts), run_id, s["equity"], s["cash"], s.get("gross_exposure"),
                                           s.get("net_exposure"), s.get("drawdown"), s.get("realized_pnl"),
                                           s.get("unrealized_pnl"), s.get("daily_pnl"),
                                           dict(s.get("positions", {})), s.get("leverage"), s.get("full")))
        elif hasattr(it, "trade_id") and hasattr(it, "liquidity"):  # flows.execution.orders.Fill
            out["fills"].append((str(it.trade_id), it.client_order_id, utc(it.ts), it.symbol, it.side, it.qty,
                                 it.price, it.fee, it.fee_asset, it.liquidity, run_id))
        elif hasattr(it, "rule") and hasattr(it, "allowed"):  # flows.risk Rejection
            out["risk_events"].append((it.symbol, utc(it.bar_ts), it.rule, it.reason, _num(it.requested),
                                       _num(it.allowed), run_id))
        elif hasattr(it, "client_order_id") and hasattr(it, "intent"):  # flows.execution.orders.Order
            out["orders"].append(order_row(it, run_id, mode))
    return out


def _orjson_text(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def order_row(order: Any, run_id: str, mode: str) -> tuple[Any, ...]:
    """Return an ``orders`` row; ``ts`` is the decision bar's time, so it never moves between updates."""
    intent = order.intent
    price = intent.limit_price if intent.limit_price is not None else intent.stop_price
    status = getattr(order.status, "value", order.status)
    updated = getattr(order, "updated_ts", None) or intent.bar_ts
    reason = f"{intent.leg}: {intent.reason}"
    if getattr(order, "reject_reason", None):
        reason += f" | rejected: {order.reject_reason}"
    return (order.client_order_id, utc(intent.bar_ts), intent.symbol, intent.side, intent.order_type, intent.qty,
            price, str(status), getattr(order, "exchange_id", None), reason, mode,
            run_id, utc(int(updated)))


class _Timescale(StatelessSinkPartition[Any]):
    def __init__(self, settings: Settings, maxlen: int) -> None:
        import psycopg
        import redis

        from infra.pgcopy import copy_upsert

        assert settings.timescale_dsn is not None and settings.redis_url is not None
        self.copy_upsert, self.run_id, self.mode, self.maxlen = copy_upsert, settings.run_id(), settings.mode, maxlen
        self.conn = psycopg.connect(settings.timescale_dsn.get_secret_value())
        from psycopg.types.json import set_json_dumps

        set_json_dumps(_orjson_text, context=self.conn)  # jsonb columns: orjson instead of json.dumps
        self.redis = redis.Redis.from_url(settings.redis_url.get_secret_value())

    def write_batch(self, items: list[Any]) -> None:
        from psycopg.types.json import Jsonb

        tables = rows_by_table(items, self.run_id, self.mode)
        with self.conn.transaction():
            for table, rows in tables.items():
                cols = COLUMNS[table]
                jcols = [i for i, c in enumerate(cols) if c in JSON_COLUMNS]
                fixed = [tuple(Jsonb(v) if i in jcols and v is not None else v for i, v in enumerate(r))
                         for r in rows]
                self.copy_upsert(self.conn, table, cols, fixed, KEYS[table])
        pipe = self.redis.pipeline(transaction=False)
        for table, rows in tables.items():
            for r in rows:
                doc = orjson.dumps(dict(zip(COLUMNS[table], r, strict=True)), option=orjson.OPT_SERIALIZE_NUMPY)
                pipe.xadd(f"cryptostream:{table}", {"data": doc}, maxlen=self.maxlen, approximate=True)
        pipe.execute()

    def close(self) -> None:
        self.conn.close()
        self.redis.close()


class _Parquet(StatelessSinkPartition[Any]):
    def __init__(self, settings: Settings) -> None:
        self.root = Path(settings.data_dir) / "decisions"
        self.run_id, self.mode = settings.run_id(), settings.mode

    def write_batch(self, items: list[Any]) -> None:
        for table, rows in rows_by_table(items, self.run_id, self.mode).items():
            write_parquet(self.root, table, rows)

    def close(self) -> None:
        return None


def write_parquet(root: Path, table: str, rows: list[tuple[Any, ...]]) -> None:
    """Merge ``rows`` into ``<root>/<table>/<day>.parquet`` files (JSON columns as text)."""
    cols = COLUMNS[table]
    ts_at = cols.index("ts")
    by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        doc = {c: (orjson.dumps(v).decode() if c in JSON_COLUMNS and v is not None else v)
               for c, v in zip(cols, r, strict=True)}
        by_day[r[ts_at].strftime("%Y-%m-%d")].append(doc)
    for day, docs in by_day.items():
        path = root / table / f"{day}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        new = pa.Table.from_pylist(docs, schema=SCHEMAS[table])
        merged = _upsert(pq.read_table(path) if path.exists() else None, new, KEYS[table])
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(merged, tmp)
        os.replace(tmp, path)


class DecisionSink(DynamicSink[Any]):
    """Write decision records to the profile's store (and Redis streams in ``timescale``)."""

    def __init__(self, settings: Settings, stream_maxlen: int = 100_000) -> None:
        """Remember the settings; connections open per worker in :meth:`build`."""
        self.settings, self.stream_maxlen = settings, stream_maxlen

    def build(self, step_id: str, worker_index: int, worker_count: int) -> StatelessSinkPartition[Any]:
        """Open this worker's writer."""
        if self.settings.profile == "timescale":
            return _Timescale(self.settings, self.stream_maxlen)
        return _Parquet(self.settings)
