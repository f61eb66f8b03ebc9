"""Decision sinks: predictions, orders, fills, risk events and portfolio state.

``timescale`` profile: each batch is upserted into the hypertables (``sql/migrations``
0003, 0004, 0008) through ``flows.stores.pgcopy.copy_upsert`` in one transaction, then
every record is published to a Redis stream ``cryptostream:<table>``
(``XADD ... MAXLEN ~ N``, one entry per record, added by a server-side script in one
round trip per batch) for dashboards and other consumers.  JSON columns are encoded
once, for both stores.  The rows are encoded on the flow's thread and written by
one writer thread, so a batch's database and Redis work overlaps the scoring of the
next: at most one batch is in flight, batches land in order, and the sink is a
stateful Bytewax partition whose ``snapshot`` waits for the batch in flight, so
every record of an epoch is stored before the epoch's recovery snapshot commits
(a restart resumes after what is stored; a write that failed raises at the next
``write_batch``, ``snapshot`` or ``close``, before its epoch commits).  ``local``
profile: one parquet file per table and UTC day under ``<data_dir>/decisions/<table>/``,
merged on the table's key with the offline store's upsert (newest row wins) and
replaced atomically, written when ``write_batch`` is called.  Either way a replayed
batch rewrites the same rows.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from flows.records import PortfolioRow, Prediction, utc
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


def _json(v: Any) -> bytes | None:
    """Encode a JSON column's value once (orjson: NaN becomes null); the stores take the bytes as they are."""
    return None if v is None else orjson.dumps(v)


def rows_by_table(items: Iterable[Any], run_id: str, mode: str) -> dict[str, list[tuple[Any, ...]]]:
    """Turn decision records into rows per table (others, e.g. status lines, are skipped).

    JSON columns (:data:`JSON_COLUMNS`) hold their value encoded once, as JSON bytes.
    """
    out: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    at = cache(utc)  # a batch's few bar times: each datetime made once
    preds, ports = out["predictions"], out["portfolio_state"]
    versions: dict[int, tuple[dict[str, str], orjson.Fragment]] = {}  # the bank's versions, encoded once
    for it in items:
        kind = type(it)
        if kind is Prediction:  # orjson writes NaN as null
            v = versions.get(id(it.versions))
            if v is None or v[0] is not it.versions:
                v = versions[id(it.versions)] = (it.versions, orjson.Fragment(orjson.dumps(it.versions)))
            payload = {"members": it.probabilities, "rl_target": it.rl_target, "versions": v[1]}
            preds.append((it.symbol, it.timeframe, at(it.ts), "ensemble", it.versions.get("ensemble", "?"),
                          _num(it.probability), _num(it.confidence), int(it.signal), orjson.dumps(payload), run_id))
        elif kind is PortfolioRow:
            s = it.state
            ports.append((at(it.ts), run_id, s["equity"], s["cash"], s.get("gross_exposure"),
                          s.get("net_exposure"), s.get("drawdown"), s.get("realized_pnl"), s.get("unrealized_pnl"),
                          s.get("daily_pnl"), orjson.dumps(s.get("positions", {})), s.get("leverage"),
                          _json(s.get("full"))))
        elif hasattr(it, "trade_id") and hasattr(it, "liquidity"):  # flows.records.Fill
            out["fills"].append((str(it.trade_id), it.client_order_id, at(it.ts), it.symbol, it.side, it.qty,
                                 it.price, it.fee, it.fee_asset, it.liquidity, run_id))
        elif hasattr(it, "rule") and hasattr(it, "allowed"):  # flows.risk Rejection
            out["risk_events"].append((it.symbol, at(it.bar_ts), it.rule, it.reason, _num(it.requested),
                                       _num(it.allowed), run_id))
        elif hasattr(it, "client_order_id") and hasattr(it, "intent"):  # flows.execution.orders.Order
            out["orders"].append(order_row(it, run_id, mode, at))
    return {t: rows for t, rows in out.items() if rows}


