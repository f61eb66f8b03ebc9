"""Wiring of scoring and decisions into the live flow (after the cross-asset step).

closed bars and feature rows (trading timeframe) -> ``scoring`` (keyed by
timeframe: :class:`~flows.operators.scoring.CloseBarrier` around the scoring step;
one settled close per bar time, with its bars and predictions; the closes one input
settles travel together) -> ``decisions`` (one key: the portfolio; the kill switch is
read once per such group: live one close, a catch-up many) -> decision sinks
(TimescaleDB + Redis streams, or parquet) and one status line per bar on stdout.  Without an ensemble in the registry the
flow runs features only and says so.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import timedelta
from time import perf_counter
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream

from flows.go_live import OVERRIDE_RULE, GoLive, check_go_live, with_override
from flows.heap import freeze_start_up_heap
from flows.monitoring.metrics import FlowMetrics
from flows.monitoring.metrics import current as current_metrics
from flows.operators.daily_features import PollingDaily
from flows.operators.decisions import DecisionStep
from flows.operators.features import WARMUP
from flows.operators.model_bank import ModelBank, models_problem
from flows.operators.scoring import CloseBarrier, ScoringStep
from flows.records import Bar, Close, FeatureRow, Status, WarmupBar
from flows.recovery import recoverable
from flows.risk.engine import PORTFOLIO, Rejection
from flows.settings import Settings
from flows.sinks.console import StatusPrinter
from flows.sinks.decisions import PARTITION, DecisionSink
from flows.sinks.metrics import timed
from flows.sources.daily_config import open_daily
from flows.timeframes import timeframe_ms
from flows.wiring import build_deps, swap_on_sighup, swap_watch
from inference.manifest import (
    ManifestError,
    TimeframeMismatch,
    check_policy,
    resolve_version_dir,
    verify,
)


def scoring_step(settings: Settings, metrics: FlowMetrics | None = None) -> Any:
    """Return the scoring barrier's step; the models load once per worker, SIGHUP or the swap key reloads them.

    Bytewax keeps the barrier's plain snapshot (:mod:`flows.recovery`); a restored barrier gets the
    worker's models at its first item.
    """
    sc, tf = settings.scoring, settings.trading_timeframe()
    holder: dict[str, Any] = {}

    def daily() -> Any:
        """The daily side input, kept current by polling the providers once a group's next value is due."""
        if "daily" not in holder:
            feats = open_daily(settings.daily)
            holder["daily"] = None if feats is None else PollingDaily(
                feats, timedelta(minutes=settings.daily.poll_minutes))
        return holder["daily"]

    def bank() -> ModelBank:
        if "bank" not in holder:
            b = ModelBank(settings.registry_root(), tf, sc.ensemble_version, sc.policy_family, sc.policy_version,
                          gnn_cluster_size=sc.gnn_cluster_size)
            holder["bank"], holder["watch"] = b, swap_watch(settings)
            swap_on_sighup(b.request_swap)
            print(f"scoring {tf} with {b.versions()}", file=sys.stderr, flush=True)
            if metrics is not None:
                metrics.on_models(b.versions())
            freeze_start_up_heap()  # the models stay for the worker's life: out of the collector's walks
        return holder["bank"]

    def step(state: CloseBarrier | None, item: Bar | FeatureRow | WarmupBar) -> tuple[CloseBarrier, list[list[Close]]]:
        b = bank()
        if state is None:
            scoring = ScoringStep(settings.symbols, tf, b, confidence_threshold=sc.confidence_threshold, daily=daily())
            state = CloseBarrier(scoring, WARMUP)
        elif state.scoring.bank is None:
            state.scoring.daily = daily()
            state.scoring.attach(b)
        if isinstance(item, Bar) and item.ts + state.tf_ms not in state.bars and holder["watch"].changed():
            b.request_swap()  # the swap key is read once per bar time, at its first bar
        if metrics is None:
            closes = state.on_items((item,))
        else:
            t0 = perf_counter()
            closes = state.on_items((item,))
            if closes:  # a settled close was scored (other items only wait in the barrier)
                metrics.on_scoring(perf_counter() - t0)
                metrics.on_models(b.versions())  # a swap may have changed them
        return state, [closes] if closes else []

    return step


def decision_step(settings: Settings, go_live: GoLive | None = None, metrics: FlowMetrics | None = None) -> Any:
    """Return the decision step (one key: the portfolio); a restored step gets the worker's components.

    With ``go_live`` overridden (:mod:`flows.go_live`), the first close worked after start
    carries the risk event ``go_live:override`` and every status line shows it.
    """
    tf = settings.trading_timeframe()
    holder: dict[str, Any] = {}

    def step(state: DecisionStep | None, closes: list[Close]) -> tuple[DecisionStep, list[Any]]:
        if "deps" not in holder:
            holder["deps"] = build_deps(settings)
            if metrics is not None:
                holder["deps"].kill_active = _shown_kill_switch(holder["deps"].kill_active, metrics)
            freeze_start_up_heap()
        if state is None:
            state = DecisionStep(settings.symbols, timeframe_ms(tf), holder["deps"])
        elif state.deps is None:
            state.attach(holder["deps"])
        t0 = perf_counter()
        out = state.on_closes(closes)
        if metrics is not None:
            metrics.on_decisions(out, perf_counter() - t0)
        return state, _with_override(out, go_live, holder) if go_live is not None and go_live.overridden else out

    return step


