"""History sink: bars, features and dead letters into the profile's history store (:mod:`flows.stores`).

``local``: parquet files (``flows.stores.parquet``).  In a flow every batch
is written before ``write_batch`` returns (``flush_interval_s=0``): Bytewax may
snapshot right after, and a row still buffered at a crash would be lost for good,
since the resumed flow does not emit it again.  Bulk jobs outside Bytewax (the
backfill) buffer and flush at the end.  ``timescale``: the hypertables,
through COPY into a staging table and an upsert on the natural key
(``flows.stores.timescale``), one transaction per batch.  Either way the writes are
idempotent, so a replay or a restart never duplicates a row.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from flows.records import Bar, DeadLetter, FeatureRow
from flows.settings import Settings
from flows.stores import open_stores
from flows.stores.base import HistoryWriter
from flows.stores.schema import bar_row, dead_letter_row, feature_row

Row = Bar | FeatureRow | DeadLetter


def split_rows(items: list[Row]) -> dict[str, list[tuple[Any, ...]]]:
    """Turn records into rows per table."""
    out: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for item in items:
        if isinstance(item, Bar):
            out["bars"].append(bar_row(item))
        elif isinstance(item, FeatureRow):
            out[item.table].append(feature_row(item))
        else:
            out["dead_letters"].append(dead_letter_row(item))
    return out


class _Partition(StatelessSinkPartition[Row]):
    def __init__(self, store: HistoryWriter, flush_interval_s: float) -> None:
        self.store = store
        self.flush_interval_s = flush_interval_s
        self.last_flush = time.monotonic()

    def write_batch(self, items: list[Row]) -> None:
        self.store.write(split_rows(items))
        if time.monotonic() - self.last_flush >= self.flush_interval_s:
            self.flush()

    def flush(self) -> None:
        self.store.flush()
        self.last_flush = time.monotonic()

    def close(self) -> None:
        self.store.close()


class HistorySink(DynamicSink[Row]):
    """Write bars, features and dead letters to the history store of the profile."""

    def __init__(self, settings: Settings, flush_interval_s: float = 0.0) -> None:
        self.settings = settings
        self.flush_interval_s = flush_interval_s

    def build(self, step_id: str, worker_index: int, worker_count: int) -> StatelessSinkPartition[Row]:
        return _Partition(open_stores(self.settings).history_writer(worker_index), self.flush_interval_s)
