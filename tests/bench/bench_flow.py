"""Benchmark: the streaming-features path, each figure beside a baseline measured in the same run.

Usage::

    set -a; eval "$(infra/up)"; set +a      # sections 3-5 need TimescaleDB and Redis (exported)
    .venv/bin/python tests/bench/bench_flow.py              # everything (a few minutes)
    .venv/bin/python tests/bench/bench_flow.py --quick      # small sizes, under a minute or two
    .venv/bin/python tests/bench/bench_flow.py --sections 1,5 --trades 2000000

Not a test: nothing is asserted, and the machines here are noisy, so compare the
ratios more than the absolute figures.  Throughputs are the best of ``--repeat``
runs.  Databases and stores are scratch copies (a database created, migrated and
dropped; Redis db ``--redis-db``, flushed; a copy of ``feature_repo``), so no
user data is touched.  What each section measures, exactly:

1. Throughput, one worker.  ``--trades`` Binance trade messages (raw stream JSON
   text, as the source's websocket client hands the frames over) of ``--symbols``
   symbols, built in memory before timing, in items of ``--batch`` messages per symbol.  *flow*: the
   real ``flows.live.build_flow`` dataflow (parse -> dedupe -> bars -> features ->
   cross-asset) under ``bytewax.testing.run_main`` from a ``TestingSource``, with its
   three sinks swapped for counting sinks (the module attributes ``HistorySink``,
   ``FeastOnlineSink`` and ``BarPrinter`` of ``flows.live`` are replaced in this
   process only), timed from ``run_main`` to its return.  *limit*: the same
   operator classes in a bare Python loop.  *fold_window*: a Bytewax flow with one
   trade per item (parsed with orjson) into ``fold_window`` (1m tumbling event-time
   windows, OHLCV accumulator), the way Bytewax's examples build bars.
2. End to end over the websocket.  The replay exchange runs in its own process
   (synthetic market of ``--ws-symbols`` symbols, speed max) and the live flow
   reads it through ``BinanceTradeSource`` (websocket threads, parse, bars,
   features, cross-asset; counting sinks as in 1).  trades/s = trade messages the
   source handed over / seconds from the first handed-over batch to the flow's end.
   Baseline: the same trades read by the source's client alone (aiohttp,
   ``orjson.loads`` per message, one connection per symbol), i.e. the transport.
3. Bar close to online readability.  Per store (Postgres = the ``timescale``
   profile, Redis, local SQLite): ``--symbols`` warmed-up pipelines; for each bar
   boundary and symbol, the batch of raw messages that holds the first trade past
   the boundary goes through ``parse_messages`` -> ``SymbolPipeline.on_trades`` ->
   ``CrossAssetStep`` -> the flow's ``FeastOnlineSink`` partition ``write_batch``.
   *write*: from that batch entering ``parse_messages`` to ``write_batch``
   returning; *readable*: to the end of the first ``get_online_features`` call,
   made right after the write in the same thread, that returns this bar's values
   (checked against what was written).  Not included: websocket transport and the
   source's poll interval (``WsPartition`` hands batches over every 5 ms at most,
   so up to 5 ms more in the live flow).  Baseline: the same path with the sink
   replaced by nothing (compute only).
4. Backfill.  The 10 five-minute candle files through ``training.backfill.run_backfill``
   on the ``timescale`` profile into a scratch database (~720,000 bars, their bar
   features and cross-asset features).  Baselines: the same bars through the
   operators with a null sink (compute only; ``run_backfill`` pauses the cyclic GC
   and writes on a background thread, so the full run overlaps compute and COPY),
   and the write alone (the same records, collected
   by another run, written through the history sink in 200,000-record batches
   into a fresh scratch database).
5. Online read of the feature service ``lightgbm_1m_v1`` (bar + cross-asset
   views, 25 features) for one symbol, p50 and p99 over ``--reads`` calls on a
   reused ``FeatureStore``: ``get_online_features(...).to_dict()``, without
   ``to_dict()``, with ``full_feature_names=True``, and the online store's own
   ``online_read`` per view (the layer under the SDK); baseline: one raw key read
   on the same store's own client (SQLite ``SELECT``, Postgres ``SELECT``, Redis
   ``HGETALL``), i.e. what the round trip costs without the SDK.
6. Peak memory.  ``python -m bytewax.run flows.live`` as a subprocess (profile
   local, a scratch data dir) against a replay exchange in this process
   (``--mem-symbols`` synthetic symbols, speed max) for ``--mem-seconds`` s; RSS of
   the subprocess and its children sampled every 0.2 s with psutil.  Baseline: the
   RSS of the same subprocess once connected, before the first trade
   (imports, empty state).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bytewax.outputs import DynamicSink, StatelessSinkPartition  # noqa: E402

from flows.operators.cross_asset import CrossAssetStep  # noqa: E402
from flows.operators.parse import exchange_symbol, parse_messages  # noqa: E402
from flows.operators.pipeline import SymbolPipeline  # noqa: E402
from flows.records import Bar, BarReturn, FeatureRow  # noqa: E402
from flows.settings import Settings, load_settings  # noqa: E402
from flows.timeframes import timeframe_ms  # noqa: E402

SYMBOL_POOL = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT", "DOGE/USDT", "AVAX/USDT",
               "LINK/USDT", "LTC/USDT", "TRX/USDT", "BCH/USDT", "ADA/USDT")
T0 = 1_717_200_000_000  # 2024-06-01 00:00 UTC
RawBatch = tuple[str, int, list[str]]


@dataclass
class Row:
    """One line of the result table."""

    section: str
    figure: str
    value: float
    unit: str
    baseline: str = ""
    base_value: float = math.nan
    target: str = ""

    def cells(self) -> list[str]:
        ratio = self.value / self.base_value if self.base_value and not math.isnan(self.base_value) else math.nan
        return [self.section, self.figure, _num(self.value), self.unit, self.baseline,
                _num(self.base_value) if self.baseline else "", f"{ratio:.2f}x" if ratio == ratio else "",
                self.target]


def _num(x: float) -> str:
    if x != x:
        return "n/a"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.3g}"


def log(msg: str) -> None:
    """Progress on stderr, so stdout holds only the table."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def best_of(repeat: int, fn: Callable[[], float]) -> float:
    """Return the smallest of ``repeat`` timings of ``fn`` (which returns seconds)."""
    return min(fn() for _ in range(repeat))


