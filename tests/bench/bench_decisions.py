"""Benchmark: bar close to order intent, and historical replay through the decision path.

Usage::

    .venv/bin/python tests/bench/bench_decisions.py                 # 5 symbols, local profile
    set -a; eval "$(infra/up)"; set +a
    .venv/bin/python tests/bench/bench_decisions.py --profile timescale   # persistence into TimescaleDB + Redis

Models: ``--registry DIR`` (default ``var/bench_registry``); if it holds no
ensemble, the main job's bootstrap fills it once (synthetic 1m history of the
symbols, quick lightgbm/lstm/gnn/ensemble and the tactical policy).

1. Latency.  ``--symbols`` warmed-up pipelines fed raw trade messages; for each
   bar boundary the batch holding the last symbol's first trade past the boundary
   (the one that completes the bar time) goes through parse -> bars -> features ->
   cross-asset (*features*), the flow's close barrier with the scoring step
   (*scoring*: ensemble with its members and the policy) and the decision step (*decisions*: broker, risk, portfolio,
   order intents); p50/p99 of each stage and of the sum.  Baseline: the features
   stage alone (what bench_flow section 3 calls compute only).
2. Historical replay.  Precomputed feature rows and bars of ``--bars`` bar times
   through the replay loop of ``python -m training.backtest --store`` (``flows.replay.DecisionReplay``):
   the close barrier (scoring), the decision step and the decision sink (parquet in ``local``,
   TimescaleDB + Redis streams in ``timescale``); bars (symbol-bars) per second,
   bar by bar (the streaming path) and with ``--chunk`` bar times per scoring call
   (``CloseBarrier.on_items``: row-wise members and the ensemble graph in one
   session run; in history mode (``ModelBank.history_mode``) the GNN's bar times in
   one session run too and the stateful LSTM's in one ``seq.onnx`` call per run of
   consecutive bars (``LstmStreamRunner.history``), both equal within float rounding).
   Baseline in the same run: the scoring step alone, bar by bar.  Each mode also prints
   microseconds per close of its stages: close barrier + scoring, the decision step
   (``DecisionStep.on_closes``: the closes one call settles, one kill-switch read) and the sink.
   Each timed run starts from an empty decision store (a first replay of that history) and,
   as the flow's workers do once their models are loaded, freezes the heap built so far
   (``flows.heap.freeze_start_up_heap``; here that includes the precomputed input, which a
   flow's source would not hold).

Not a test; machines here are noisy: compare ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "bench")]

from bench_flow import (  # noqa: E402
    SYMBOL_POOL,
    T0,
    Row,
    _pct,
    flow_settings,
    log,
    minute_batches,
    scratch_database,
)

from flows.heap import freeze_start_up_heap  # noqa: E402
from flows.operators.cross_asset import CrossAssetStep  # noqa: E402
from flows.operators.decisions import DecisionStep  # noqa: E402
from flows.operators.features import WARMUP  # noqa: E402
from flows.operators.model_bank import ModelBank, has_models  # noqa: E402
from flows.operators.parse import exchange_symbol, parse_messages  # noqa: E402
from flows.operators.pipeline import SymbolPipeline  # noqa: E402
from flows.operators.scoring import CloseBarrier, ScoringStep  # noqa: E402
from flows.records import Bar, BarReturn, FeatureRow  # noqa: E402
from flows.replay import DecisionReplay  # noqa: E402
from flows.settings import Settings, load_settings  # noqa: E402


class Path5:
    """parse -> per-symbol pipeline -> cross-asset; returns feature rows and bars."""

    def __init__(self, symbols: tuple[str, ...]) -> None:
        self.ids = {exchange_symbol(s): s for s in symbols}
        self.pipes = {s: SymbolPipeline(s, ("1m",)) for s in symbols}
        self.cross = CrossAssetStep(symbols, tf_ms=60_000)

    def feed(self, batch: tuple[str, int, list[str]]) -> tuple[list[FeatureRow], list[Bar]]:
        sym, received, msgs = batch
        trades, _ = parse_messages(msgs, self.ids, received)
        rows: list[FeatureRow] = []
        bars: list[Bar] = []
        for r in self.pipes[sym].on_trades(trades):
            if isinstance(r, FeatureRow):
                rows.append(r)
            elif isinstance(r, Bar):
                bars.append(r)
            elif isinstance(r, BarReturn):
                rows += [FeatureRow("cross_asset_features", s, "1m", ts, f)
                         for s, ts, f in self.cross.update(r.symbol, r.ts, r.ret_1)]
        return rows, bars


def ensure_registry(root: Path, symbols: tuple[str, ...], tmp: Path, days: float = 2.0) -> None:
    """Bootstrap models for ``symbols`` (``days`` of history) into ``root`` unless it has an ensemble."""
    if has_models(root):
        return
    from flows import feast_store
    from flows.bootstrap import bootstrap
    from tests.kit.repo import copy_feature_repo

    copy_feature_repo(tmp)
    settings = flow_settings(symbols, tmp, CRYPTOSTREAM_SCORING__REGISTRY=str(root))
    feast_store.apply(settings)
    log(f"bootstrapping models for {len(symbols)} symbols into {root} (once)")
    bootstrap(settings, feast_store.feast_environment(settings), days=days)


def decision_step(settings: Settings) -> DecisionStep:
    """Return a decision step on the paper broker."""
    from flows.wiring import build_deps

    return DecisionStep(settings.symbols, 60_000, build_deps(settings))


def barrier(symbols: tuple[str, ...], bank: ModelBank) -> CloseBarrier:
    """Return the flow's close barrier around a scoring step."""
    return CloseBarrier(ScoringStep(symbols, "1m", bank), WARMUP)


