"""The dashboard's reads of the ``local`` profile: pyarrow over the parquet files, only the columns and files a page needs.

Decision tables are one file per UTC day (:mod:`flows.stores.parquet`), so "the last N rows"
reads the newest files only, and whole-run figures read a few columns of every file.
Freshness reads no rows at all: the newest month file's ``ts`` statistics.  The change
feed polls the decision directories: every write replaces a file by a rename, which
changes its directory's modification time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from flows.feature_catalog import offline_dir
from flows.stores.parquet import SCHEMAS
from flows.stores.schema import COLUMNS, DECISIONS, FEATURE_GROUPS, last_row, time_order
from flows.timeframes import timeframe_ms

if TYPE_CHECKING:
    import pandas as pd

def bucket_last(df: pd.DataFrame, points: int) -> pd.DataFrame:
    """Return the last row of each of ``points`` equal time buckets of ``df`` (sorted by ``ts``), the
    largest ``drawdown`` of the bucket in its row."""
    if len(df) <= points:
        return df.reset_index(drop=True)
    ns = df["ts"].astype("int64")
    width = max(1, (int(ns.iloc[-1]) - int(ns.iloc[0])) // points + 1)
    groups = df.groupby(((ns - int(ns.iloc[0])) // width).to_numpy(), sort=True)
    out = groups.last()
    out["drawdown"] = groups["drawdown"].max()
    return out.reset_index(drop=True)


class ParquetMonitor:
    """:class:`flows.stores.base.MonitorReader` over ``<data_dir>/decisions`` and ``<data_dir>/offline``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "decisions"

    def _files(self, table: str) -> list[Path]:
        return sorted((self.root / table).glob("*.parquet"))

    def _read(self, table: str, run: str | None, columns: Sequence[str], files: list[Path] | None = None) -> pa.Table:
        files = self._files(table) if files is None else files
        schema = SCHEMAS[table]
        if not files:
            return schema.empty_table().select(list(columns))
        data = pads.dataset([str(f) for f in files], schema=schema, format="parquet")
        flt = pc.field("run_id") == run if run is not None else None
        return data.to_table(columns=list(columns), filter=flt)

    def _newest(self, table: str, run: str, limit: int, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Read day files newest first until ``limit`` rows of the run are found; return the last ``limit``."""
        cols = list(columns or COLUMNS[table])
        cols += [c for c in time_order(table) if c not in cols]
        parts: list[pa.Table] = []
        found = 0
        for f in reversed(self._files(table)):
            t = self._read(table, run, cols, [f])
            parts.append(t)
            found += t.num_rows
            if found >= limit:
                break
        if not parts:
            return self._read(table, run, cols, []).to_pandas()
        t = pa.concat_tables(reversed(parts)).sort_by([(c, "ascending") for c in time_order(table)])
        return t.slice(max(0, t.num_rows - limit)).to_pandas()

    def runs(self) -> pd.DataFrame:
        """Return ``run_id, first, last`` per run, the latest run first.

        From the files' row-group statistics where a row group holds one run (the usual case: a
        day file of one run); only the row groups of several runs are read.
        """
        import pandas as pd

        spans: dict[str, tuple[Any, Any]] = {}

        def add(run: str, lo: Any, hi: Any) -> None:
            old = spans.get(run)
            spans[run] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))

        for f in self._files("portfolio_state"):
            pf = pq.ParquetFile(f)
            meta = pf.metadata
            names = meta.schema.to_arrow_schema().names
            at_run, at_ts = names.index("run_id"), names.index("ts")
            for i in range(meta.num_row_groups):
                rg = meta.row_group(i)
                r, t = rg.column(at_run).statistics, rg.column(at_ts).statistics
                if r is not None and t is not None and r.has_min_max and t.has_min_max and r.min == r.max:
                    add(r.min, t.min, t.max)
                    continue
                part = pf.read_row_group(i, columns=["run_id", "ts"])
                agg = part.group_by("run_id").aggregate([("ts", "min"), ("ts", "max")])
                for run, lo, hi in zip(*(agg[c].to_pylist() for c in ("run_id", "ts_min", "ts_max")), strict=True):
                    add(run, lo, hi)
        df = pd.DataFrame([(r, lo, hi) for r, (lo, hi) in spans.items()], columns=["run_id", "first", "last"])
        for c in ("first", "last"):
            df[c] = pd.to_datetime(df[c], utc=True)
        return df.sort_values("last", ascending=False).reset_index(drop=True)

    def equity(self, run: str, points: int) -> pd.DataFrame:
        """Return the run's equity curve, the last row of each of about ``points`` time buckets."""
        cols = ["ts", "equity", "drawdown", "gross_exposure", "net_exposure"]
        df = self._read("portfolio_state", run, cols).sort_by([("ts", "ascending")]).to_pandas()
        return bucket_last(df, points)

    def daily(self, run: str) -> pd.DataFrame:
        """Return ``day, first, last`` equity per UTC day."""
        t = self._read("portfolio_state", run, ["ts", "equity"]).sort_by([("ts", "ascending")])
        t = t.append_column("day", pc.floor_temporal(t["ts"], unit="day"))
        agg = t.group_by("day", use_threads=False).aggregate([("equity", "first"), ("equity", "last")])
        df = agg.to_pandas().rename(columns={"equity_first": "first", "equity_last": "last"})
        return df.sort_values("day").reset_index(drop=True)

    def latest_state(self, run: str) -> dict[str, Any] | None:
        """Return the run's last ``portfolio_state`` row with ``positions`` and ``state`` decoded."""
        return last_row("portfolio_state", self._newest("portfolio_state", run, 1))

    def symbol_flows(self, run: str) -> pd.DataFrame:
        """Return the run's fills summed per symbol (``bought``/``sold``: quote notional)."""
        t = self._read("fills", run, ["symbol", "side", "qty", "price", "fee"])
        notional = pc.multiply(t["qty"], t["price"])
        buy = pc.equal(t["side"], "buy")
        zero = pa.scalar(0.0)
        t = t.append_column("bought", pc.if_else(buy, notional, zero))
        t = t.append_column("sold", pc.if_else(buy, zero, notional))
        t = t.append_column("signed_qty", pc.if_else(buy, t["qty"], pc.negate(t["qty"])))
        agg = t.group_by("symbol").aggregate([("qty", "count"), ("bought", "sum"), ("sold", "sum"),
                                              ("fee", "sum"), ("signed_qty", "sum")])
        df = agg.to_pandas().rename(columns={"qty_count": "fills", "bought_sum": "bought", "sold_sum": "sold",
                                             "fee_sum": "fees", "signed_qty_sum": "net_qty"})
        return df[["symbol", "fills", "bought", "sold", "fees", "net_qty"]].sort_values("symbol").reset_index(drop=True)

    def fills(self, run: str, limit: int, timeframe: str) -> pd.DataFrame:
        """Return the last ``limit`` fills with the decision time and price of their order."""
        import pandas as pd

        fills = self._newest("fills", run, limit)
        fills["decided"] = pd.Series(pd.NaT, index=fills.index, dtype="datetime64[us, UTC]")
        fills["decision_price"] = float("nan")
        if fills.empty:
            return fills
        ids = pa.array(sorted(set(fills["client_order_id"])), pa.string())
        start = fills["ts"].min() - pd.Timedelta(days=2)  # an order is decided at most a bar before its fill
        files = [f for f in self._files("orders") if f.stem >= start.strftime("%Y-%m-%d")]
        orders = self._read("orders", run, ["client_order_id", "ts"], files) if files else None
        if orders is not None and orders.num_rows:
            orders = orders.filter(pc.is_in(orders["client_order_id"], ids)).to_pandas()
            decided = orders.groupby("client_order_id")["ts"].min()
            fills["decided"] = fills["client_order_id"].map(decided)
        bar_ts = fills["decided"] - pd.Timedelta(milliseconds=timeframe_ms(timeframe))
        fills["decision_price"] = self._closes(fills["symbol"], bar_ts, timeframe)
        return fills

    def _closes(self, symbols: pd.Series, times: pd.Series, timeframe: str) -> list[float]:
        """Return the close of each (symbol, bar open time), NaN where no bar is stored."""
        closes: dict[tuple[str, Any], float] = {}
        wanted = {(s, t) for s, t in zip(symbols, times, strict=True) if t == t}
        by_file: dict[Path, set[Any]] = {}
        for s, t in wanted:
            f = offline_dir(self.data_dir, "bars", timeframe) / f"{s.replace('/', '_')}-{t.strftime('%Y-%m')}.parquet"
            by_file.setdefault(f, set()).add(t)
        for f, ts in by_file.items():
            if not f.exists():
                continue
            t = pq.read_table(f, columns=["symbol", "ts", "close"],
                              filters=[("ts", "in", [x.to_pydatetime() for x in ts])])
            for s, ts_, c in zip(t["symbol"].to_pylist(), t["ts"].to_pylist(), t["close"].to_pylist(),
                                 strict=True):
                closes[(s, ts_)] = c
        return [closes.get((s, t.to_pydatetime()), float("nan")) if t == t else float("nan")
                for s, t in zip(symbols, times, strict=True)]

    def orders(self, run: str, limit: int) -> pd.DataFrame:
        """Return the last ``limit`` orders."""
        return self._newest("orders", run, limit)

    def predictions(self, run: str, limit: int) -> pd.DataFrame:
        """Return the last ``limit`` predictions."""
        return self._newest("predictions", run, limit)

    def risk_events(self, run: str, limit: int) -> pd.DataFrame:
        """Return the last ``limit`` risk events."""
        return self._newest("risk_events", run, limit)

    def risk_counts(self, run: str) -> pd.DataFrame:
        """Return ``rule, events, last`` per rule, most frequent first."""
        t = self._read("risk_events", run, ["rule", "ts"])
        agg = t.group_by("rule").aggregate([("ts", "count"), ("ts", "max")]).to_pandas()
        agg = agg.rename(columns={"ts_count": "events", "ts_max": "last"})[["rule", "events", "last"]]
        return agg.sort_values(["events", "rule"], ascending=[False, True]).reset_index(drop=True)

    def freshness(self, symbols: Sequence[str], timeframes: Sequence[str]) -> pd.DataFrame:
        """Return the newest stored time per group, timeframe and symbol (from file statistics only)."""
        import pandas as pd

        rows = []
        for group in FEATURE_GROUPS:
            for tf in timeframes:
                d = offline_dir(self.data_dir, group, tf)
                for s in symbols:
                    rows.append((group, tf, s, _newest_ts(d, s)))
        df = pd.DataFrame(rows, columns=["group", "timeframe", "symbol", "last"])
        df["last"] = pd.to_datetime(df["last"], utc=True)
        return df


