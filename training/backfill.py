"""Backfill history through the flow's own operators into the active profile's offline store.

    python -m training.backfill files ../shared/data/binance-spot-1h/*.parquet
    python -m training.backfill exchange --symbols BTC/USDT ETH/USDT --timeframe 1m \\
        --start 2024-08-08T00:00:00Z --end 2024-08-09T00:00:00Z

Bars go through :class:`SymbolPipeline` (features) and :class:`CrossAssetStep`
exactly as in ``flows.live``, merged across symbols in bar-time order, and are
written by the same history sink (idempotent upserts), so running a backfill
twice leaves the same rows and an interrupted one can simply be run again.

Candle files that carry only OHLCV (the usual case) lack the bar's VWAP, taker
buy volume and trade count; the backfill then uses the typical price
(h + l + c) / 3 as VWAP, half the volume as taker buy volume (imbalance 0) and
a trade count of 0, and says so in its log.  Klines from the exchange carry the
real values (quote volume, trade count, taker buy volume).
"""

from __future__ import annotations

import argparse
import gc
import heapq
import logging
import queue
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from flows.cli import HelpFormatter
from flows.operators.cross_asset import CrossAssetStep
from flows.operators.pipeline import SymbolPipeline
from flows.records import Bar, BarReturn, FeatureRow
from flows.settings import Settings, SettingsError, load_settings
from flows.sinks.history import HistorySink
from flows.timeframes import timeframe_ms

log = logging.getLogger("training.backfill")


def bars_from_frame(symbol: str, timeframe: str, df: Any, batch: int = 1 << 16) -> Iterator[Bar]:
    """Yield bars from a candle frame (``ts`` int ms, OHLCV, optional kline extras).

    The bars are made ``batch`` at a time with the cyclic collector paused: a ``Bar`` is a
    tuple subclass, which the collector never untracks, so each collection while millions are
    made would walk every one made so far (two thirds of the time of making them).  A batch
    at a time keeps a long file's bars from all being held at once when the consumer streams.
    """
    o, h, lo, c, v = (df[k].to_numpy(np.float64) for k in ("open", "high", "low", "close", "volume"))
    ts = df["ts"].to_numpy(np.int64)
    if "quote_volume" in df:
        qv = df["quote_volume"].to_numpy(np.float64)
        n = df["trade_count"].to_numpy(np.int64)
        tb = df["taker_buy_volume"].to_numpy(np.float64)
        vwap = np.where(v > 0, qv / np.where(v > 0, v, 1.0), c)
    else:
        vwap = (h + lo + c) / 3.0
        qv, n, tb = v * vwap, np.zeros(len(ts), np.int64), v / 2.0
    make = partial(tuple.__new__, Bar)  # Bar(*row) without the namedtuple's Python-level __new__: the same tuples
    for a in range(0, len(ts), batch):
        z = slice(a, a + batch)
        k = len(ts[z])
        with collector_paused():
            bars = list(map(make, zip(repeat(symbol, k), repeat(timeframe, k), ts[z].tolist(), o[z].tolist(),
                                      h[z].tolist(), lo[z].tolist(), c[z].tolist(), v[z].tolist(), qv[z].tolist(),
                                      n[z].tolist(), vwap[z].tolist(), tb[z].tolist(), strict=True)))
        yield from bars


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block (restored as it was, also on error)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def operator_records(streams: dict[str, Iterable[Bar]], timeframe: str) -> Iterator[Any]:
    """Yield what the live flow's operators make of bars, in bar-time order: Bars and FeatureRows (bar, cross-asset).

    Args:
        streams: per symbol, its bars in time order.
        timeframe: timeframe of every bar.
    """
    symbols = tuple(streams)
    pipes = {s: SymbolPipeline(s, (timeframe,)) for s in symbols}
    cross = CrossAssetStep(symbols, tf_ms=timeframe_ms(timeframe))
    for bar in heapq.merge(*(iter(s) for s in streams.values()), key=lambda b: (b.ts, b.symbol)):
        for rec in pipes[bar.symbol].on_bar(bar):
            if isinstance(rec, BarReturn):
                for sym, ts, feats in cross.update(rec.symbol, rec.ts, rec.ret_1):
                    yield FeatureRow("cross_asset_features", sym, timeframe, ts, feats)
            else:
                yield rec


def run_backfill(settings: Settings, streams: dict[str, Iterable[Bar]], timeframe: str,
                 chunk_rows: int = 100_000) -> dict[str, int]:
    """Run bars of several symbols through the operators and the history sink.

    The operators run in this thread; a writer thread hands full chunks to the
    sink (COPY into TimescaleDB releases the GIL while the server works), so
    computing the next chunk overlaps writing the last.  At most two chunks wait
    between them, which bounds memory.  The cyclic garbage collector is paused
    for the run: the job allocates millions of small acyclic tuples, and each
    collection pass would walk all of them.

    Args:
        settings: settings of the run (profile decides the store).
        streams: per symbol, its bars in time order.
        timeframe: timeframe of every bar.
        chunk_rows: rows per write.

    Returns:
        Counts of bars, feature rows and cross-asset rows written.
    """
    writer = _ChunkWriter(HistorySink(settings, flush_interval_s=float("inf")).build("backfill", 0, 1))
    counts = {"bars": 0, "bar_features": 0, "cross_asset_features": 0}
    buf: list[Any] = []
    try:
        with collector_paused():
            for rec in operator_records(streams, timeframe):
                buf.append(rec)
                counts["bars" if isinstance(rec, Bar) else rec.table] += 1
                if len(buf) >= chunk_rows:
                    writer.put(buf)
                    buf = []
            if buf:
                writer.put(buf)
    finally:
        writer.close()
    return counts