def empty_store(settings: Settings, run: int) -> Settings:
    """Return settings whose decision store holds no rows yet (``run`` numbers the timed runs).

    Every timed replay writes its rows for the first time, as a replay of new history does;
    over the previous run's rows every batch would take the store's merge path (a restart's
    replay of what is stored already).
    """
    if settings.profile != "timescale":
        return settings.model_copy(update={"data_dir": settings.data_dir / f"replay-{run}"})
    import psycopg
    import redis

    assert settings.timescale_dsn is not None and settings.redis_url is not None
    with psycopg.connect(settings.timescale_dsn.get_secret_value(), autocommit=True) as conn:
        conn.execute("TRUNCATE predictions, orders, fills, risk_events, portfolio_state")
    redis.Redis.from_url(settings.redis_url.get_secret_value()).flushdb()  # the scratch db (--redis-db)
    return settings


def section_latency(args: argparse.Namespace, settings: Settings, bank: ModelBank) -> list[Row]:
    """Bar close (first trade past the boundary) to order intent, per stage."""
    symbols = settings.symbols
    warm = 75
    batches = minute_batches(symbols, warm + args.closes + 1)
    path, scoring, decide = Path5(symbols), barrier(symbols, bank), decision_step(settings)
    freeze_start_up_heap()
    stages: dict[str, list[float]] = {"features": [], "scoring": [], "decisions": [], "total": []}
    last = symbols[-1]
    for closes, batch in batches:
        t0 = time.perf_counter()
        rows, bars = path.feed(batch)
        t1 = time.perf_counter()
        settled = scoring.on_items([*bars, *rows])
        t2 = time.perf_counter()
        decide.on_closes(settled)  # the closes one input settles, together, as the flow's decision step does
        t3 = time.perf_counter()
        if closes and batch[0] == last and batch[1] >= T0 + warm * 60_000 and any(c.predictions for c in settled):
            for k, v in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
                v_ms = v * 1e3
                stages[k].append(v_ms)
    n = len(stages["total"])
    log(f"1: {n} bar closes timed, {len(symbols)} symbols")
    base50, base99 = _pct(stages["features"], 50), _pct(stages["features"], 99)
    rows = []
    for k in ("features", "scoring", "decisions", "total"):
        for q in (50, 99):
            rows.append(Row("1 close->intent", f"{k} p{q}", _pct(stages[k], q), "ms",
                            f"features only p{q}", base50 if q == 50 else base99,
                            "p99 <= 5 ms" if (k, q) == ("total", 99) else ""))
    return rows


