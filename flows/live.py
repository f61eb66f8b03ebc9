"""The live dataflow: ``python -m bytewax.run flows.live``.

exchange websocket (one partition per symbol, batches of raw messages)
-> parse and validate (bad messages -> dead letters)
-> per symbol: dedupe, event-time bars for every timeframe, features
-> cross-asset step (all symbols of one bar time, keyed by timeframe)
-> sinks: history (TimescaleDB or parquet), Feast online store, console
-> with ``monitoring.metrics_port`` set, every stage counted and timed on /metrics
   (:mod:`flows.monitoring.metrics`; one call per batch, never per trade)
-> when the registry holds models (``flows.decisions_flow``): scoring of the trading
   timeframe's bar times, decisions (risk, broker, portfolio), decision sinks.

Settings come from the environment and ``$CRYPTOSTREAM_CONFIG`` (see
``flows/settings.py``); invalid settings stop the program at import with a
message naming the field (exit 2).  Logs go to the console and ``<data_dir>/trading.log``
(:mod:`flows.monitoring.logging`); SIGINT or SIGTERM stops the flow cleanly and it prints
its summary at exit (:mod:`flows.lifecycle`).
"""

from __future__ import annotations

import atexit
import itertools
import sys
import threading
import time
from time import perf_counter
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source

from flows.exchange.universe import with_universe
from flows.feature_catalog import FEATURE_TIMEFRAMES
from flows.lifecycle import EXIT_USAGE, install_stop_handlers, stop_requested, write_summary
from flows.monitoring.hooks import SAMPLE, measured_parse, time_features
from flows.monitoring.logging import configure_logging, model_secrets
from flows.monitoring.metrics import FlowMetrics
from flows.monitoring.metrics import start as start_metrics
from flows.operators.cross_asset import CrossAssetStep
from flows.operators.parse import exchange_symbol, parse_messages
from flows.operators.pipeline import Output, SymbolPipeline
from flows.records import Bar, BarReturn, DeadLetter, FeatureRow, WarmupBar
from flows.recovery import recoverable, recovery_path
from flows.settings import Settings, SettingsError, load_settings
from flows.sinks.console import BarPrinter
from flows.sinks.feast_online import FeastOnlineSink
from flows.sinks.history import HistorySink
from flows.sinks.metrics import timed
from flows.sources.binance_ws import BinanceTradeSource, RawBatch
from flows.sources.id_gaps import IdGapRepair
from flows.sources.rest_fill import TradeFiller
from flows.start_points import StartPoints
from flows.timeframes import timeframe_ms
from flows.warmup import KlineWarmup

PUBLIC_FILL_NOTE = (
    "exchange.fill_gaps: no exchange.api_key, so gaps are filled from Binance's public aggregated trades "
    "(aggTrades, no key; bars and features equal those of the single trades). The per-trade fill "
    "(historicalTrades) needs a read-only key: CRYPTOSTREAM_EXCHANGE__API_KEY")


def symbol_step(settings: Settings, metrics: FlowMetrics | None = None, warmup: KlineWarmup | None = None):
    """Return the per-symbol step (a :class:`SymbolPipeline`; Bytewax keeps its snapshot, :mod:`flows.recovery`).

    With ``warmup``, a pipeline created without a snapshot first warms its features up on the
    klines before its first trade (:mod:`flows.warmup`).

    With ``metrics``, each batch is counted, and one in :data:`~flows.monitoring.hooks.SAMPLE` is timed
    (bars and features apart).
    """
    tfs, lateness, fill = settings.bars.timeframes, settings.bars.allowed_lateness_ms, settings.bars.fill_empty
    cap, tt = settings.bars.max_empty_bars, settings.trade_time

    def step(pipe: SymbolPipeline | None, item: tuple[str, list]) -> tuple[SymbolPipeline, list[Output]]:
        symbol, trades = item
        if pipe is None:
            pipe = SymbolPipeline(symbol, tfs, lateness, fill, max_empty_bars=cap, max_jump_ms=tt.max_jump_ms,
                                  confirm_trades=tt.confirm_trades)
            if warmup is not None:
                warm: list[Output] = [*pipe.warm_up(warmup.bars(symbol, min(t.ts for t in trades)))]
                return pipe, warm + pipe.on_trades(trades)
        return pipe, pipe.on_trades(trades)

    if metrics is None:
        return step

    tick = itertools.count()

    def measured(pipe: SymbolPipeline | None, item: tuple[str, list]) -> tuple[SymbolPipeline, list[Output]]:
        if next(tick) % SAMPLE and pipe is not None:  # counted, not timed
            pipe, out = step(pipe, item)
            if out:
                metrics.on_pipeline(out, None, 0.0)
            return pipe, out
        if pipe is None:  # a new pipeline's first batch: features untimed
            t0 = perf_counter()
            pipe, out = step(pipe, item)
            metrics.on_pipeline(out, perf_counter() - t0, 0.0)
            return pipe, out
        with time_features(pipe) as clock:
            t0 = perf_counter()
            pipe, out = step(pipe, item)
            took = perf_counter() - t0
        metrics.on_pipeline(out, took, clock.seconds)
        return pipe, out

    return measured


