"""Prometheus metrics of the live flow, served on ``/metrics`` (prometheus-client).

One registry per process.  ``python -m bytewax.run flows.live -w N`` runs its N
workers as threads of one process, so they count into the same registry and one
scrape sees the whole flow; a cluster of processes (``-i``/``-a``) serves process
``i`` on ``monitoring.metrics_port + i`` and Prometheus sums over the targets
(``sum without (instance)``).  We chose that over prometheus-client's multiprocess
mode: that mode writes every increment to an mmap'ed file under a lock, cannot
serve the process collector, and needs a directory cleaned between runs.

Instrumentation cost stays off the per-trade path: the flow calls these methods
once per batch of websocket messages, per closed bar, per settled close and per sink
batch, never per trade.  What is reported per batch goes into per-thread dicts
without locks (:mod:`flows.monitoring.sharded`), summed when ``/metrics`` is read;
the rarer metrics are prometheus-client's own, each labelled child looked up once
and cached (``Counter.labels`` takes a lock and hashes its labels).  With
``monitoring.metrics_port`` 0, :func:`current` is None and the flow skips every hook.

Metric names start with ``cryptostream_``; README "Monitoring" lists them.
"""

from __future__ import annotations

import os
import sys
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import start_http_server
from prometheus_client.process_collector import ProcessCollector

from flows.monitoring.config import MonitoringConfig
from flows.monitoring.sharded import ShardedMetrics
from flows.records import Bar, DeadLetter, FeatureRow, Fill, PortfolioRow, Status

STAGES = ("parse", "bars", "features", "cross_asset", "scoring", "decision", "sink")
# Seconds per batch: from a few microseconds (a small websocket batch) to seconds (a stalled sink).
BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
           2.5, 5.0, 10.0)
MAX_REASONS = 64  # distinct dead-letter reasons per source; more are counted as "other"
STAGE, SINK = "cryptostream_stage_seconds", "cryptostream_sink_seconds"
_PARSE, _BARS, _FEATURES = ((STAGE, (s,)) for s in ("parse", "bars", "features"))  # hot cells' keys, made once


def reason_class(reason: str) -> str:
    """Return a dead letter's reason without its details (``"bad price: '-1' ..."`` -> ``"bad price"``)."""
    return reason.split(":", 1)[0].strip()[:48] or "unknown"


class _Children:
    """Labelled children of one metric, each made once (``labels()`` takes a lock and hashes every call)."""

    __slots__ = ("metric", "cache")

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.cache: dict[tuple[str, ...], Any] = {}

    def __call__(self, *labels: str) -> Any:
        child = self.cache.get(labels)
        if child is None:
            child = self.cache[labels] = self.metric.labels(*labels)
        return child