def section_replay(args: argparse.Namespace, settings: Settings, bank_factory: Any) -> list[Row]:
    """Historical replay through scoring, decisions and persistence: bars per second."""
    from flows.sinks.decisions import DecisionSink

    symbols = settings.symbols
    path = Path5(symbols)
    per_time: list[tuple[list[FeatureRow], list[Bar]]] = []
    for _, batch in minute_batches(symbols, args.bars + 62, seed=5, per_minute=4):
        rows, bars = path.feed(batch)
        if rows or bars:
            per_time.append((rows, bars))
    n_bars = sum(len(b) for _, b in per_time)
    log(f"2: {n_bars} bars precomputed")

    def scoring_only() -> float:
        step = ScoringStep(symbols, "1m", bank_factory())
        freeze_start_up_heap()
        t0 = time.perf_counter()
        for rows, _ in per_time:
            for r in rows:
                step.on_row(r)
        return time.perf_counter() - t0

    runs = [0]
    records = [[*bars, *rows] for rows, bars in per_time]  # one list per bar time

    def full(chunk: int) -> tuple[float, dict[str, float]]:
        """The replay loop of ``training.backtest --store`` (:class:`flows.replay.DecisionReplay`).

        ``chunk`` bar times of records per scoring call (1 = bar by bar, as the live flow scores).
        Returns the seconds taken and the seconds of each stage (close barrier with scoring,
        decision step, sink).
        """
        bank = bank_factory()
        bank.history_mode = chunk > 1  # the GNN and LSTM score a chunk's bar times in one go
        runs[0] += 1
        replay = DecisionReplay(barrier(symbols, bank), decision_step(settings),
                                DecisionSink(empty_store(settings, runs[0])).open(), args.sink_batch)
        freeze_start_up_heap()  # as the flow's workers do once their models are loaded (flows.heap)
        t0 = time.perf_counter()
        for i in range(0, len(records), chunk):
            replay.feed([it for r in records[i:i + chunk] for it in r])
        replay.close()
        return time.perf_counter() - t0, replay.spent

    base = min(scoring_only() for _ in range(args.repeat))
    streaming = min((full(1) for _ in range(args.repeat)), key=lambda r: r[0])
    batched = min((full(args.chunk) for _ in range(args.repeat)), key=lambda r: r[0])
    closes = len({b.ts for _, bars in per_time for b in bars})
    what = "scoring + decisions + sink"
    out = []
    for mode, (took, spent) in ((f"bar by bar, {settings.profile}", streaming),
                                (f"{args.chunk} bar times per scoring call, {settings.profile}", batched)):
        out.append(Row("2 replay", f"{what}, {mode}", n_bars / took, "bars/s", "scoring only, bar by bar",
                       n_bars / base, ">= 20,000 bars/s"))
        out += [Row("2 replay", f"per close ({len(symbols)} bars): {STAGE_NAMES[k]}, {mode}", v / closes * 1e6, "us")
                for k, v in spent.items()]
    return out


STAGE_NAMES = {"scoring": "close barrier + scoring (ensemble, members, policy)",
               "decisions": "decision step (broker, risk, portfolio, orders)", "sink": "decision sink"}


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, run both sections and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--symbols", type=int, default=5)
    p.add_argument("--closes", type=int, default=300, help="bar closes timed in section 1")
    p.add_argument("--bars", type=int, default=2000, help="bar times replayed in section 2")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--sink-batch", type=int, default=5000, help="records per decision sink write")
    p.add_argument("--chunk", type=int, default=256, help="bar times per scoring call in the batched replay")
    p.add_argument("--registry", type=Path, default=ROOT / "var" / "bench_registry")
    p.add_argument("--profile", choices=("local", "timescale"), default="local")
    p.add_argument("--redis-db", type=int, default=13, help="scratch Redis database (flushed) for --profile timescale")
    args = p.parse_args(argv)
    symbols = SYMBOL_POOL[: args.symbols]
    with tempfile.TemporaryDirectory() as tmp_s, contextlib.ExitStack() as stack:
        tmp = Path(tmp_s)
        ensure_registry(args.registry, symbols, tmp / "boot")
        env: dict[str, str] = {}
        if args.profile == "timescale":  # a scratch database and Redis db: no user data touched
            base = os.environ.get("TIMESCALE_DSN") or sys.exit("--profile timescale needs TIMESCALE_DSN (infra/up)")
            redis_url = os.environ.get("REDIS_URL") or sys.exit("--profile timescale needs REDIS_URL (infra/up)")
            env["TIMESCALE_DSN"] = stack.enter_context(scratch_database(base, "decisions"))
            env["REDIS_URL"] = redis_url.rsplit("/", 1)[0] + f"/{args.redis_db}"
            import redis

            redis.Redis.from_url(env["REDIS_URL"]).flushdb()
        settings = load_settings(env={**env, "CRYPTOSTREAM_SYMBOLS": ",".join(symbols),
                                      "CRYPTOSTREAM_DATA_DIR": str(tmp / "run"), "CRYPTOSTREAM_PROFILE": args.profile,
                                      "CRYPTOSTREAM_SCORING__REGISTRY": str(args.registry),
                                      "CRYPTOSTREAM_BARS__TIMEFRAMES": "1m"})
        sc = settings.scoring

        def bank() -> ModelBank:
            return ModelBank(args.registry, "1m", sc.ensemble_version, sc.policy_family, sc.policy_version,
                             gnn_cluster_size=sc.gnn_cluster_size)

        rows = section_latency(args, settings, bank()) + section_replay(args, settings, bank)
    print("| section | figure | value | unit | baseline | baseline value | ratio | target |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r.cells()) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