def id_gap_step(settings: Settings, symbols: dict[str, str], api_key: str | None):
    """Return the hole-filling step (:class:`IdGapRepair`); its REST client is built once per worker."""
    ex = settings.exchange
    clients = threading.local()  # one ccxt client per worker thread

    def parse(msgs: list[bytes]) -> tuple[list, list[DeadLetter]]:
        return parse_messages(msgs, symbols, int(time.time() * 1000), source="binance.rest",
                              trade_time=settings.trade_time)

    def step(state: IdGapRepair | None, item: tuple[str, list]) -> tuple[IdGapRepair, list[tuple]]:
        symbol, trades = item
        if state is None:
            state = IdGapRepair(symbol)
        filler = getattr(clients, "filler", None)
        if filler is None:
            filler = clients.filler = TradeFiller(ex.http_url, ex.ws_url, api_key, retry=ex.fill_retry)
        out, dead = state.repair(trades, filler, parse)
        return state, [(symbol, out, dead)]

    return step


def cross_step(settings: Settings, metrics: FlowMetrics | None = None):
    """Return the cross-asset step, keyed by timeframe (a :class:`CrossAssetStep`; Bytewax keeps its snapshot)."""

    def step(state: CrossAssetStep | None, ret: BarReturn | WarmupBar) -> tuple[CrossAssetStep, list[FeatureRow]]:
        if state is None:
            state = CrossAssetStep(settings.symbols, tf_ms=timeframe_ms(ret.timeframe))
        if ret.ret_1 is None:  # a warm-up's first kline: no return yet
            return state, []
        rows = state.update(ret.symbol, ret.ts, ret.ret_1, warmup=isinstance(ret, WarmupBar))
        return state, [FeatureRow("cross_asset_features", sym, ret.timeframe, ts, f) for sym, ts, f in rows]

    if metrics is None:
        return step

    def measured(state: CrossAssetStep | None, ret: BarReturn | WarmupBar) -> tuple[CrossAssetStep, list[FeatureRow]]:
        t0 = perf_counter()
        state, rows = step(state, ret)
        metrics.on_cross_asset(rows, perf_counter() - t0)
        return state, rows

    return measured


def add_features(flow: Dataflow, trades: Stream[tuple[str, tuple[str, list]]], settings: Settings,
                 metrics: FlowMetrics | None = None, warmup: KlineWarmup | None = None
                 ) -> tuple[Stream[Any], Stream[FeatureRow]]:
    """Wire the per-symbol and cross-asset steps; return (all records, feature rows)."""
    out = recoverable("symbol_pipeline", trades, SymbolPipeline.from_snapshot, symbol_step(settings, metrics, warmup))
    records = op.key_rm("unkey", out)
    rets: Stream[BarReturn | WarmupBar] = op.filter_map(
        "bar_returns", records, lambda r: r if isinstance(r, (BarReturn, WarmupBar)) else None)
    keyed = op.key_on("by_timeframe", rets, lambda r: str(r[1]))  # BarReturn.timeframe, WarmupBar.timeframe
    cross = op.key_rm("unkey_cross", recoverable("cross_asset", keyed, CrossAssetStep.from_snapshot,
                                                 cross_step(settings, metrics)))
    symbol_rows = op.filter_map("symbol_features", records, lambda r: r if isinstance(r, FeatureRow) else None)
    return records, op.merge("features", symbol_rows, cross)