# ---------------------------------------------------------------- market data

def trade_message(market_id: str, trade_id: int, price: float, qty: float, ts: int, maker: bool) -> str:
    """Return a Binance raw-stream trade message, as text."""
    return (f'{{"e":"trade","E":{ts + 3},"s":"{market_id}","t":{trade_id},"p":"{price:.8f}","q":"{qty:.8f}",'
            f'"T":{ts},"m":{"true" if maker else "false"},"M":true}}')


def make_market(trades: int, symbols: tuple[str, ...], batch: int, seed: int = 7,
                mean_gap_ms: float = 100.0) -> list[RawBatch]:
    """Return raw websocket batches: Binance raw-stream trade messages, ``batch`` per item.

    Each symbol gets ``trades / len(symbols)`` trades, exponential gaps of
    ``mean_gap_ms`` (1m bars of ~600 trades), a random-walk price; items of all
    symbols interleave in time order as the source would hand them over.
    """
    rng = random.Random(seed)
    per = trades // len(symbols)
    items: list[tuple[int, RawBatch]] = []
    for k, sym in enumerate(symbols):
        ex = exchange_symbol(sym)
        price, ts, tid = 100.0 * (k + 1), T0, 1_000_000
        for start in range(0, per, batch):
            msgs = []
            for _ in range(min(batch, per - start)):
                ts += int(rng.expovariate(1.0 / mean_gap_ms))
                tid += 1
                price *= math.exp(rng.gauss(0.0, 2e-4))
                msgs.append(trade_message(ex, tid, price, rng.expovariate(2.0), ts, rng.random() < 0.5))
            items.append((ts, (sym, ts + 5, msgs)))
    items.sort(key=lambda x: x[0])
    return [b for _, b in items]


def flow_settings(symbols: tuple[str, ...], data_dir: Path, **env: str) -> Settings:
    """Settings of the local profile for ``symbols``, data in a scratch dir.

    The project's own Feast repository: its registry and online store live under ``data_dir``
    (flows/stores/feast_paths.py), so a run touches nothing of the user's.  Section 1 named a
    copy of the repository here that nobody made, and ``build_flow`` stopped on it.
    """
    return load_settings(env={"CRYPTOSTREAM_SYMBOLS": ",".join(symbols), "CRYPTOSTREAM_DATA_DIR": str(data_dir),
                              "CRYPTOSTREAM_EXCHANGE__FILL_GAPS": "false", **env})


# ---------------------------------------------------------------- section 1

class CountingSink(DynamicSink[Any]):
    """A sink that keeps counts only: closed bars, the trades in them, other records."""

    def __init__(self, *_: Any, **__: Any) -> None:
        self.bars = self.trades = self.other = 0  # trades: in closed bars of the first timeframe seen
        self.timeframe = ""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> StatelessSinkPartition[Any]:
        sink = self

        class _Part(StatelessSinkPartition[Any]):
            def write_batch(self, items: list[Any]) -> None:
                for r in items:
                    if isinstance(r, Bar):
                        sink.bars += 1
                        sink.timeframe = sink.timeframe or r.timeframe
                        sink.trades += r.trade_count if r.timeframe == sink.timeframe else 0
                    else:
                        sink.other += 1

        return _Part()


@contextlib.contextmanager
def counting_sinks() -> Iterator[dict[str, CountingSink]]:
    """Swap the live flow's sinks for counting sinks while ``build_flow`` runs (this process only)."""
    import flows.live as live

    made: dict[str, CountingSink] = {}

    def factory(name: str) -> Callable[..., CountingSink]:
        def make(*args: Any, **kw: Any) -> CountingSink:
            made[name] = CountingSink()
            return made[name]
        return make

    saved = live.HistorySink, live.FeastOnlineSink, live.BarPrinter
    live.HistorySink, live.FeastOnlineSink, live.BarPrinter = (  # type: ignore[assignment,misc]
        factory("history"), factory("feast_online"), factory("console"))
    try:
        yield made
    finally:
        live.HistorySink, live.FeastOnlineSink, live.BarPrinter = saved  # type: ignore[misc]


def run_live_flow(settings: Settings, source: Any) -> dict[str, CountingSink]:
    """Run ``flows.live.build_flow`` with ``source`` and counting sinks; return the sinks."""
    from bytewax.testing import run_main

    from flows.live import build_flow

    with counting_sinks() as sinks:
        flow = build_flow(settings, source)
    run_main(flow)
    return sinks


def operators_loop(items: list[RawBatch], settings: Settings) -> int:
    """Run the flow's operators on ``items`` without Bytewax; return the number of trades parsed."""
    symbols = {exchange_symbol(s): s for s in settings.symbols}
    tfs = settings.bars.timeframes
    pipes = {s: SymbolPipeline(s, tfs, settings.bars.allowed_lateness_ms, settings.bars.fill_empty)
             for s in settings.symbols}
    cross = {tf: CrossAssetStep(settings.symbols, tf_ms=timeframe_ms(tf)) for tf in tfs}
    n = 0
    for sym, received, msgs in items:
        trades, _ = parse_messages(msgs, symbols, received)
        n += len(trades)
        for r in pipes[sym].on_trades(trades):
            if isinstance(r, BarReturn):
                cross[r.timeframe].update(r.symbol, r.ts, r.ret_1)
    return n


