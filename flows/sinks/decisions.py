"""Decision sinks: predictions, orders, fills, risk events and portfolio state, through the profile's stores.

``timescale`` profile: each batch is upserted into the hypertables (``sql/migrations``
0003, 0004, 0008) in one transaction (``flows.stores.timescale``), then every record is
published to the event bus, a Redis stream ``cryptostream:<table>`` per table
(``flows.stores.redis``).  JSON columns are encoded once, for both stores.  The rows are
encoded on the flow's thread and written by one writer thread, so a batch's database and
Redis work overlaps the scoring of the next: at most one batch is in flight, batches land
in order, and the sink is a stateful Bytewax partition whose ``snapshot`` waits for the
batch in flight, so every record of an epoch is stored before the epoch's recovery
snapshot commits (a restart resumes after what is stored; a write that failed raises at
the next ``write_batch``, ``snapshot`` or ``close``, before its epoch commits).  ``local``
profile: one parquet file per table and UTC day under ``<data_dir>/decisions/<table>/``,
merged on the table's key (newest row wins) and replaced atomically
(``flows.stores.parquet``), written when ``write_batch`` is called.  Either way a replayed
batch rewrites the same rows.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache
from typing import Any

import orjson
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from flows.monitoring.notify import AlertLogHandler, open_alerts
from flows.records import PortfolioRow, Prediction, utc
from flows.settings import Settings
from flows.stores import Stores, open_stores
from flows.stores.base import Tables


def _num(x: Any) -> float | None:
    x = float(x)
    return None if x != x else x  # NaN -> NULL


def _json(v: Any) -> bytes | None:
    """Encode a JSON column's value once (orjson: NaN becomes null); the stores take the bytes as they are."""
    return None if v is None else orjson.dumps(v)


def rows_by_table(items: Iterable[Any], run_id: str, mode: str) -> dict[str, list[tuple[Any, ...]]]:
    """Turn decision records into rows per table (others, e.g. status lines, are skipped).

    JSON columns (``flows.stores.schema.JSON_COLUMNS``) hold their value encoded once, as JSON bytes.
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


class _Writer(StatefulSinkPartition[Any, None]):
    """Encodes each batch on the flow's thread; stores it there, or on one writer thread when the store is remote."""

    def __init__(self, stores: Stores, maxlen: int) -> None:
        settings = stores.settings
        self.run_id, self.mode = settings.run_id(), settings.mode
        self.store = stores.decision_writer()
        self.bus = stores.event_bus(maxlen)
        self.writer = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="decision-sink")
                       if self.store.background else None)
        self.pending: Future[None] | None = None
        self.alerts = open_alerts(settings.alerts, settings.mode)  # None unless a destination is set
        self.log_handler = AlertLogHandler(self.alerts) if self.alerts is not None else None
        if self.log_handler is not None:
            logging.getLogger("flows").addHandler(self.log_handler)

    def write_batch(self, items: list[Any]) -> None:
        """Encode the batch here; with a writer thread, wait for the batch in flight, then hand this one over."""
        tables = rows_by_table(items, self.run_id, self.mode)
        if self.alerts is not None:
            self.alerts.on_records(items)
        bus = self.bus
        docs = {table: bus.encode(table, rows) for table, rows in tables.items()} if bus is not None else {}
        if self.writer is None:
            self._write(tables, docs)
            return
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

    def _write(self, tables: Tables, docs: dict[str, list[bytes]]) -> None:
        self.store.write(tables)
        if self.bus is not None:
            self.bus.publish(docs)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self.writer is not None:
                self.writer.shutdown()
            self.store.close()
            if self.bus is not None:
                self.bus.close()
            if self.alerts is not None:
                if self.log_handler is not None:
                    logging.getLogger("flows").removeHandler(self.log_handler)
                self.alerts.close()


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
        return _Writer(open_stores(self.settings), self.stream_maxlen)