def _shown_kill_switch(read: Callable[[], Any], metrics: FlowMetrics) -> Callable[[], Any]:
    """Wrap the kill switch's read so each read also sets ``cryptostream_kill_switch_engaged``."""

    def kill_active() -> Any:
        status = read()
        metrics.on_kill_switch(bool(status))
        return status

    return kill_active


def _with_override(out: list[Any], go_live: GoLive, holder: dict[str, Any]) -> list[Any]:
    """Add the override's risk event once (at the first close worked) and show it on the status lines."""
    marked: list[Any] = []
    for r in out:
        if isinstance(r, Status):
            if "override_recorded" not in holder:
                holder["override_recorded"] = True
                marked.append(Rejection(PORTFOLIO, r.ts, OVERRIDE_RULE, go_live.event_reason(), 0.0, 0.0))
            r = r._replace(halts=tuple(sorted(with_override(dict(r.halts), go_live).items())))
        marked.append(r)
    return marked


def verify_deployment(settings: Settings) -> None:
    """Stop at start, naming the file, when a deployed model's manifest or files were tampered with.

    The workers load the models later, where a :class:`ManifestError` would end the flow with a
    traceback; an empty registry (no ensemble registered) is not an error: the flow runs features only.

    Raises:
        ManifestError: a manifest is malformed or a file does not match its sha256.
    """
    root, sc, tf = settings.registry_root(), settings.scoring, settings.trading_timeframe()
    if not (root / "ensemble").is_dir():
        return
    try:
        try:
            ensemble = verify(resolve_version_dir(root, "ensemble", sc.ensemble_version, timeframe=tf))
        except TimeframeMismatch:
            return  # no ensemble of this timeframe: features only, and add_decisions says why
        for family, version in ensemble.extra.get("members", {}).items():
            verify(resolve_version_dir(root, family, version, timeframe=tf))
        if sc.policy_family and (root / sc.policy_family).is_dir():
            check_policy(verify(resolve_version_dir(root, sc.policy_family, sc.policy_version, timeframe=tf)),
                         ensemble)
    except ManifestError as exc:
        raise ManifestError(f"scoring.registry {root}: {exc}") from None


def add_decisions(settings: Settings, bars: Stream[Bar | WarmupBar], features: Stream[FeatureRow]) -> bool:
    """Wire scoring and decisions; return False (features only) when the registry has no models.

    ``bars`` also carries the klines a fresh start warmed the features up on
    (:class:`WarmupBar`, :mod:`flows.warmup`), in the symbol pipelines' order: the close
    barrier counts them as warm-up, never as closes, and must count them before the live
    bars that follow them (two streams merged would reach it in any order, and closes
    counted as not yet warm would go out without predictions).
    """
    root, tf = settings.registry_root(), settings.trading_timeframe()
    verify_deployment(settings)
    problem = models_problem(root, tf, settings.scoring.ensemble_version)
    if problem is not None:
        print(f"no {tf} ensemble to score with, running features only: {problem} "
              "(python -m flows.main bootstraps a 1m one)", file=sys.stderr, flush=True)
        return False
    go_live = check_go_live(settings)  # mode=live: refuses unless the deployment passed the gate (or override)
    trade_bars = op.filter("trading_bars", bars, lambda b: b.timeframe == tf)
    rows = op.filter("scoring_rows", features, lambda r: r.timeframe == tf)
    inputs: Stream[Any] = op.merge("scoring_inputs", trade_bars, rows)
    keyed = op.key_on("scoring_key", inputs, lambda r: r.timeframe)
    metrics = current_metrics()
    closes = op.key_rm("unkey_scoring", recoverable("scoring", keyed, CloseBarrier.from_snapshot,
                                                    scoring_step(settings, metrics)))
    flat_preds = op.flat_map("predictions", closes, lambda cs: [p for c in cs for p in c.predictions])
    keyed_in = op.key_on("portfolio_key", closes, lambda _: "portfolio")
    out = op.key_rm("unkey_decisions", recoverable("decisions", keyed_in, DecisionStep.from_snapshot,
                                                   decision_step(settings, go_live, metrics)))
    records = op.filter("decision_records", out, lambda r: not isinstance(r, Status))
    to_store = op.merge("to_decision_store", flat_preds, records)
    op.output("decision_store", op.key_on("decision_store_key", to_store, lambda _: PARTITION),
              timed(DecisionSink(settings), "decisions", metrics))
    op.output("status", op.filter_map("status_lines", out, lambda r: r if isinstance(r, Status) else None),
              StatusPrinter())
    return True
