"""Write the daily feature groups into the offline store: ``python -m training.daily_backfill``.

    python -m training.daily_backfill --symbols BTC/USDT ETH/USDT [--start 2020-09-01] [--end 2025-01-01]

The daily providers of ``settings.daily`` (files, HTTP APIs, ccxt funding) give raw days;
:class:`flows.operators.daily_features.DailyFeatures` computes the groups' features, each row
stamped with the moment it became known (end of its day plus the publication lag); the rows
are written once per symbol (the Feast entity) through the same history sink as the bar
features, so the ``*_v2`` feature services join them point in time.  Idempotent upserts: a
second run leaves the same rows.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import pandas as pd

from flows.cli import HelpFormatter
from flows.operators.daily_features import DailyFeatures
from flows.settings import Settings, SettingsError, load_settings
from flows.sinks.history import HistorySink
from flows.sources.daily_config import open_daily


def backfill_daily(settings: Settings, symbols: Sequence[str], daily: DailyFeatures | None = None,
                   start: pd.Timestamp | None = None, end: pd.Timestamp | None = None) -> dict[str, int]:
    """Write every daily group's rows with ``ts`` in [start, end) for ``symbols``; return rows per table."""
    daily = daily if daily is not None else open_daily(settings.daily)
    if daily is None:
        raise SettingsError("daily.source (env CRYPTOSTREAM_DAILY__SOURCE) is none: set files or http")
    rows = daily.rows(symbols, start, end)
    sink = HistorySink(settings, flush_interval_s=float("inf")).build("daily-backfill", 0, 1)
    try:
        sink.write_batch(list[Any](rows))
    finally:
        sink.close()
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.table] = counts.get(r.table, 0) + 1
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    p = argparse.ArgumentParser(prog="python -m training.daily_backfill", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--config")
    p.add_argument("--symbols", nargs="+", help="Feast entities to write the rows for (default: settings.symbols)")
    p.add_argument("--start", help="first known-at time, ISO 8601 UTC")
    p.add_argument("--end", help="end (exclusive)")
    a = p.parse_args(argv)
    try:
        settings = load_settings(a.config)
        counts = backfill_daily(settings, tuple(a.symbols or settings.symbols), None,
                                pd.Timestamp(a.start, tz="UTC") if a.start else None,
                                pd.Timestamp(a.end, tz="UTC") if a.end else None)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for table, n in sorted(counts.items()):
        print(f"{table}: {n} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