def _newest_ts(directory: Path, symbol: str) -> Any:
    """Return the largest ``ts`` of a symbol's newest month file (row-group statistics), None without one."""
    files = sorted(directory.glob(f"{symbol.replace('/', '_')}-*.parquet"))
    for f in reversed(files):
        meta = pq.ParquetFile(f).metadata
        at = meta.schema.to_arrow_schema().get_field_index("ts")
        best = None
        for i in range(meta.num_row_groups):
            st = meta.row_group(i).column(at).statistics
            if st is not None and st.has_min_max and (best is None or st.max > best):
                best = st.max
        if best is not None:
            return best
    return None


class DirectoryChangeFeed:
    """:class:`flows.stores.base.ChangeFeed` of the ``local`` profile: polls the decision directories."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "decisions"
        self.monitor = ParquetMonitor(Path(data_dir))

    def token(self) -> str:
        """Return the decision directories' modification times (a rename into one changes it)."""
        return ",".join(str(_mtime(self.root / t)) for t in DECISIONS)

    def recent(self, table: str, count: int) -> list[dict[str, Any]]:
        """Return the newest ``count`` rows of the table, newest first."""
        files = self.monitor._files(table)
        parts: Iterator[Path] = reversed(files)
        out: list[dict[str, Any]] = []
        for f in parts:
            rows = pq.read_table(f).sort_by([("ts", "descending")]).slice(0, count - len(out)).to_pylist()
            out += rows
            if len(out) >= count:
                break
        return out

    def where(self) -> str:
        """Say what is polled."""
        return f"polling {self.root}"


def _mtime(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return 0