def fold_window_flow(items: list[RawBatch], source_batch: int) -> tuple[float, int]:
    """Bars the Bytewax-idiomatic way: one trade per item, ``fold_window``; return (seconds, bars)."""
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.operators.windowing import EventClock, TumblingWindower, fold_window
    from bytewax.testing import TestingSource, run_main

    symbols = {exchange_symbol(s): s for s, _, _ in items}
    msgs = [m for _, _, batch in items for m in batch]

    def parse(msg: bytes) -> tuple[str, int, float, float, bool]:
        d = orjson.loads(msg)
        return symbols[d["s"]], d["T"], float(d["p"]), float(d["q"]), d["m"]

    def fold(acc: list[float] | None, t: tuple[str, int, float, float, bool]) -> list[float]:
        _, _, p, q, m = t
        if acc is None:
            return [p, p, p, p, q, p * q, 1, 0.0 if m else q]
        acc[1], acc[2], acc[3] = max(acc[1], p), min(acc[2], p), p
        acc[4] += q
        acc[5] += p * q
        acc[6] += 1
        acc[7] += 0.0 if m else q
        return acc

    bars = CountingSink()
    flow = Dataflow("fold_window_bars")
    trades = op.map("parse", op.input("in", flow, TestingSource(msgs, batch_size=source_batch)), parse)
    keyed = op.key_on("by_symbol", trades, lambda t: t[0])
    clock = EventClock(lambda t: datetime.fromtimestamp(t[1] / 1000, tz=timezone.utc),
                       wait_for_system_duration=timedelta(0))
    windower = TumblingWindower(length=timedelta(minutes=1), align_to=datetime(2024, 1, 1, tzinfo=timezone.utc))
    out = fold_window("bars", keyed, clock, windower, lambda: None, fold, lambda a, b: a)  # type: ignore[arg-type]
    op.output("out", out.down, bars)
    t0 = time.perf_counter()
    run_main(flow)
    return time.perf_counter() - t0, bars.other


def section_throughput(args: argparse.Namespace, tmp: Path) -> list[Row]:
    """Section 1: trades/s of the real flow, the bare operators and a fold_window flow."""
    from bytewax.testing import TestingSource

    import flows.live  # noqa: F401  (imported before timing: it pulls in pandas and Feast's sink)
    from flows import feast_store

    symbols = SYMBOL_POOL[: args.symbols]
    log(f"1: building {args.trades:,} trade messages of {len(symbols)} symbols in batches of {args.batch}")
    items = make_market(args.trades, symbols, args.batch)
    n = sum(len(m) for _, _, m in items)
    rows = []
    for tfs in (("1m",), ("1m", "5m", "1h")) if not args.quick else (("1m",),):
        settings = flow_settings(symbols, tmp, CRYPTOSTREAM_BARS__TIMEFRAMES=",".join(tfs))
        label = "timeframe 1m" if len(tfs) == 1 else "timeframes 1m,5m,1h"
        feast_store.ensure_applied(settings)  # before timing: a first build_flow runs `feast apply` (seconds)

        def flow_once() -> float:
            gc.collect()
            t0 = time.perf_counter()
            sinks = run_live_flow(settings, TestingSource(items))  # noqa: B023 (called within the iteration)
            took = time.perf_counter() - t0
            closed = sinks["console"].trades  # all but each symbol's last, open bar
            assert n - 2_000 * len(symbols) < closed <= n, (closed, n)  # noqa: B023
            return took

        def loop_once() -> float:
            gc.collect()
            t0 = time.perf_counter()
            operators_loop(items, settings)  # noqa: B023 (called within the iteration)
            return time.perf_counter() - t0

        flow_s = best_of(args.repeat, flow_once)
        loop_s = best_of(args.repeat, loop_once)
        log(f"1: {label}: flow {n / flow_s:,.0f} trades/s, bare loop {n / loop_s:,.0f} trades/s")
        rows.append(Row("1 throughput", f"live flow, 1 worker, {label}", n / flow_s, "trades/s",
                        "bare operator loop (limit)", n / loop_s, ">= 300,000"))
        if len(tfs) == 1:
            k = min(n, args.fold_trades)
            sub = _first_trades(items, k)
            for source_batch in (1, args.batch):
                secs, _ = fold_window_flow(sub, source_batch)
                log(f"1: fold_window flow, source batches of {source_batch}: {k / secs:,.0f} trades/s ({k:,} trades)")
                rows.append(Row("1 throughput", f"live flow, 1 worker, {label}", n / flow_s, "trades/s",
                                f"fold_window, 1 trade/item, {source_batch}/poll", k / secs, ">= 300,000"))
    return rows


def _first_trades(items: list[RawBatch], k: int) -> list[RawBatch]:
    out, total = [], 0
    for sym, recv, msgs in items:
        if total >= k:
            break
        take = msgs[: k - total]
        out.append((sym, recv, take))
        total += len(take)
    return out


# ---------------------------------------------------------------- section 2