def daily_rows(settings: Settings, bars: Stream[Bar]) -> Stream[FeatureRow]:
    """Return the daily groups' rows as they become known at the trading timeframe's bar closes.

    The providers are polled when a group's next value is due (``daily.poll_minutes`` of bar time);
    the rows go to the history and Feast online sinks with the same ``ts`` as the offline backfill.
    """
    from datetime import timedelta

    from flows.operators.daily_features import DailyRowEmitter, PollingDaily
    from flows.sources.daily_config import open_daily

    feats = open_daily(settings.daily)
    tf = settings.trading_timeframe()
    if feats is None:
        return op.filter_map("daily_rows", bars, lambda b: None)
    emitter = DailyRowEmitter(PollingDaily(feats, timedelta(minutes=settings.daily.poll_minutes)), settings.symbols)
    tf_ms = timeframe_ms(tf)
    return op.flat_map("daily_rows", bars,
                       lambda b: emitter.on_close(b.ts + tf_ms) if b.timeframe == tf else [])


def regime_rows(settings: Settings, bars: Stream[Bar]) -> Stream[FeatureRow]:
    """Return the ``regime`` group's rows: the regime known at each sampled close (none while ``regime.source`` is off).

    The same tracker as the decision step's (:func:`flows.operators.regime.build_feed`) reads the
    reference symbol's closes of the trading timeframe; each new state is one row per traded
    symbol with ``ts`` = its close, to the history and Feast online sinks.  The tracker is
    recoverable state: a restart continues it.
    """
    from flows.operators.regime import RegimeRowEmitter, build_feed

    cfg, tf = settings.regime, settings.trading_timeframe()
    if cfg.source == "off":
        return op.filter_map("regime_rows", bars, lambda b: None)
    tf_ms = timeframe_ms(tf)

    def new(snapshot: Any = None) -> RegimeRowEmitter:
        try:
            feed = build_feed(cfg, settings.symbols, tf_ms, settings.registry_root())
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        assert feed is not None
        if snapshot is not None:
            feed.restore(snapshot)
        return RegimeRowEmitter(feed, settings.symbols)

    ref = new().feed.symbol  # a bad model or symbol fails here, before the flow runs

    def step(emitter: RegimeRowEmitter | None, b: Bar) -> tuple[RegimeRowEmitter, list[FeatureRow]]:
        emitter = emitter or new()
        return emitter, emitter.on_close(b.ts + tf_ms, b.close)

    ref_bars = op.filter("regime_bars", bars, lambda b: b.timeframe == tf and b.symbol == ref)
    keyed = op.key_on("regime_key", ref_bars, lambda _: "regime")
    return op.key_rm("unkey_regime", recoverable("regime_rows", keyed, new, step))