class FlowMetrics:
    """Every metric of the flow, on one registry, with one method per place the flow reports from."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """Register the metrics on ``registry`` (a fresh one by default)."""
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self._lock = threading.Lock()  # the few read-modify-write updates (reasons, halts, model versions)
        # Reported per batch: kept per thread without locks (flows.monitoring.sharded), merged at each scrape.
        hot = self.hot = ShardedMetrics(BUCKETS)
        hot.group("parse", ["symbol"], [
            ("cryptostream_messages", "counter", "websocket messages received"),
            ("cryptostream_trades", "counter", "trades parsed from the messages"),
            ("cryptostream_last_trade_received_timestamp_seconds", "max_gauge",
             "receive time (host clock) of the latest batch with trades")])
        hot.group("dead", ["source", "reason"], [("cryptostream_dead_letters", "counter",
                                                   "dead letters by stage and reason")])
        hot.group("bars", ["symbol", "timeframe"], [("cryptostream_bars", "counter", "closed bars")])
        hot.group("features", ["table", "timeframe"], [("cryptostream_feature_rows", "counter",
                                                        "feature rows computed")])
        hot.histogram(STAGE, ["stage"], "seconds one batch spent in a stage")
        hot.histogram(SINK, ["sink"], "seconds of one sink write_batch")
        self._count_parsed = self.parse_counter()
        r.register(hot)
        self._reasons: dict[str, set[str]] = {}
        # Reported per reconnect, per close or per swap: prometheus-client's own metrics.
        self.reconnects = _Children(Counter("cryptostream_ws_reconnects", "websocket reconnects", ["symbol"],
                                            registry=r))
        self.gap_fills = _Children(Counter("cryptostream_gap_fills", "REST gap fills that fetched trades",
                                           ["symbol"], registry=r))
        self.gap_fill_trades = _Children(Counter("cryptostream_gap_fill_trades", "trades fetched by REST gap fills",
                                                 ["symbol"], registry=r))
        self.orders = _Children(Counter("cryptostream_orders", "order updates by status (NEW: placed)",
                                        ["status"], registry=r))
        self.fills = _Children(Counter("cryptostream_fills", "fills", ["symbol", "side"], registry=r))
        self.rejections = _Children(Counter("cryptostream_rejections", "risk rejections and cuts by rule "
                                            "(halts and releases included)", ["rule"], registry=r))
        self.equity = Gauge("cryptostream_equity", "portfolio equity (quote currency)", registry=r)
        self.drawdown = Gauge("cryptostream_drawdown", "drawdown from the equity peak (fraction)", registry=r)
        self.drawdown_limit = Gauge("cryptostream_drawdown_limit", "risk.limits.max_drawdown (fraction)",
                                    registry=r)
        self.gross_exposure = Gauge("cryptostream_gross_exposure", "sum of |position values|", registry=r)
        self.net_exposure = Gauge("cryptostream_net_exposure", "sum of position values", registry=r)
        self.leverage = Gauge("cryptostream_leverage", "gross exposure / equity", registry=r)
        self.closes = Counter("cryptostream_closes", "bar closes decided", registry=r)
        self.halts = _Children(Gauge("cryptostream_halt", "1 while a risk rule is not active (its phase: halted, "
                                     "probation, floor)", ["rule", "phase"], registry=r))
        self._halts_on: set[tuple[str, str]] = set()
        self.kill_switch = Gauge("cryptostream_kill_switch_engaged", "1 while the kill switch is engaged",
                                 registry=r)
        self.models = _Children(Gauge("cryptostream_model_version_info", "deployed model versions (value 1)",
                                      ["family", "version"], registry=r))
        self._models_on: set[tuple[str, str]] = set()
        ProcessCollector(registry=r)  # CPU seconds, resident memory, open files of this process

    # ---- source and parse (once per batch of websocket messages)

    def on_parsed(self, symbol: str, messages: int, trades: int, dead: list[DeadLetter], received_ms: int,
                  seconds: float | None) -> None:
        """Count one parsed batch of ``symbol``'s messages; ``seconds`` None: the batch was not timed."""
        self._count_parsed(symbol, messages, trades, dead, received_ms)
        if seconds is not None:
            self._observe(_PARSE, seconds)

    def parse_counter(self) -> Callable[[str, int, int, list[DeadLetter], int], None]:
        """Return :meth:`on_parsed` for untimed batches, lean: each thread's cells of a symbol looked up once.

        The parse step reports every batch, so at small batches its few dict and attribute
        lookups were a measurable share of the flow's cost (issue 18).
        """
        hot, local = self.hot, threading.local()

        def count(symbol: str, messages: int, trades: int, dead: list[DeadLetter], received_ms: int) -> None:
            try:
                cell = local.cells[symbol]
            except (AttributeError, KeyError):
                d = hot.shard()
                key = ("parse", (symbol,))
                cell = d.get(key) or hot.new_cell(d, key)
                if not hasattr(local, "cells"):
                    local.cells = {}
                local.cells[symbol] = cell
            cell[0] += messages
            if trades:
                cell[1] += trades
                cell[2] = received_ms / 1000.0
            if dead:
                self.on_dead_letters(dead)

        return count

    def on_reconnect(self, symbol: str) -> None:
        """Count a websocket reconnect."""
        self.reconnects(symbol).inc()

    def on_gap_fill(self, symbol: str, trades: int) -> None:
        """Count a REST gap fill that fetched ``trades`` trades."""
        if trades:
            self.gap_fills(symbol).inc()
            self.gap_fill_trades(symbol).inc(trades)

    def on_dead_letters(self, dead: Iterable[DeadLetter]) -> None:
        """Count dead letters by source and reason (the reason's text before its first colon)."""
        for d in dead:
            reason = reason_class(d.reason)
            seen = self._reasons.get(d.source)
            if seen is None or reason not in seen:
                with self._lock:
                    seen = self._reasons.setdefault(d.source, set())
                    if reason not in seen:
                        if len(seen) >= MAX_REASONS:
                            reason = "other"
                        seen.add(reason)
            self._inc("dead", (d.source, reason))

    # ---- per-symbol pipeline and cross-asset step (once per batch)

    def on_pipeline(self, outputs: list[Any], seconds: float | None, feature_seconds: float) -> None:
        """Count what one batch through a symbol pipeline produced; time bars and features apart (None: untimed)."""
        if outputs:
            dead = []
            for r in outputs:
                kind = type(r)
                if kind is Bar:
                    self._inc("bars", (r.symbol, r.timeframe))
                elif kind is FeatureRow:
                    self._inc("features", (r.table, r.timeframe))
                elif kind is DeadLetter:
                    dead.append(r)
            if dead:
                self.on_dead_letters(dead)
        if seconds is None:
            return
        d = self.hot.shard()
        h = d.get(_BARS) or self.hot.new_cell(d, _BARS)
        seconds = max(seconds - feature_seconds, 0.0)
        h[bisect_left(BUCKETS, seconds)] += 1
        h[-1] += seconds
        if feature_seconds:
            self._observe(_FEATURES, feature_seconds)

    def on_cross_asset(self, rows: list[FeatureRow], seconds: float) -> None:
        """Count the cross-asset rows of one bar return."""
        if rows:
            self._inc("features", (rows[0].table, rows[0].timeframe), len(rows))
        self._observe((STAGE, ("cross_asset",)), seconds)

    # ---- scoring and decisions (once per settled close)

    def on_scoring(self, seconds: float) -> None:
        """Time one scoring of a settled close (or a group of closes)."""
        self._observe((STAGE, ("scoring",)), seconds)

    def on_models(self, versions: Mapping[str, str]) -> None:
        """Show the deployed versions (family -> version); versions no longer deployed drop to 0."""
        self._models_on = self._flags(self.models, self._models_on, {(str(f), str(v)) for f, v in versions.items()})

    def on_kill_switch(self, engaged: bool) -> None:
        """Show the kill switch's state as read by the decision step."""
        self.kill_switch.set(1 if engaged else 0)

    def on_decisions(self, outputs: list[Any], seconds: float) -> None:
        """Count orders, fills and rejections; show the last portfolio figures and halts."""
        last_row = last_status = None
        for r in outputs:
            kind = type(r)
            if kind is Fill:
                self.fills(r.symbol, r.side).inc()
            elif kind is PortfolioRow:
                last_row = r
                self.closes.inc()
            elif kind is Status:
                last_status = r
            elif hasattr(r, "rule") and hasattr(r, "allowed"):  # flows.risk.engine.Rejection
                self.rejections(r.rule).inc()
            elif hasattr(r, "client_order_id") and hasattr(r, "intent"):  # flows.execution.orders.Order
                self.orders(str(getattr(r.status, "value", r.status))).inc()
        if last_row is not None:
            s = last_row.state
            self.equity.set(s["equity"])
            self.drawdown.set(s.get("drawdown") or 0.0)
            self.gross_exposure.set(s.get("gross_exposure") or 0.0)
            self.net_exposure.set(s.get("net_exposure") or 0.0)
            self.leverage.set(s.get("leverage") or 0.0)
        if last_status is not None and set(last_status.halts) != self._halts_on:
            self._halts_on = self._flags(self.halts, self._halts_on, set(last_status.halts))
        self._observe((STAGE, ("decision",)), seconds)

    def _flags(self, gauge: _Children, before: set[tuple[str, str]], now: set[tuple[str, str]],
               ) -> set[tuple[str, str]]:
        """Set ``gauge`` to 1 for the label pairs in ``now``, to 0 for those only in ``before``; return ``now``."""
        with self._lock:
            for key in before - now:
                gauge(*key).set(0)
            for key in now:
                gauge(*key).set(1)
        return now

    # ---- sinks

    def on_sink(self, name: str, seconds: float) -> None:
        """Time one ``write_batch`` of sink ``name``."""
        self._observe((SINK, (name,)), seconds)
        self._observe((STAGE, ("sink",)), seconds)

    # ---- per-thread cells (flows.monitoring.sharded)

    def _inc(self, group: str, labels: tuple[str, ...], n: float = 1.0) -> None:
        d = self.hot.shard()
        key = (group, labels)
        cell = d.get(key) or self.hot.new_cell(d, key)
        cell[0] += n

    def _observe(self, key: tuple[str, tuple[str, ...]], seconds: float) -> None:
        d = self.hot.shard()
        h = d.get(key) or self.hot.new_cell(d, key)
        h[bisect_left(BUCKETS, seconds)] += 1
        h[-1] += seconds