class TimedSource:
    """Wrap a partitioned source: count the messages its partitions hand over, and when."""

    def __init__(self, inner: Any) -> None:
        from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

        self.messages, self.first, self.last = 0, 0.0, 0.0
        outer = self

        class _Part(StatefulSourcePartition[Any, Any]):
            def __init__(self, part: Any) -> None:
                self.part = part

            def next_batch(self) -> list[Any]:
                batch = self.part.next_batch()
                if batch:
                    outer.last = time.perf_counter()
                    outer.first = outer.first or outer.last
                    outer.messages += sum(len(item[2]) for item in batch)
                return batch

            def next_awake(self) -> datetime | None:
                return self.part.next_awake()

            def snapshot(self) -> Any:
                return self.part.snapshot()

            def close(self) -> None:
                self.part.close()

        class _Source(FixedPartitionedSource[Any, Any]):
            def list_parts(self) -> list[str]:
                return inner.list_parts()

            def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _Part:
                return _Part(inner.build_part(step_id, for_part, resume_state))

        self.source = _Source()


@contextlib.contextmanager
def replay_process(n_symbols: int, rate: float, duration: str) -> Iterator[tuple[str, str, int]]:
    """Run the replay exchange (synthetic, speed max) in its own process; yield (http, ws, trades)."""
    import subprocess
    import urllib.request

    cmd = [sys.executable, "-m", "infra.replay_exchange", "--synthetic", str(n_symbols), "--seed", "7",
           "--speed", "max", "--port", "0", "--rate", str(rate), "--duration", duration,
           "--wait-for-streams", str(n_symbols)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        http_url = proc.stdout.readline().strip().split("=", 1)[1]
        ws_url = proc.stdout.readline().strip().split("=", 1)[1]
        with urllib.request.urlopen(f"{http_url}/replay/status") as r:
            events = int(orjson.loads(r.read())["events"])
        yield http_url, ws_url, events
    finally:
        proc.terminate()
        proc.wait(10)


def reset_replay(http_url: str) -> None:
    """Rewind the replay; its clock restarts once every stream is subscribed again."""
    import urllib.request

    req = urllib.request.Request(f"{http_url}/replay/control", data=b'{"action":"reset"}', method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        r.read()


def replay_status(http_url: str) -> dict[str, Any]:
    """Return the replay exchange's ``/replay/status``."""
    import urllib.request

    with urllib.request.urlopen(f"{http_url}/replay/status") as r:
        return orjson.loads(r.read())


async def _plain_clients(ws_url: str, per_stream: dict[str, int]) -> tuple[int, float]:
    """Read ``per_stream`` trades per stream with plain clients, one connection each; return (n, seconds).

    The client is the source's (aiohttp, ``orjson.loads`` per message) without Bytewax and the flow.
    """
    import asyncio

    import aiohttp

    got, first, last = 0, 0.0, 0.0

    async def one(session: aiohttp.ClientSession, stream: str, want: int) -> None:
        nonlocal got, first, last
        async with session.ws_connect(f"{ws_url}/ws", max_msg_size=0) as ws:
            await ws.send_bytes(orjson.dumps({"method": "SUBSCRIBE", "params": [stream], "id": 1}))
            mine = 0
            while mine < want:
                if "e" in orjson.loads((await ws.receive()).data):
                    last = time.perf_counter()
                    first = first or last
                    mine += 1
            got += mine

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session, s, n) for s, n in per_stream.items()))
    return got, last - first


def section_websocket(args: argparse.Namespace, tmp: Path) -> list[Row]:
    """Section 2: trades/s from the replay exchange over the websocket through the live flow."""
    import asyncio

    from flows.sources.binance_ws import BinanceTradeSource
    from infra.replay_exchange.synthetic import DEFAULT_SYMBOLS

    symbols = tuple(DEFAULT_SYMBOLS[: args.ws_symbols])
    settings = flow_settings(symbols, tmp)
    rates: dict[str, list[float]] = {"flow": [], "plain": []}
    with replay_process(len(symbols), args.ws_rate, args.ws_duration) as (http_url, ws_url, events):
        log(f"2: replay exchange with {events:,} trades of {len(symbols)} symbols")
        per_stream: dict[str, int] = {}
        for i in range(args.repeat):
            if i:
                reset_replay(http_url)
            src = TimedSource(BinanceTradeSource(symbols, ws_url, 0.0, http_url=http_url, fill_gaps=False,
                                                 idle_stop_s=1.0))
            run_live_flow(settings, src.source)
            per_stream = per_stream or replay_status(http_url)["streamed"]
            rates["flow"].append(src.messages / (src.last - src.first))
            log(f"2: flow: {src.messages:,} messages in {src.last - src.first:.2f}s: {rates['flow'][-1]:,.0f}/s")
            reset_replay(http_url)
            n, secs = asyncio.run(_plain_clients(ws_url, per_stream))
            rates["plain"].append(n / secs)
            log(f"2: plain clients: {n:,} trades in {secs:.2f}s: {rates['plain'][-1]:,.0f}/s")
    return [Row("2 websocket", f"replay ws -> live flow, {len(symbols)} symbols, 1 worker", max(rates["flow"]),
                "trades/s", "source's client alone (aiohttp+orjson)", max(rates["plain"]))]


# ---------------------------------------------------------------- stores (sections 3, 5)

@dataclass
class StoreCtx:
    """One online store prepared for the benchmark: its settings and a reader."""

    name: str
    settings: Settings
    reader: Any = None  # FeatureStore
    filled: bool = False  # holds warm features of every symbol


