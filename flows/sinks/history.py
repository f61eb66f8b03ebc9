"""History sink: bars, features and dead letters into the active profile's offline store.

``local``: parquet files (``flows.sinks.parquet_store``).  In a flow every batch
is written before ``write_batch`` returns (``flush_interval_s=0``): Bytewax may
snapshot right after, and a row still buffered at a crash would be lost for good,
since the resumed flow does not emit it again.  Bulk jobs outside Bytewax (the
backfill) buffer and flush at the end.  ``timescale``: the hypertables,
through COPY into a staging table and an upsert on the natural key
(``flows.stores.pgcopy``), one transaction per batch.  Either way the writes are
idempotent, so a replay or a restart never duplicates a row.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from flows.records import Bar, DeadLetter, FeatureRow
from flows.settings import Settings
from flows.sinks.parquet_store import ParquetTable
from flows.sinks.tables import (
    BAR_COLUMNS,
    DEAD_LETTER_COLUMNS,
    FEATURE_COLUMNS,
    bar_row,
    dead_letter_row,
    feature_row,
)

Row = Bar | FeatureRow | DeadLetter
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {"bars": BAR_COLUMNS, **FEATURE_COLUMNS,
                                             "dead_letters": DEAD_LETTER_COLUMNS}


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


class _ParquetPartition(StatelessSinkPartition[Row]):
    def __init__(self, settings: Settings, worker: int, flush_interval_s: float) -> None:
        self.tables = {t: ParquetTable(settings.data_dir, t, c) for t, c in TABLE_COLUMNS.items()
                       if t != "dead_letters"}
        self.dead = DeadLetterJsonl(settings.data_dir / "dead_letters" / f"w{worker}.jsonl")
        self.flush_interval_s = flush_interval_s
        self.last_flush = time.monotonic()

    def write_batch(self, items: list[Row]) -> None:
        for table, rows in split_rows(items).items():
            if table == "dead_letters":
                self.dead.write(rows)
            else:
                self.tables[table].add(rows)
        if time.monotonic() - self.last_flush >= self.flush_interval_s:
            self.flush()

    def flush(self) -> None:
        for t in self.tables.values():
            t.flush()
        self.last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()
        self.dead.close()


class _TimescalePartition(StatelessSinkPartition[Row]):
    def __init__(self, settings: Settings) -> None:
        import psycopg

        from flows.stores.pgcopy import copy_upsert

        assert settings.timescale_dsn is not None
        self.copy_upsert = copy_upsert
        self.conn = psycopg.connect(settings.timescale_dsn.get_secret_value())

    def write_batch(self, items: list[Row]) -> None:
        from flows.sinks.tables import KEYS

        with self.conn.transaction():
            for table, rows in split_rows(items).items():
                self.copy_upsert(self.conn, table, TABLE_COLUMNS[table], rows, KEYS.get(table))

    def close(self) -> None:
        self.conn.close()


class HistorySink(DynamicSink[Row]):
    """Write bars, features and dead letters to the offline store of the profile."""

    def __init__(self, settings: Settings, flush_interval_s: float = 0.0) -> None:
        self.settings = settings
        self.flush_interval_s = flush_interval_s

    def build(self, step_id: str, worker_index: int, worker_count: int) -> StatelessSinkPartition[Row]:
        if self.settings.profile == "timescale":
            return _TimescalePartition(self.settings)
        return _ParquetPartition(self.settings, worker_index, self.flush_interval_s)


class DeadLetterJsonl:
    """Append-only JSON lines of dead letters for the local profile."""

    def __init__(self, path) -> None:
        import orjson

        self._dumps = orjson.dumps
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("ab")

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        for r in rows:
            self.file.write(self._dumps(dict(zip(DEAD_LETTER_COLUMNS, r, strict=True))) + b"\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()
