"""The ``local`` profile's stores: parquet files under ``data_dir``, merged on each table's key.

History (bars, features): one file per table, timeframe, symbol and month under
``<data_dir>/offline/<table>_<tf>/`` (Feast's file source reads that directory,
``flows.feature_catalog.offline_dir``); dead letters: JSON lines under
``<data_dir>/dead_letters/``.  Decisions: one file per table and UTC day under
``<data_dir>/decisions/<table>/``, with fixed column types (JSON columns as text).

One writer serves both (:func:`merge_into`): the new rows merged into the file on the
table's key, the newest row winning, the file replaced atomically (written aside, then
renamed), so replays, restarts and backfills run twice leave the same rows.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flows.feature_catalog import offline_dir
from flows.stores.base import HistoryTables, Tables
from flows.stores.schema import COLUMNS, DEAD_LETTER_COLUMNS, DECISIONS, JSON_COLUMNS, KEYS

if TYPE_CHECKING:
    import pandas as pd

FileCache = dict[Path, tuple[pa.Table, os.stat_result]]


def upsert(old: pa.Table | None, new: pa.Table, key: tuple[str, ...]) -> pa.Table:
    """Return ``old`` and ``new`` with the last row of each key only, sorted by ``ts``."""
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


def merge_into(path: Path, new: pa.Table, key: tuple[str, ...], cache: FileCache | None = None,
               in_order_and_unique: bool | None = None) -> None:
    """Merge ``new`` into the parquet file ``path`` on ``key`` and replace the file atomically.

    ``cache`` keeps the table last written to each file, used instead of reading it back while
    the file is unchanged.  When ``in_order_and_unique`` says the new rows are in time order with
    distinct keys and they are all later than the file's (the normal case: bar times move
    forward), they are appended without the key merge: the same rows, in the same order.
    ``None`` (the history tables) always merges.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    old = _read(path, cache)
    if (in_order_and_unique is not None and old is not None and old.num_rows
            and pc.min(new["ts"]).as_py() > pc.max(old["ts"]).as_py()):
        # No key of the file can recur (every key holds ts).
        new = new if new.schema == old.schema else new.cast(old.schema)
        if not in_order_and_unique:
            new = upsert(None, new, key)
        merged = pa.concat_tables([old, new])
    else:
        merged = upsert(old, new, key)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(merged, tmp)
    os.replace(tmp, path)
    if cache is not None:
        cache[path] = (merged, path.stat())


def _read(path: Path, cache: FileCache | None) -> pa.Table | None:
    if not path.exists():
        return None
    kept = cache.get(path) if cache is not None else None
    if kept is not None:
        st = path.stat()
        if (st.st_mtime_ns, st.st_size, st.st_ino) == (kept[1].st_mtime_ns, kept[1].st_size, kept[1].st_ino):
            return kept[0]
    return pq.read_table(path)


class ParquetTable:
    """Buffered, idempotent writer of one history table's rows."""

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
        for (tf, symbol, month), rows in self.buffer.items():
            path = offline_dir(self.data_dir, self.table, tf) / f"{symbol.replace('/', '_')}-{month}.parquet"
            merge_into(path, pa.Table.from_pylist([dict(zip(self.columns, r, strict=True)) for r in rows]),
                       self.key)
            written += len(rows)
        self.buffer.clear()
        self.pending = 0
        return written


class DeadLetterJsonl:
    """Append-only JSON lines of dead letters for the local profile."""

    def __init__(self, path: Path) -> None:
        import orjson

        self._dumps = orjson.dumps
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("ab")

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        """Append the rows, flushed."""
        for r in rows:
            self.file.write(self._dumps(dict(zip(DEAD_LETTER_COLUMNS, r, strict=True))) + b"\n")
        self.file.flush()

    def close(self) -> None:
        """Close the file."""
        self.file.close()


class ParquetHistory:
    """History writer of the ``local`` profile (rows buffered until :meth:`flush`)."""

    def __init__(self, data_dir: Path, worker: int) -> None:
        self.tables = {t: ParquetTable(data_dir, t, COLUMNS[t]) for t in ("bars", "bar_features",
                                                                           "cross_asset_features")}
        self.dead = DeadLetterJsonl(Path(data_dir) / "dead_letters" / f"w{worker}.jsonl")

    def write(self, tables: Tables) -> None:
        """Buffer the rows (dead letters are appended at once)."""
        for table, rows in tables.items():
            if table == "dead_letters":
                self.dead.write(rows)
            else:
                self.tables[table].add(rows)

    def flush(self) -> None:
        """Merge the buffered rows into their files."""
        for t in self.tables.values():
            t.flush()

    def close(self) -> None:
        """Flush and close the dead-letter file."""
        self.flush()
        self.dead.close()