@contextlib.contextmanager
def scratch_database(base_dsn: str, tag: str) -> Iterator[str]:
    """Create and migrate a scratch database on the server of ``base_dsn``; drop it afterwards."""
    import uuid

    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    from infra.db import ensure_database, migrate

    name = f"bench_flow_{tag}_{uuid.uuid4().hex[:8]}"
    dsn = make_conninfo(base_dsn, dbname=name)
    ensure_database(dsn)
    try:
        migrate(dsn)
        yield dsn
    finally:
        with psycopg.connect(make_conninfo(base_dsn, dbname="postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _base_dsn(args: argparse.Namespace) -> str:
    dsn = args.dsn or os.environ.get("TIMESCALE_DSN")
    if not dsn:
        raise SystemExit("sections 3-5 need TimescaleDB: pass --dsn, or export TIMESCALE_DSN "
                         "(set -a; eval \"$(infra/up)\"; set +a) first")
    return dsn


_STORES: dict[str, StoreCtx] = {}


def prepared_stores(args: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack,
                    symbols: tuple[str, ...]) -> list[StoreCtx]:
    """Return the three online stores (Postgres, Redis, SQLite), applied, once per run."""
    if _STORES:
        return list(_STORES.values())
    import redis

    from flows import feast_store
    from tests.kit.repo import copy_feature_repo

    dsn = stack.enter_context(scratch_database(_base_dsn(args), "online"))
    redis_url = f"redis://{args.redis_host}/{args.redis_db}"
    redis.Redis.from_url(redis_url).flushdb()
    stack.callback(lambda: redis.Redis.from_url(redis_url).flushdb())
    for name, env in (("postgres", {"CRYPTOSTREAM_PROFILE": "timescale", "CRYPTOSTREAM_FEAST_ONLINE": "postgres"}),
                      ("redis", {"CRYPTOSTREAM_PROFILE": "timescale", "CRYPTOSTREAM_FEAST_ONLINE": "redis"}),
                      ("sqlite", {"CRYPTOSTREAM_PROFILE": "local"})):
        base = tmp / f"store_{name}"
        repo = copy_feature_repo(base)
        settings = load_settings(env={**env, "TIMESCALE_DSN": dsn, "REDIS_URL": redis_url,
                                      "CRYPTOSTREAM_FEAST_REPO": str(repo), "CRYPTOSTREAM_DATA_DIR": str(base / "var"),
                                      "CRYPTOSTREAM_SYMBOLS": ",".join(symbols)})
        log(f"feast apply ({name})")
        feast_store.apply(settings)
        _STORES[name] = StoreCtx(name, settings, feast_store.open_store(settings))
    return list(_STORES.values())


def minute_batches(symbols: tuple[str, ...], minutes: int, seed: int = 11,
                   per_minute: int = 60) -> list[tuple[bool, RawBatch]]:
    """Return (closes_a_bar, batch) in time order: per minute and symbol, the first trade alone, then the rest.

    The lone first trade of a minute is the one that closes the previous bar.
    """
    rng = random.Random(seed)
    price = {s: 100.0 * (i + 1) for i, s in enumerate(symbols)}
    tid = dict.fromkeys(symbols, 1)
    out: list[tuple[bool, RawBatch]] = []
    for m in range(minutes):
        for sym in symbols:
            msgs = []
            for k in range(per_minute):
                ts = T0 + m * 60_000 + k * (60_000 // per_minute) + rng.randint(0, 500)
                tid[sym] += 1
                price[sym] *= math.exp(rng.gauss(0.0, 3e-4))
                msgs.append(trade_message(exchange_symbol(sym), tid[sym], price[sym], rng.expovariate(2.0), ts,
                                          rng.random() < 0.5))
            out.append((m > 0, (sym, ts, msgs[:1])))
            out.append((False, (sym, ts, msgs[1:])))
    return out


class OnlinePath:
    """The flow's path from a raw batch to the online store: parse, pipeline, cross-asset, Feast sink."""

    def __init__(self, settings: Settings, sink: Any) -> None:
        self.symbols = {exchange_symbol(s): s for s in settings.symbols}
        self.pipes = {s: SymbolPipeline(s, ("1m",)) for s in settings.symbols}
        self.cross = CrossAssetStep(settings.symbols, tf_ms=60_000)
        self.sink = sink

    def feed(self, batch: RawBatch) -> list[FeatureRow]:
        sym, received, msgs = batch
        trades, _ = parse_messages(msgs, self.symbols, received)
        rows: list[FeatureRow] = []
        for r in self.pipes[sym].on_trades(trades):
            if isinstance(r, FeatureRow):
                rows.append(r)
            elif isinstance(r, BarReturn):
                rows += [FeatureRow("cross_asset_features", s, "1m", ts, f)
                         for s, ts, f in self.cross.update(r.symbol, r.ts, r.ret_1)]
        if rows and self.sink is not None:
            self.sink.write_batch(rows)
        return rows


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1] if len(values) > 1 else values[0]


def section_latency(args: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack) -> list[Row]:
    """Section 3: first trade after a bar boundary -> that bar's features written / readable online."""
    from flows.sinks.feast_online import FeastOnlineSink

    symbols = SYMBOL_POOL[: args.symbols]
    warm = 70  # features need 61 bars, cross-asset features 61 returns
    batches = minute_batches(symbols, warm + args.closes + 1)
    split = next(i for i, (_, (s, ts, _)) in enumerate(batches) if ts >= T0 + warm * 60_000)
    rows = []
    # Compute only: the same path without a sink.
    path = OnlinePath(flow_settings(symbols, tmp), None)
    for _, b in batches[:split]:
        path.feed(b)
    compute = []
    for closes, b in batches[split:]:
        t0 = time.perf_counter()
        path.feed(b)
        if closes:
            compute.append(time.perf_counter() - t0)
    base_p50, base_p99 = _pct(compute, 50) * 1e3, _pct(compute, 99) * 1e3
    for ctx in prepared_stores(args, tmp, stack, symbols):
        sink = FeastOnlineSink(ctx.settings).build("feast_online", 0, 1)
        path = OnlinePath(ctx.settings, sink)
        for _, b in batches[:split]:
            path.feed(b)
        refs = ["bar_features_1m:ret_1", "bar_features_1m:rsi_14"]
        written, readable, retries = [], [], 0
        for closes, b in batches[split:]:
            t0 = time.perf_counter()
            out = path.feed(b)
            t1 = time.perf_counter()
            if not closes:
                continue
            want = next(r for r in out if r.table == "bar_features" and r.symbol == b[0])
            while True:
                got = ctx.reader.get_online_features(features=refs, entity_rows=[{"symbol": b[0]}]).to_dict()
                if got["ret_1"][0] == want.values["ret_1"] and got["rsi_14"][0] == want.values["rsi_14"]:
                    break
                retries += 1
            t2 = time.perf_counter()
            written.append(t1 - t0)
            readable.append(t2 - t0)
        sink.close()
        ctx.filled = True
        w50, w99 = _pct(written, 50) * 1e3, _pct(written, 99) * 1e3
        r50, r99 = _pct(readable, 50) * 1e3, _pct(readable, 99) * 1e3
        log(f"3: {ctx.name}: {len(written)} bar closes; written p50 {w50:.2f} p99 {w99:.2f} ms, "
            f"readable p50 {r50:.2f} p99 {r99:.2f} ms (reads that missed: {retries})")
        target = "p99 <= 10 ms" if ctx.name == "postgres" else ""
        label = {"postgres": "Postgres (timescale profile)", "redis": "Redis", "sqlite": "SQLite (local)"}[ctx.name]
        rows += [Row("3 bar->online", f"{label}: written p50", w50, "ms", "compute only p50", base_p50),
                 Row("3 bar->online", f"{label}: written p99", w99, "ms", "compute only p99", base_p99, target),
                 Row("3 bar->online", f"{label}: readable p50", r50, "ms", "compute only p50", base_p50),
                 Row("3 bar->online", f"{label}: readable p99", r99, "ms", "compute only p99", base_p99, target)]
    return rows


# ---------------------------------------------------------------- section 4

class CollectingSink:
    """Stands in for ``HistorySink`` in the backfill: keeps (or only counts) what would be written."""

    def __init__(self, keep: bool) -> None:
        self.keep, self.items, self.count = keep, [], 0

    def build(self, *_: Any) -> CollectingSink:
        return self

    def write_batch(self, items: list[Any]) -> None:
        self.count += len(items)
        if self.keep:
            self.items += items

    def close(self) -> None:
        pass


def section_backfill(args: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack) -> list[Row]:
    """Section 4: the 10 five-minute files through run_backfill into TimescaleDB."""
    import training.backfill as backfill
    from flows.sinks.history import HistorySink
    from flows.sources.candle_files import CandleFile, read_candles

    files = sorted(Path(args.data, "binance-spot-5m-2024").glob("*.parquet"))
    if not files:
        log(f"4: skipped: no candle files under {args.data}/binance-spot-5m-2024")
        return []
    frames = {}
    for f in files:
        cf = CandleFile.from_path(f)
        df = read_candles(f, None, None)
        frames[f"{cf.base}/{cf.quote}"] = df.iloc[: args.backfill_bars] if args.backfill_bars else df
    n_bars = sum(len(df) for df in frames.values())

    def streams() -> dict[str, Any]:
        return {s: backfill.bars_from_frame(s, "5m", df) for s, df in frames.items()}

    def settings_for(dsn: str) -> Settings:
        return load_settings(env={"CRYPTOSTREAM_PROFILE": "timescale", "TIMESCALE_DSN": dsn,
                                  "REDIS_URL": f"redis://{args.redis_host}/{args.redis_db}",
                                  "CRYPTOSTREAM_DATA_DIR": str(tmp / "backfill"),
                                  "CRYPTOSTREAM_SYMBOLS": ",".join(frames)})

    log(f"4: {n_bars:,} bars of {len(frames)} symbols")
    with scratch_database(_base_dsn(args), "backfill") as dsn:
        t0 = time.perf_counter()
        counts = backfill.run_backfill(settings_for(dsn), streams(), "5m")
        full = time.perf_counter() - t0
    log(f"4: run_backfill: {counts} in {full:.1f}s")
    def with_sink(sink: CollectingSink) -> float:
        saved = backfill.HistorySink
        backfill.HistorySink = lambda *a, **k: sink  # type: ignore[assignment,misc]
        try:
            gc.collect()
            t0 = time.perf_counter()
            backfill.run_backfill(settings_for("postgresql://unused"), streams(), "5m")
            return time.perf_counter() - t0
        finally:
            backfill.HistorySink = saved  # type: ignore[misc]

    compute = with_sink(CollectingSink(keep=False))
    log(f"4: compute only (operators, null sink): {compute:.1f}s")
    collected = CollectingSink(keep=True)
    with_sink(collected)  # untimed: the records for the write-alone figure (holding them all slows the run)
    with scratch_database(_base_dsn(args), "write") as dsn:
        sink = HistorySink(settings_for(dsn), flush_interval_s=float("inf")).build("backfill", 0, 1)
        items, chunk = collected.items, 200_000
        t0 = time.perf_counter()
        for i in range(0, len(items), chunk):
            sink.write_batch(items[i:i + chunk])
        sink.close()
        write = time.perf_counter() - t0
    log(f"4: write alone (history sink, same records): {write:.1f}s")
    label = f"backfill {len(frames)} files 5m ({n_bars:,} bars) -> TimescaleDB"
    return [Row("4 backfill", label, full, "s", "compute only (null sink)", compute, "<= 30 s"),
            Row("4 backfill", label, full, "s", "write alone (history sink)", write, "<= 30 s"),
            Row("4 backfill", "bars/s through the backfill", n_bars / full, "bars/s", "compute only",
                n_bars / compute, "")]


# ---------------------------------------------------------------- section 5

def _raw_reader(ctx: StoreCtx, symbol: str) -> Callable[[], Any]:
    """Return a read of the symbol's rows with the store's own client, without Feast's SDK."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    key = serialize_entity_key(EntityKey(join_keys=["symbol"], entity_values=[Value(string_val=symbol)]),
                               entity_key_serialization_version=3)
    tables = ["cryptostream_bar_features_1m", "cryptostream_cross_asset_features_1m"]
    if ctx.name == "redis":
        import redis

        r = redis.Redis.from_url(ctx.settings.redis_url.get_secret_value())  # type: ignore[union-attr]
        rkey = key + b"cryptostream"
        return lambda: r.hgetall(rkey)
    if ctx.name == "postgres":
        import psycopg

        conn = psycopg.connect(ctx.settings.timescale_dsn.get_secret_value(), autocommit=True)  # type: ignore[union-attr]
        q = " UNION ALL ".join(f"SELECT feature_name, value, event_ts FROM feast_online.{t} WHERE entity_key = %(k)s"
                               for t in tables)
        return lambda: conn.execute(q, {"k": key}).fetchall()
    import sqlite3

    conn = sqlite3.connect(ctx.settings.data_dir / "feast" / "online.db")
    q = " UNION ALL ".join(f"SELECT feature_name, value, event_ts FROM {t} WHERE entity_key = ?" for t in tables)
    return lambda: conn.execute(q, (key, key)).fetchall()


def _read_cases(store: Any, symbol: str) -> dict[str, Callable[[], Any]]:
    """Return the reads of section 5 on ``store`` (a FeatureStore) for ``symbol``."""
    from feast.infra.online_stores.helpers import get_online_store_from_config
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    service = store.get_feature_service("lightgbm_1m_v1")
    entity = [{"symbol": symbol}]
    online = get_online_store_from_config(store.config.online_store)
    views = [store.get_feature_view(p.name) for p in service.feature_view_projections]
    key = EntityKey(join_keys=["symbol"], entity_values=[Value(string_val=symbol)])
    return {
        "get_online_features(service).to_dict()":
            lambda: store.get_online_features(features=service, entity_rows=entity).to_dict(),
        "get_online_features(service), no to_dict":
            lambda: store.get_online_features(features=service, entity_rows=entity),
        "... full_feature_names=True, to_dict()":
            lambda: store.get_online_features(features=service, entity_rows=entity, full_feature_names=True).to_dict(),
        "OnlineStore.online_read per view (under the SDK)":
            lambda: [online.online_read(store.config, v, [key], [f.name for f in v.features]) for v in views],
    }


def section_reads(args: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack) -> list[Row]:
    """Section 5: p99 of an online read of the feature service lightgbm_1m_v1 for one symbol."""
    symbols = SYMBOL_POOL[: args.symbols]
    stores = prepared_stores(args, tmp, stack, symbols)
    from flows.sinks.feast_online import FeastOnlineSink

    for ctx in stores:
        if not ctx.filled:
            batches = minute_batches(symbols, 75)
            sink = FeastOnlineSink(ctx.settings).build("feast_online", 0, 1)
            path = OnlinePath(ctx.settings, sink)
            for _, b in batches:
                path.feed(b)
            sink.close()
            ctx.filled = True
    rows = []
    sym = symbols[0]
    for ctx in stores:
        cases = _read_cases(ctx.reader, sym)
        got = cases["get_online_features(service).to_dict()"]()
        assert got["ret_1"][0] is not None and got["corr_btc_60"][0] is not None, "online store not filled"
        raw = _raw_reader(ctx, sym)
        assert len(raw()) > 0
        times: dict[str, list[float]] = {k: [] for k in [*cases, "raw"]}
        for _ in range(args.reads):  # interleaved, so load from elsewhere hits every case alike
            for k, fn in [*cases.items(), ("raw", raw)]:
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
        raw50, raw99 = _pct(times["raw"], 50) * 1e3, _pct(times["raw"], 99) * 1e3
        label = {"postgres": "PostgreSQL", "redis": "Redis", "sqlite": "SQLite"}[ctx.name]
        for k in cases:
            p50, p99 = _pct(times[k], 50) * 1e3, _pct(times[k], 99) * 1e3
            log(f"5: {label}: {k}: p50 {p50:.3f} ms, p99 {p99:.3f} ms (raw read p50 {raw50:.3f}, p99 {raw99:.3f})")
            rows.append(Row("5 online read", f"{label}: {k} p99", p99, "ms", "raw client read of the key p99", raw99,
                            "<= 1 ms" if k.endswith("to_dict()") and "full" not in k else ""))
        rows.append(Row("5 online read", f"{label}: get_online_features(service).to_dict() p50",
                        _pct(times["get_online_features(service).to_dict()"], 50) * 1e3, "ms",
                        "raw client read of the key p50", raw50))
    return rows


# ---------------------------------------------------------------- section 6

def section_memory(args: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack) -> list[Row]:
    """Section 6: peak RSS of ``python -m bytewax.run flows.live`` with many symbols against a replay."""
    import subprocess

    import psutil

    from flows import feast_store
    from flows.settings import load_settings as _load
    from infra.replay_exchange.server import running_replay
    from infra.replay_exchange.synthetic import DEFAULT_SYMBOLS
    from tests.kit.repo import copy_feature_repo

    symbols = tuple(DEFAULT_SYMBOLS[: args.mem_symbols])
    base = tmp / "memory"
    repo = copy_feature_repo(base)
    env = {"CRYPTOSTREAM_PROFILE": "local", "CRYPTOSTREAM_SYMBOLS": ",".join(symbols),
           "CRYPTOSTREAM_FEAST_REPO": str(repo), "CRYPTOSTREAM_DATA_DIR": str(base / "var"),
           "CRYPTOSTREAM_DURATION_S": str(args.mem_seconds)}
    feast_store.apply(_load(env=env))
    with running_replay(None, speed=0, synthetic=symbols, seed=7, synthetic_rate=args.ws_rate,
                        wait_for_streams=len(symbols)) as ex:
        env.update({"CRYPTOSTREAM_EXCHANGE__HTTP_URL": ex.http_url, "CRYPTOSTREAM_EXCHANGE__WS_URL": ex.ws_url,
                    "CRYPTOSTREAM_EXCHANGE__API_KEY": "replay-exchange"})
        proc = subprocess.Popen([sys.executable, "-m", "bytewax.run", "flows.live"], cwd=ROOT,
                                env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        ps = psutil.Process(proc.pid)
        peak, at_start, samples = 0, 0, 0
        while proc.poll() is None:
            try:
                rss = sum(p.memory_info().rss for p in [ps, *ps.children(recursive=True)])
            except psutil.NoSuchProcess:
                break
            if not int(ex.engine.streamed.sum()):
                at_start = rss  # connected, nothing streamed yet
            peak = max(peak, rss)
            samples += 1
            time.sleep(0.2)
        err = proc.stderr.read() if proc.stderr else ""
        streamed = int(ex.engine.streamed.sum())
    if proc.returncode != 0:
        log(f"6: flows.live exited with {proc.returncode}: {err[-2000:]}")
    mb = 1 / 2**20
    log(f"6: {len(symbols)} symbols, {args.mem_seconds}s: peak RSS {peak * mb:,.0f} MB, before the first trade "
        f"{at_start * mb:,.0f} MB, {streamed:,} trades streamed, {samples} samples")
    return [Row("6 memory", f"peak RSS, live flow, {len(symbols)} symbols, {args.mem_seconds}s, "
                f"{streamed:,} trades", peak * mb, "MB", "RSS before the first trade", at_start * mb, "<= 1,024 MB")]


# ---------------------------------------------------------------- main

SECTIONS: dict[str, Callable[..., list[Row]]] = {
    "1": section_throughput,
    "2": section_websocket,
    "3": section_latency,
    "4": section_backfill,
    "5": section_reads,
    "6": section_memory,
}


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, run the chosen sections and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", default="1,2,3,4,5,6", help="comma-separated section numbers")
    ap.add_argument("--quick", action="store_true", help="small sizes (a short run)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per throughput figure; the best is kept")
    ap.add_argument("--trades", type=int, default=2_000_000, help="1: trade messages")
    ap.add_argument("--symbols", type=int, default=5, help="1, 3: symbols")
    ap.add_argument("--batch", type=int, default=1000, help="1: messages per item")
    ap.add_argument("--fold-trades", type=int, default=300_000, help="1: trades for the fold_window baseline")
    ap.add_argument("--ws-symbols", type=int, default=5, help="2: synthetic symbols")
    ap.add_argument("--ws-rate", type=float, default=10.0, help="2, 6: synthetic trades/s per symbol (calm)")
    ap.add_argument("--ws-duration", default="6h", help="2: synthetic market length")
    ap.add_argument("--closes", type=int, default=200, help="3: bar closes per symbol and store")
    ap.add_argument("--reads", type=int, default=2000, help="5: reads per case and store")
    ap.add_argument("--backfill-bars", type=int, default=0, help="4: bars per file (0 = all)")
    ap.add_argument("--mem-symbols", type=int, default=10, help="6: synthetic symbols")
    ap.add_argument("--mem-seconds", type=int, default=60, help="6: seconds the live flow runs")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="4: the shared data folder")
    ap.add_argument("--dsn", help="TimescaleDB server (default $TIMESCALE_DSN); scratch databases are made on it")
    ap.add_argument("--redis-host", default="127.0.0.1:6379")
    ap.add_argument("--redis-db", type=int, default=9, help="Redis db index to use (flushed)")
    args = ap.parse_args(argv)
    if args.quick:
        args.trades, args.repeat, args.fold_trades = min(args.trades, 300_000), 1, min(args.fold_trades, 60_000)
        args.ws_duration, args.closes, args.reads = "1h", 40, 300
        args.backfill_bars, args.mem_seconds = args.backfill_bars or 10_000, min(args.mem_seconds, 15)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench_flow_") as tmp, contextlib.ExitStack() as stack:
        for s in args.sections.split(","):
            log(f"section {s.strip()}")
            section = SECTIONS[s.strip()]
            rows += section(args, Path(tmp), stack) if s.strip() in "3456" else section(args, Path(tmp))
    print_table(rows, args)
    return 0


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    """Print the result table (stdout)."""
    head = ["section", "figure", "value", "unit", "baseline (same run)", "baseline", "ratio", "target"]
    cells = [head] + [r.cells() for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    print(f"\nbench_flow: {' '.join(sys.argv[1:]) or '(defaults)'}; python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    for i, c in enumerate(cells):
        print("  ".join(x.rjust(w) if j in (2, 5, 6) else x.ljust(w) for j, (x, w) in enumerate(zip(c, widths, strict=True))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    raise SystemExit(main())