def last_per_key(table: str, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Return ``rows`` with only the last row of each key (in the order of those last rows)."""
    cols = COLUMNS[table]
    at = [cols.index(k) for k in KEYS[table]]
    last = {tuple([r[i] for i in at]): n for n, r in enumerate(rows)}
    if len(last) == len(rows):
        return rows
    keep = set(last.values())
    return [r for n, r in enumerate(rows) if n in keep]


def _orjson_passthrough(obj: Any) -> bytes:
    """psycopg's JSON dumps: bytes are JSON already encoded by :func:`rows_by_table`."""
    return obj if isinstance(obj, bytes) else orjson.dumps(obj)


def order_row(order: Any, run_id: str, mode: str, at: Any = utc) -> tuple[Any, ...]:
    """Return an ``orders`` row; ``ts`` is the decision bar's time, so it never moves between updates."""
    intent = order.intent
    price = intent.limit_price if intent.limit_price is not None else intent.stop_price
    status = getattr(order.status, "value", order.status)
    updated = getattr(order, "updated_ts", None) or intent.bar_ts
    reason = f"{intent.leg}: {intent.reason}"
    if getattr(order, "reject_reason", None):
        reason += f" | rejected: {order.reject_reason}"
    return (order.client_order_id, at(intent.bar_ts), intent.symbol, intent.side, intent.order_type, intent.qty,
            price, str(status), getattr(order, "exchange_id", None), reason, mode,
            run_id, at(int(updated)))


def stream_docs(table: str, rows: list[tuple[Any, ...]]) -> list[bytes]:
    """Return the Redis stream documents of a table's rows (JSON columns embedded as they were encoded)."""
    cols = COLUMNS[table]
    jcols = [i for i, c in enumerate(cols) if c in JSON_COLUMNS]
    dumps, fragment, opt = orjson.dumps, orjson.Fragment, orjson.OPT_SERIALIZE_NUMPY
    out = []
    for r in rows:
        doc = dict(zip(cols, r, strict=True))
        for i in jcols:
            v = r[i]
            if v is not None:
                doc[cols[i]] = fragment(v)
        out.append(dumps(doc, option=opt))
    return out


# XADD key MAXLEN ~ ARGV[1] * data ARGV[i] for each further argument; returns how many were added.
_XADD_MANY = """
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'data', ARGV[i])
end
return #ARGV - 1
"""
XADD_CHUNK = 1000  # entries per script call: keeps each call short for other Redis clients


class _Timescale(StatefulSinkPartition[Any, None]):
    def __init__(self, settings: Settings, maxlen: int) -> None:
        import psycopg
        import redis

        from flows.stores.pgcopy import copy_upsert

        assert settings.timescale_dsn is not None and settings.redis_url is not None
        self.copy_upsert, self.run_id, self.mode, self.maxlen = copy_upsert, settings.run_id(), settings.mode, maxlen
        self.conn = psycopg.connect(settings.timescale_dsn.get_secret_value())
        from psycopg.types.json import set_json_dumps

        set_json_dumps(_orjson_passthrough, context=self.conn)  # jsonb columns: the rows' encoded bytes
        self.redis = redis.Redis.from_url(settings.redis_url.get_secret_value())
        self.xadd_many = self.redis.register_script(_XADD_MANY)
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decision-sink")
        self.pending: Future[None] | None = None

    def write_batch(self, items: list[Any]) -> None:
        """Encode the batch here, wait for the batch in flight, then hand this one to the writer thread."""
        tables = rows_by_table(items, self.run_id, self.mode)
        docs = {table: stream_docs(table, rows) for table, rows in tables.items()}
        self.flush()
        self.pending = self.writer.submit(self._write, tables, docs)

    def flush(self) -> None:
        """Wait for the batch in flight; raise what its write raised."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()

    def snapshot(self) -> None:
        """Everything written so far is stored before Bytewax commits the epoch (nothing else to resume from)."""
        self.flush()

    def _write(self, tables: dict[str, list[tuple[Any, ...]]], docs: dict[str, list[bytes]]) -> None:
        with self.conn.transaction():
            for table, rows in tables.items():
                # The last version of each key only (an order placed and filled within the batch): what the
                # merge would keep, and the plain COPY then goes through unless the key is stored already.
                self.copy_upsert(self.conn, table, COLUMNS[table], last_per_key(table, rows), KEYS[table])
        # One round trip per batch: each table's entries added server-side, in order, by one script call
        # per XADD_CHUNK (the same entries as one XADD each, without a reply per entry).
        pipe = self.redis.pipeline(transaction=False)
        for table, entries in docs.items():
            for i in range(0, len(entries), XADD_CHUNK):
                self.xadd_many(keys=[f"cryptostream:{table}"], args=[self.maxlen, *entries[i:i + XADD_CHUNK]],
                               client=pipe)
        pipe.execute()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.writer.shutdown()
            self.conn.close()
            self.redis.close()


class _Parquet(StatefulSinkPartition[Any, None]):
    def __init__(self, settings: Settings) -> None:
        self.root = Path(settings.data_dir) / "decisions"
        self.run_id, self.mode = settings.run_id(), settings.mode
        self.files: dict[Path, tuple[pa.Table, os.stat_result]] = {}  # what this writer last wrote

    def write_batch(self, items: list[Any]) -> None:
        for table, rows in rows_by_table(items, self.run_id, self.mode).items():
            write_parquet(self.root, table, rows, self.files)

    def snapshot(self) -> None:
        """Each batch is in its files when ``write_batch`` returns: nothing to wait for or resume from."""

    def close(self) -> None:
        self.files.clear()


def _arrow(table: str, rows: list[tuple[Any, ...]]) -> pa.Table:
    cols, schema = COLUMNS[table], SCHEMAS[table]
    arrays = []
    for c, values in zip(cols, zip(*rows, strict=True), strict=True):
        if c in JSON_COLUMNS:  # the encoded JSON bytes, as text (UTF-8 checked by the cast)
            arrays.append(pa.array(values, pa.binary()).cast(pa.string()))
        else:
            arrays.append(pa.array(values, schema.field(c).type))
    return pa.Table.from_arrays(arrays, schema=schema)


def write_parquet(root: Path, table: str, rows: list[tuple[Any, ...]],
                  cache: dict[Path, tuple[pa.Table, os.stat_result]] | None = None) -> None:
    """Merge ``rows`` into ``<root>/<table>/<day>.parquet`` files (JSON columns as text).

    ``cache`` keeps the table last written to each file, used instead of reading it back while
    the file is unchanged; rows all later than the file's (the normal case: bar times move
    forward) are appended without the key merge.
    """
    cols, key = COLUMNS[table], KEYS[table]
    ts_at, key_at = cols.index("ts"), [cols.index(k) for k in key]
    by_day: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    days: dict[Any, str] = {}  # the rows of a batch share a few datetime objects
    for r in rows:
        t = r[ts_at]
        day = days.get(t)
        if day is None:
            day = days[t] = t.strftime("%Y-%m-%d")
        by_day[day].append(r)
    for day, day_rows in by_day.items():
        path = root / table / f"{day}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        new = _arrow(table, day_rows)
        old = _read(path, cache)
        if old is not None and old.num_rows and pc.min(new["ts"]).as_py() > pc.max(old["ts"]).as_py():
            # No key of the file can recur (every key holds ts): the same rows, in the same order, as the merge.
            new = new if new.schema == old.schema else new.cast(old.schema)
            if not _in_order_and_unique(day_rows, ts_at, key_at):
                new = _upsert(None, new, key)
            merged = pa.concat_tables([old, new])
        else:
            merged = _upsert(old, new, KEYS[table])
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(merged, tmp)
        os.replace(tmp, path)
        if cache is not None:
            cache[path] = (merged, path.stat())


def _in_order_and_unique(rows: list[tuple[Any, ...]], ts_at: int, key_at: list[int]) -> bool:
    """Return whether rows are in time order with distinct keys (then the key merge leaves them as they are)."""
    ts = list(map(itemgetter(ts_at), rows))
    return ts == sorted(ts) and len(set(map(itemgetter(*key_at), rows))) == len(rows)


def _read(path: Path, cache: dict[Path, tuple[pa.Table, os.stat_result]] | None) -> pa.Table | None:
    if not path.exists():
        return None
    kept = cache.get(path) if cache is not None else None
    if kept is not None:
        st = path.stat()
        if (st.st_mtime_ns, st.st_size, st.st_ino) == (kept[1].st_mtime_ns, kept[1].st_size, kept[1].st_ino):
            return kept[0]
    return pq.read_table(path)


PARTITION = "decisions"  # one partition: the decision records of every timeframe, in the order they come


class DecisionSink(FixedPartitionedSink[Any, None]):
    """Write decision records to the profile's store (and Redis streams in ``timescale``).

    Items are ``(key, record)`` pairs (any key: there is one partition).  The partition
    is stateful only so that Bytewax calls its ``snapshot`` at every epoch, which waits
    for the write in flight; it resumes from nothing (the stores are upserted by key).
    """

    def __init__(self, settings: Settings, stream_maxlen: int = 100_000) -> None:
        """Remember the settings; connections open in :meth:`build_part`."""
        self.settings, self.stream_maxlen = settings, stream_maxlen

    def list_parts(self) -> list[str]:
        """The single partition (every worker can open it; Bytewax places it on one)."""
        return [PARTITION]

    def part_fn(self, item_key: str) -> int:
        """Every key goes to the single partition."""
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> StatefulSinkPartition[Any, None]:
        """Open the profile's writer."""
        return self.open()

    def open(self) -> StatefulSinkPartition[Any, None]:
        """Return a writer outside a dataflow (tests, benchmarks, backtests): ``write_batch`` records, then ``close``."""
        if self.settings.profile == "timescale":
            return _Timescale(self.settings, self.stream_maxlen)
        return _Parquet(self.settings)