def build_flow(settings: Settings, source: Source[RawBatch] | None = None, warmup: bool | None = None) -> Dataflow:
    """Build the live dataflow; ``source`` replaces the exchange websocket (tests, replays).

    ``warmup``: warm fresh pipelines up on the exchange's klines (``exchange.warmup_klines``,
    :mod:`flows.warmup`); by default only with the exchange's own source.
    """
    unsupported = set(settings.bars.timeframes) - set(FEATURE_TIMEFRAMES)
    if unsupported:
        raise SettingsError(f"bars.timeframes: {sorted(unsupported)} have no Feast views; "
                            f"accepted: {', '.join(FEATURE_TIMEFRAMES)}")
    from flows import feast_store

    feast_store.ensure_applied(settings)  # a first run without `feast apply` registers the views itself
    symbols = {exchange_symbol(s): s for s in settings.symbols}
    metrics = start_metrics(settings.monitoring, settings.risk.limits.max_drawdown)  # None: port 0, no hooks
    flow = Dataflow("live")
    ex = settings.exchange
    since = int(ex.fill_since.timestamp() * 1000) if ex.fill_since else None
    repair = ex.fill_gaps and source is None  # a given source (tests, replays) has no REST behind it
    if repair and ex.api_key is None:
        print(PUBLIC_FILL_NOTE, file=sys.stderr)
    key = ex.api_key.get_secret_value() if ex.api_key else None
    given = source is not None
    source = source or BinanceTradeSource(settings.symbols, ex.ws_url, settings.duration_s, ex.http_url, key,
                                          ex.fill_gaps, since, ex.idle_stop_s, should_stop=stop_requested,
                                          fill_retry=ex.fill_retry, start_points=StartPoints(recovery_path()))
    raw = op.input("exchange_ws", flow, source)

    def parse(batch: RawBatch) -> tuple[str, tuple[list, list[DeadLetter]]]:
        symbol, received_ms, msgs = batch
        trades, dead = parse_messages(msgs, symbols, received_ms, trade_time=settings.trade_time)
        return symbol, (trades, dead)

    parsed = op.map("parse", raw, parse if metrics is None else measured_parse(parse, metrics))
    trades = op.filter_map_value("trades", parsed, lambda v: (v[0][0].symbol, v[0]) if v[0] else None)
    dead = op.flat_map("parse_dead_letters", parsed, lambda kv: kv[1][1])
    if repair:
        # holes in the trade ids (a corrupted trade went to the dead letters): refetch them from REST
        repaired = recoverable("id_gaps", trades, IdGapRepair.from_snapshot, id_gap_step(settings, symbols, key))
        trades = op.map_value("repaired_trades", repaired, lambda v: (v[0], v[1]))
        dead = op.merge("dead_letters", dead, op.flat_map("fill_dead_letters", repaired, lambda kv: kv[1][2]))
    warm = (KlineWarmup(ex.http_url, ex.ws_url, ex.warmup_klines, settings.bars.timeframes)
            if ex.warmup_klines and (not given if warmup is None else warmup) else None)
    records, features = add_features(flow, trades, settings, metrics, warm)
    history = op.filter_map("history_rows", records,
                            lambda r: r if isinstance(r, (Bar, FeatureRow, DeadLetter)) else None)
    cross_rows = op.filter("cross_rows", features, lambda r: r.table == "cross_asset_features")
    # the warm-up klines stay in the bars' stream, in order: the close barrier counts them first
    warm_and_closed: Stream[Bar | WarmupBar] = op.filter_map(
        "closed_bars", records, lambda r: r if isinstance(r, (Bar, WarmupBar)) else None)
    bars = op.filter_map("built_bars", warm_and_closed, lambda r: r if isinstance(r, Bar) else None)
    daily = op.merge("daily_and_regime", daily_rows(settings, bars),  # the daily groups, as they become known
                     regime_rows(settings, bars))  # and the regime (none without daily.source / regime.source)
    to_history: Stream[Any] = op.merge("to_history", history, cross_rows, dead, daily)
    op.output("history", to_history, timed(HistorySink(settings), "history", metrics))
    op.output("feast_online", op.merge("to_online", features, daily),
              timed(FeastOnlineSink(settings), "feast_online", metrics))
    from flows.decisions_flow import add_decisions

    op.output("console", bars, BarPrinter())
    add_decisions(settings, warm_and_closed, features)
    return flow


def _flow_from_environment() -> Dataflow:
    try:
        settings = with_universe(load_settings())
        settings.require_servers()
        settings.require_live_guard()
        path = configure_logging(settings.log, settings.data_dir, model_secrets(settings))
        install_stop_handlers()  # SIGINT/SIGTERM: a clean stop (flows.lifecycle)
        flow = build_flow(settings)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    atexit.register(write_summary, settings.data_dir, settings.symbols,
                    {"log file": str(path), "outputs": str(settings.data_dir), "run": settings.run_id()})
    return flow


def __getattr__(name: str) -> Dataflow:
    # `python -m bytewax.run flows.live` looks up `flow`; building it lazily (PEP 562) keeps
    # `import flows.live` free of side effects for tests and tools that only want build_flow.
    if name == "flow":
        return _flow_from_environment()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
