"""Wiring of scoring and decisions into the live flow (after the cross-asset step).

features (trading timeframe) -> ``scoring`` (keyed by timeframe; one batch of
predictions per bar time) -> merged with the closed bars -> ``decisions`` (one
key: the portfolio) -> decision sinks (TimescaleDB + Redis streams, or parquet)
and one status line per bar on stdout.  Without an ensemble in the registry the
flow runs features only and says so.
"""

from __future__ import annotations

import importlib.util
import signal
import sys
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from flows.operators.decisions import DecisionStep, Status
from flows.operators.model_bank import ModelBank, SwapWatch, has_models
from flows.operators.scoring import Prediction, ScoringStep
from flows.records import Bar, FeatureRow
from flows.settings import Settings, timeframe_ms
from flows.sinks.decisions import DecisionSink


def swap_watch(settings: Settings) -> SwapWatch:
    """Return the per-bar swap check of the profile (Redis key or a file under ``data_dir``)."""
    key = settings.scoring.swap_key
    if settings.profile == "timescale" and settings.redis_url is not None:
        return SwapWatch.for_redis(settings.redis_url.get_secret_value(), key)
    return SwapWatch.for_file(settings.data_dir / key.replace(":", "_"))


def scoring_step(settings: Settings) -> Any:
    """Return the stateful scoring step; the models load once per worker, SIGHUP or the swap key reloads them."""
    sc, tf = settings.scoring, settings.trading_timeframe()
    holder: dict[str, Any] = {}

    def bank() -> ModelBank:
        if "bank" not in holder:
            b = ModelBank(settings.registry_root(), tf, sc.ensemble_version, sc.policy_family, sc.policy_version)
            holder["bank"], holder["watch"] = b, swap_watch(settings)
            try:
                signal.signal(signal.SIGHUP, b.request_swap)
            except ValueError:  # not the main thread: the swap key still works
                pass
            print(f"scoring {tf} with {b.versions()}", file=sys.stderr, flush=True)
        return holder["bank"]

    def step(state: ScoringStep | None, row: FeatureRow) -> tuple[ScoringStep, list[tuple[Prediction, ...]]]:
        b = bank()
        if state is None:
            state = ScoringStep(settings.symbols, tf, b)
        elif state.bank is None:
            state.attach(b)
        if row.ts not in state.pending and holder["watch"].changed():
            b.request_swap()
        preds = state.on_row(row)
        by_ts: dict[int, list[Prediction]] = {}
        for p in preds:
            by_ts.setdefault(p.ts, []).append(p)
        return state, [tuple(v) for v in by_ts.values()]

    return step


def decision_step(settings: Settings) -> Any:
    """Return the stateful decision step (one key: the portfolio)."""
    from flows.operators.decisions_wiring import build_deps

    tf = settings.trading_timeframe()
    holder: dict[str, Any] = {}

    def step(state: DecisionStep | None, item: Bar | tuple[Prediction, ...]) -> tuple[DecisionStep, list[Any]]:
        if "deps" not in holder:
            holder["deps"] = build_deps(settings)
        if state is None:
            state = DecisionStep(settings.symbols, timeframe_ms(tf), holder["deps"])
        elif state.deps is None:
            state.attach(holder["deps"])
        out = state.on_bar(item) if isinstance(item, Bar) else state.on_predictions(item)
        return state, out

    return step


class StatusPrinter(DynamicSink[Status]):
    """Print one status line per bar close."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> StatelessSinkPartition[Status]:
        """Return the printing partition."""
        return _Print()


class _Print(StatelessSinkPartition[Status]):
    def write_batch(self, items: list[Status]) -> None:
        for s in items:
            print(f"status {s.text}", flush=True)


def decisions_available() -> bool:
    """Return whether the risk, execution and portfolio packages are importable."""
    return all(importlib.util.find_spec(m) is not None
               for m in ("flows.portfolio", "flows.risk", "flows.execution"))


def prediction_status(batch: tuple[Prediction, ...]) -> Status:
    """Return the status line of a bar time scored without decisions."""
    from flows.records import utc

    sig = " ".join(f"{p.symbol.split('/')[0]}:p={p.probability:.3f}/s={p.signal:+d}" for p in batch)
    return Status(batch[0].ts, f"{utc(batch[0].ts):%Y-%m-%d %H:%M} predictions[{sig}]")


def add_decisions(settings: Settings, bars: Stream[Bar], features: Stream[FeatureRow]) -> bool:
    """Wire scoring and decisions; return False (features only) when the registry has no models."""
    root, tf = settings.registry_root(), settings.trading_timeframe()
    if not has_models(root, tf):
        print(f"no {tf} ensemble in the registry {root}: running features only "
              "(python -m flows.main bootstraps one)", file=sys.stderr, flush=True)
        return False
    rows = op.filter("scoring_rows", features, lambda r: r.timeframe == tf)
    keyed = op.key_on("scoring_key", rows, lambda r: r.timeframe)
    preds = op.key_rm("unkey_scoring", op.stateful_flat_map("scoring", keyed, scoring_step(settings)))
    flat_preds = op.flat_map("predictions", preds, lambda batch: list(batch))
    if not decisions_available():
        print("risk/execution/portfolio modules are not installed: scoring only (predictions are stored)",
              file=sys.stderr, flush=True)
        op.output("decision_store", flat_preds, DecisionSink(settings))
        op.output("status", op.map("prediction_status", preds, prediction_status), StatusPrinter())
        return True
    trade_bars = op.filter("trading_bars", bars, lambda b: b.timeframe == tf)
    merged: Stream[Any] = op.merge("decision_inputs", trade_bars, preds)
    keyed_in = op.key_on("portfolio_key", merged, lambda _: "portfolio")
    out = op.key_rm("unkey_decisions", op.stateful_flat_map("decisions", keyed_in, decision_step(settings)))
    records = op.filter("decision_records", out, lambda r: not isinstance(r, Status))
    op.output("decision_store", op.merge("to_decision_store", flat_preds, records), DecisionSink(settings))
    op.output("status", op.filter_map("status_lines", out, lambda r: r if isinstance(r, Status) else None),
              StatusPrinter())
    return True
