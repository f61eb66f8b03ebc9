"""Benchmark: ingest of bars into TimescaleDB, COPY paths versus batched executemany upserts.

Usage::

    eval "$(infra/up)"
    .venv/bin/python tests/bench/bench_ingest.py [--rows 500000] [--batch 50000]

Runs in a scratch database (created, migrated, dropped) on the server of
``--dsn`` / ``$TIMESCALE_DSN``, so it never touches real data.  Prints a table of
rows/s and the ratio to the ``executemany`` baseline measured in the same run.
Not a test: nothing is asserted (the target for the COPY upsert is >= 200,000 rows/s).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from flows.stores.pgcopy import copy_rows, copy_upsert  # noqa: E402
from infra.db import ensure_database, migrate  # noqa: E402

COLUMNS = ("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume", "quote_volume",
           "trade_count", "vwap", "taker_buy_volume")
UPSERT = ("INSERT INTO bars (" + ", ".join(COLUMNS) + ") VALUES (" + ", ".join(["%s"] * len(COLUMNS)) +
          ") ON CONFLICT (symbol, timeframe, ts) DO UPDATE SET " +
          ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[3:]))


def make_bars(n: int, symbols: int, bump: float = 0.0) -> list[tuple[Any, ...]]:
    """Return ``n`` 1m bars over ``symbols`` symbols, consecutive minutes, ending a day ago."""
    minutes = -(-n // symbols)
    start = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(days=1, minutes=minutes)
    rows = []
    for i in range(n):
        s, m = divmod(i, minutes)
        c = 100.0 + s + (m % 97) * 0.01 + bump
        rows.append((f"SYM{s:03d}/USDT", "1m", start + timedelta(minutes=m), c - 0.01, c + 0.05, c - 0.05,
                     c, 1.5 + m % 7, c * (1.5 + m % 7), 10 + m % 13, c, 0.7))
    return rows


def batches(rows: Sequence[tuple[Any, ...]], size: int) -> list[Sequence[tuple[Any, ...]]]:
    """Split rows into consecutive batches of ``size``."""
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def timed(conn: psycopg.Connection[Any], fn: Callable[[], object]) -> float:
    """Run ``fn`` and return its wall time in seconds (including the commit)."""
    t0 = time.perf_counter()
    fn()
    conn.commit()
    return time.perf_counter() - t0


def main() -> int:
    """Run the benchmark and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn", default=os.environ.get("TIMESCALE_DSN"))
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--symbols", type=int, default=50)
    ap.add_argument("--batch", type=int, default=50_000, help="rows per COPY batch (one transaction each)")
    ap.add_argument("--executemany-rows", type=int, default=100_000,
                    help="rows for the (slow) executemany baseline")
    ap.add_argument("--executemany-batch", type=int, default=5_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the best is reported")
    args = ap.parse_args()
    if not args.dsn:
        ap.error("no DSN: pass --dsn or eval \"$(infra/up)\" first")
    dsn = make_conninfo(args.dsn, dbname=f"cryptostream_bench_{uuid.uuid4().hex[:8]}")
    ensure_database(dsn)
    try:
        migrate(dsn)
        results = run(dsn, args)
    finally:
        with psycopg.connect(make_conninfo(args.dsn, dbname="postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]))))
    base = next(r for name, _, _, r in results if name.startswith("executemany upsert, new"))
    print(f"\nbars ingest, {args.symbols} symbols, COPY batches of {args.batch:,} rows, executemany "
          f"batches of {args.executemany_batch:,}, best of {args.repeat}; server {args.dsn}")
    print(f"{'case':56} {'rows':>9} {'seconds':>8} {'rows/s':>10} {'vs executemany':>15}")
    for name, n, secs, rate in results:
        print(f"{name:56} {n:9,} {secs:8.2f} {rate:10,.0f} {rate / base:14.1f}x")
    return 0


def run(dsn: str, args: argparse.Namespace) -> list[tuple[str, int, float, float]]:
    """Measure every case (best of ``--repeat``); return (name, rows, seconds, rows/s)."""
    rows = make_bars(args.rows, args.symbols)
    changed = make_bars(args.rows, args.symbols, bump=1.0)
    few = rows[: args.executemany_rows]
    out: list[tuple[str, int, float, float]] = []
    with psycopg.connect(dsn) as conn:
        def empty() -> None:
            conn.execute("TRUNCATE bars")
            conn.commit()

        def loaded() -> None:
            empty()
            upsert(rows)

        def upsert(data: Sequence[tuple[Any, ...]], **kw: Any) -> None:
            for b in batches(data, args.batch):
                copy_upsert(conn, "bars", COLUMNS, b, **kw)

        def executemany(data: Sequence[tuple[Any, ...]]) -> None:
            with conn.cursor() as cur:
                for b in batches(data, args.executemany_batch):
                    cur.executemany(UPSERT, b)
                    conn.commit()

        cases: list[tuple[str, int, Callable[[], None], Callable[[], object]]] = [
            ("raw COPY into bars (copy_rows; duplicates would fail)", len(rows), empty,
             lambda: [copy_rows(conn, "bars", COLUMNS, b) for b in batches(rows, args.batch)]),
            ("copy_upsert, new rows (fast path: COPY into the table)", len(rows), empty,
             lambda: upsert(rows)),
            ("copy_upsert, new rows, fast_path=False (stage + merge)", len(rows), empty,
             lambda: upsert(rows, fast_path=False)),
            ("  same, dedupe=False (no sort of the stage)", len(rows), empty,
             lambda: upsert(rows, fast_path=False, dedupe=False)),
            ("copy_upsert, replay of stored rows (nothing changes)", len(rows), loaded,
             lambda: upsert(rows)),
            ("copy_upsert, every row changed (merge updates)", len(rows), loaded,
             lambda: upsert(changed)),
            ("executemany upsert, new rows (INSERT .. ON CONFLICT)", len(few), empty,
             lambda: executemany(few)),
            ("executemany upsert, every row changed", len(few), loaded,
             lambda: executemany(changed[: len(few)])),
        ]
        for name, n, setup, fn in cases:
            best = float("inf")
            for _ in range(args.repeat):
                setup()
                best = min(best, timed(conn, fn))
            out.append((name, n, best, n / best))
            print(f"  {name}: {n / best:,.0f} rows/s", file=sys.stderr)
        empty()
        upsert(rows + rows[:1000])  # a batch with keys twice: merge with dedupe, one row per key
        count = conn.execute("SELECT count(*) FROM bars").fetchone()
        assert count is not None and count[0] == len(rows), f"expected {len(rows)} bars, found {count}"
    return out


if __name__ == "__main__":
    sys.exit(main())