class _ChunkWriter:
    """Write chunks to a sink partition on a background thread; errors surface in the caller."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.queue: queue.Queue[list[Any] | None] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="backfill-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (chunk := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.sink.write_batch(chunk)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                    self.error = exc

    def put(self, chunk: list[Any]) -> None:
        """Queue a chunk (blocks while two are waiting); raise the writer's error if it failed."""
        if self.error is not None:
            raise self.error
        self.queue.put(chunk)

    def close(self) -> None:
        """Wait for the queued chunks, close the sink, raise the writer's error if any."""
        self.queue.put(None)
        self.thread.join()
        self.sink.close()
        if self.error is not None:
            raise self.error


def _files(paths: list[Path], start_ms: int | None, end_ms: int | None) -> tuple[dict[str, Iterable[Bar]], str]:
    from flows.sources.candle_files import CandleFile, read_candles

    frames: dict[str, list[tuple[Path, Any]]] = {}
    timeframes = set()
    for path in paths:
        try:
            cf = CandleFile.from_path(path)
            df = read_candles(path, start_ms, end_ms)
        except ValueError as exc:  # it names the file; SettingsError: every job that reads files prints it
            raise SettingsError(str(exc)) from None
        log.info("%s: %d candles of %s (OHLCV only: VWAP = typical price, imbalance 0)", path.name, len(df), cf.symbol)
        frames.setdefault(cf.symbol, []).append((path, df))
        timeframes.add(cf.interval)
    if len(timeframes) != 1:
        raise SettingsError(f"files mix timeframes {sorted(timeframes)}; backfill one timeframe at a time")
    tf = timeframes.pop()
    streams: dict[str, Iterable[Bar]] = {}
    for symbol, parts in frames.items():
        df = parts[0][1] if len(parts) == 1 else _joined(symbol, parts)
        streams[symbol] = bars_from_frame(symbol, tf, df)
    return streams, tf


def _joined(symbol: str, parts: list[tuple[Path, Any]]) -> Any:
    """Concatenate several files of one symbol in time order; a bar time in two files must hold the same candle."""
    import pandas as pd

    df = pd.concat([d for _, d in parts], ignore_index=True).sort_values("ts", kind="stable")
    twice = df[df.duplicated("ts", keep=False)]
    clash = twice.groupby("ts").nunique(dropna=False).gt(1).any(axis=1)
    if clash.any():
        first = pd.Timestamp(int(clash[clash].index[0]), unit="ms", tz="UTC")
        names = ", ".join(p.name for p, _ in parts)
        raise SettingsError(f"{symbol}: files {names} hold different candles for {first} (and "
                            f"{int(clash.sum()) - 1} more bar times); pass one of them, or fix the data")
    out = df.drop_duplicates("ts").reset_index(drop=True)
    log.info("%s: %d files joined into %d candles (%d bar times were in more than one)", symbol, len(parts),
             len(out), len(df) - len(out))
    return out


def _ms(text: str | None) -> int | None:
    """Parse an ISO 8601 time (UTC unless it says otherwise) to epoch milliseconds."""
    if text is None:
        return None
    import pandas as pd

    try:
        ts = pd.Timestamp(text)
    except ValueError as exc:
        raise SettingsError(f"--start/--end: {text!r} is not an ISO 8601 time ({exc})") from None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value // 1_000_000)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the backfill."""
    parser = argparse.ArgumentParser(prog="python -m training.backfill", description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter)
    parser.add_argument("--config", help="settings YAML (else $CRYPTOSTREAM_CONFIG)")
    sub = parser.add_subparsers(dest="source", required=True)
    files = sub.add_parser("files", help="candle files: parquet, CSV or freqtrade feather, named BASE_QUOTE-TF.ext", formatter_class=HelpFormatter)
    files.add_argument("paths", nargs="+", type=Path)
    exch = sub.add_parser("exchange", help="klines through ccxt REST (the replay exchange, or Binance, formatter_class=HelpFormatter)")
    exch.add_argument("--symbols", nargs="+")
    exch.add_argument("--timeframe", default="1m")
    for p in (files, exch):
        p.add_argument("--start", help="first bar time, ISO 8601 UTC")
        p.add_argument("--end", help="end (exclusive), ISO 8601 UTC")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(args.config)
        settings.require_servers()
        start, end = _ms(args.start), _ms(args.end)
        if args.source == "files":
            streams, tf = _files(args.paths, start, end)
        else:
            from training.klines import exchange_streams

            symbols = tuple(args.symbols) if args.symbols else settings.symbols
            streams, tf = dict(exchange_streams(settings, symbols, args.timeframe, start, end)), args.timeframe
    except (SettingsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    counts = run_backfill(settings, streams, tf)
    took = time.perf_counter() - t0
    print(f"backfill {tf} {','.join(streams)} into profile {settings.profile}: "
          + ", ".join(f"{k}={v}" for k, v in counts.items()) + f" in {took:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