_TS = pa.timestamp("us", tz="UTC")
_NUMERIC = {"prob_up", "confidence", "qty", "price", "fee", "requested", "allowed", "equity", "cash",
            "gross_exposure", "net_exposure", "drawdown", "realized_pnl", "unrealized_pnl", "daily_pnl", "leverage"}


def _arrow_type(column: str) -> pa.DataType:
    if column in ("ts", "updated_at"):
        return _TS
    if column == "signal":
        return pa.int64()
    return pa.float64() if column in _NUMERIC else pa.string()


# Decision files: fixed column types, so a 0 written as an int in one batch and 120.3 in the
# next land in one column type (JSON columns as text).
SCHEMAS: dict[str, pa.Schema] = {t: pa.schema([(c, _arrow_type(c)) for c in d.columns])
                                 for t, d in DECISIONS.items()}


def _arrow(table: str, rows: list[tuple[Any, ...]]) -> pa.Table:
    cols, schema = COLUMNS[table], SCHEMAS[table]
    arrays = []
    for c, values in zip(cols, zip(*rows, strict=True), strict=True):
        if c in JSON_COLUMNS:  # the encoded JSON bytes, as text (UTF-8 checked by the cast)
            arrays.append(pa.array(values, pa.binary()).cast(pa.string()))
        else:
            arrays.append(pa.array(values, schema.field(c).type))
    return pa.Table.from_arrays(arrays, schema=schema)


def write_parquet(root: Path, table: str, rows: list[tuple[Any, ...]], cache: FileCache | None = None) -> None:
    """Merge decision ``rows`` into ``<root>/<table>/<day>.parquet`` files (JSON columns as text)."""
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
        merge_into(root / table / f"{day}.parquet", _arrow(table, day_rows), key, cache,
                   _in_order_and_unique(day_rows, ts_at, key_at))


def _in_order_and_unique(rows: list[tuple[Any, ...]], ts_at: int, key_at: list[int]) -> bool:
    """Return whether rows are in time order with distinct keys (then the key merge leaves them as they are)."""
    ts = list(map(itemgetter(ts_at), rows))
    return ts == sorted(ts) and len(set(map(itemgetter(*key_at), rows))) == len(rows)


class ParquetDecisions:
    """Decision writer of the ``local`` profile: each batch is in its files when :meth:`write` returns."""

    background = False

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "decisions"
        self.files: FileCache = {}  # what this writer last wrote

    def write(self, tables: Tables) -> None:
        """Merge each table's rows into its day files."""
        for table, rows in tables.items():
            write_parquet(self.root, table, rows, self.files)

    def close(self) -> None:
        """Forget the cached files."""
        self.files.clear()


class ParquetReader(HistoryTables):
    """Reads the ``local`` profile's bars and decision records."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)

    def _history(self, table: str, symbols: Sequence[str], timeframe: str, start: pd.Timestamp,
                 end: pd.Timestamp, columns: Sequence[str]) -> pd.DataFrame:
        import pandas as pd

        cols = list(columns)
        files = [f for s in symbols for f in offline_dir(self.data_dir, table, timeframe)
                 .glob(f"{s.replace('/', '_')}-*.parquet")]
        if not files:
            return pd.DataFrame(columns=cols)
        df = pd.concat([pd.read_parquet(f, columns=cols) for f in files])
        return df[(df.ts >= start) & (df.ts < end)].sort_values(["symbol", "ts"])

    def table(self, table: str, since: pd.Timestamp | None = None) -> pd.DataFrame:
        """Return every stored row of a decision table (from ``since`` on, when given), sorted by time."""
        import pandas as pd

        files = sorted((self.data_dir / "decisions" / table).glob("*.parquet"))
        if since is not None:  # day files: skip the days before since's
            files = [f for f in files if f.stem >= f"{since:%Y-%m-%d}"]
        if not files:
            return pd.DataFrame(columns=list(COLUMNS[table]))
        df = pd.concat([pd.read_parquet(f) for f in files])
        df = df[df["ts"] >= since] if since is not None else df
        return df.sort_values("ts", kind="stable").reset_index(drop=True)