_lock = threading.Lock()
_active: FlowMetrics | None = None
_server: Any = None


def current() -> FlowMetrics | None:
    """Return the process's metrics, or None when the flow runs without them (the hooks then do nothing)."""
    return _active


def process_index(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Return this Bytewax process's index (``-i``/``--process-id`` or ``BYTEWAX_PROCESS_ID``; 0 alone)."""
    argv = sys.argv if argv is None else argv
    env = os.environ if env is None else env
    for i, arg in enumerate(argv):
        if arg in ("-i", "--process-id") and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--process-id="):
            return int(arg.split("=", 1)[1])
    return int(env.get("BYTEWAX_PROCESS_ID") or 0)


def start(config: MonitoringConfig, drawdown_limit: float | None = None) -> FlowMetrics | None:
    """Serve ``/metrics`` on ``config.metrics_port`` (+ the process index) once per process; return the metrics.

    Returns None (and serves nothing) when ``metrics_port`` is 0.  A second call in the same
    process returns the metrics already served.
    """
    global _active, _server
    if not config.metrics_port:
        return None
    with _lock:
        if _active is None:
            metrics = FlowMetrics()
            port = config.metrics_port + process_index()
            try:
                _server, _ = start_http_server(port, addr=config.metrics_host, registry=metrics.registry)
            except OSError as exc:
                raise OSError(f"monitoring.metrics_port: cannot serve /metrics on {config.metrics_host}:{port} "
                              f"({exc}); choose a free port (CRYPTOSTREAM_MONITORING__METRICS_PORT) or 0 for "
                              "no metrics") from exc
            print(f"metrics: http://{config.metrics_host}:{port}/metrics", file=sys.stderr, flush=True)
            _active = metrics
        if drawdown_limit is not None:
            _active.drawdown_limit.set(drawdown_limit)
        return _active


def stop() -> None:
    """Stop serving and forget the metrics (tests and benchmarks that run several flows in one process)."""
    global _active, _server
    with _lock:
        if _server is not None:
            _server.shutdown()
            _server.server_close()
        _active = _server = None
