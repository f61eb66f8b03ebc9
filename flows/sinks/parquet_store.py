"""The ``local`` profile's offline store: one parquet file per table, timeframe, symbol and month.

Writes are idempotent upserts: a flush merges the new rows into the day's file,
the newest row winning on the table's natural key, and replaces the file
atomically (write to a temporary name, then rename).  Replays, restarts and
backfills run twice therefore leave the same rows.  Feast's file source reads
the directory of a table and timeframe (``flows.feature_catalog.offline_dir``).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flows.feature_catalog import offline_dir
from flows.sinks.tables import KEYS


class ParquetTable:
    """Buffered, idempotent writer of one table's rows."""

    def __init__(self, data_dir: Path, table: str, columns: tuple[str, ...]) -> None:
        self.data_dir = Path(data_dir)
        self.table = table
        self.columns = columns
        self.key = KEYS[table]
        self.buffer: dict[tuple[str, str, str], list[tuple[Any, ...]]] = defaultdict(list)
        self.pending = 0

    def add(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Buffer rows (``symbol, timeframe, ts, ...`` first, as every keyed table has)."""
        for row in rows:
            self.buffer[(row[1], row[0], row[2].strftime("%Y-%m"))].append(row)
            self.pending += 1

    def flush(self) -> int:
        """Merge buffered rows into their files; return the number of rows written."""
        written = 0
        for (tf, symbol, day), rows in self.buffer.items():
            directory = offline_dir(self.data_dir, self.table, tf)
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"{symbol.replace('/', '_')}-{day}.parquet"
            new = pa.Table.from_pylist([dict(zip(self.columns, r, strict=True)) for r in rows])
            merged = _upsert(pq.read_table(path) if path.exists() else None, new, self.key)
            tmp = path.with_suffix(".parquet.tmp")
            pq.write_table(merged, tmp)
            os.replace(tmp, path)
            written += len(rows)
        self.buffer.clear()
        self.pending = 0
        return written


def _upsert(old: pa.Table | None, new: pa.Table, key: tuple[str, ...]) -> pa.Table:
    if old is not None:
        new = new.cast(old.schema) if new.schema != old.schema else new
        both = pa.concat_tables([old, new])
    else:
        both = new
    # Keep the last occurrence of each key: the newest value wins.
    idx = pa.array(range(both.num_rows))
    both = both.append_column("__i", idx)
    last = both.group_by(list(key)).aggregate([("__i", "max")])
    keep = pc.sort_indices(last["__i_max"])
    rows = both.take(pc.take(last["__i_max"], keep))
    rows = rows.drop_columns(["__i"])
    return rows.sort_by([("ts", "ascending")])
