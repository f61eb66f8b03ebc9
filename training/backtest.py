"""Backtest: candle files through the live flow's own operators, scoring, risk, paper broker and portfolio.

Usage::

    python -m training.backtest ../shared/data/binance-spot-1h/*.parquet --start 2024-01-01 --end 2025-01-01
    python -m training.backtest FILES... --registry var/registry --out reports/backtest
    python -m training.backtest FILES... --chunk 256 --store --profile timescale
    python -m training.backtest FILES... --chunk 256 --processes 2   # decisions in a second process

Bars go through the same steps as ``python -m bytewax.run flows.live`` in the same
order: symbol pipelines and the cross-asset step (``training.backfill.operator_records``),
the close barrier with the scoring step (registered ensemble and, when registered,
the tactical policy), and the decision step with the settings' risk engine, paper
broker and portfolio (``flows.wiring.build_deps``).  Bars before
``--start`` only warm the features and the models' state up; trading starts at
``--start``.  Deterministic: the same files, registry and settings give the same
trades.  ``--chunk N`` scores N bar times per call (:mod:`flows.replay`; faster, equal
to the default within float rounding), with ``--processes 2`` as a pipeline of two
processes (:mod:`training.backtest_pipeline`: this one scores, a forked child decides;
the same trades and records as one process, ``==``); ``--store`` writes the
decision records to the profile's store as the live flow does.  Several files of one
symbol are joined in time order (bar times in more than one must agree).  Prints,
after fees, the strategy's figures (:mod:`training.performance`: return, Sharpe,
drawdown, round trips, win rate, profit factor) beside equal-weight buy-and-hold,
volatility-targeted buy-and-hold and cash over the same bars, and every halt and
release the risk engine reported; writes ``equity.csv``, ``fills.csv``,
``summary.json`` and ``equity.png`` under ``--out``.

The registry's models must have been trained on data before ``--start`` for the
result to be out of sample; the command prints the ensemble's training window so
that can be checked.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any

import pandas as pd

from flows.cli import HelpFormatter
from flows.heap import freeze_start_up_heap
from flows.operators.decisions import DecisionStep
from flows.operators.features import WARMUP
from flows.operators.model_bank import ModelBank
from flows.operators.scoring import CloseBarrier, ScoringStep
from flows.records import Bar, Close, Decided, Fill, PortfolioRow, utc
from flows.replay import DecisionReplay, ReplayDecisions, bar_time_chunks
from flows.risk.engine import PORTFOLIO, Rejection
from flows.settings import Settings, SettingsError, load_settings
from flows.sinks.decisions import DecisionSink
from flows.sources.daily_config import open_daily
from flows.timeframes import timeframe_ms
from flows.wiring import build_deps
from inference.manifest import ManifestError, read_manifest, resolve_version_dir
from training.backfill import _files, _ms, operator_records
from training.backtest_pipeline import DecisionProcess
from training.history_features import HistoryFeatures

PROCESSES = 1  # the command's default: --processes 2 pays only with a free second core (README.md, *Backtest speed*)


@dataclass
class BacktestResult:
    """Per close equity and the fills of one run."""

    times: list[int] = field(default_factory=list)
    equity: list[float] = field(default_factory=list)
    benchmark: list[float] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    run_id: str = ""  # the run id stamped on every stored record
    halts: list[Rejection] = field(default_factory=list)  # the risk engine's portfolio events, in order
    # position value (quote currency, signed) per symbol at each close, marked at the latest closes
    positions: list[dict[str, float]] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)  # the latest close of each symbol
    # seconds per stage: features (bars through the operators), scoring, decisions, sink, other (bookkeeping)
    spent: dict[str, float] = field(default_factory=dict)
    matrix_closes: int = 0  # bar times the replay fed as feed matrices (the rest as records)
    # the regime label known at each close (settings' regime; None: off or warming up)
    regimes: list[str | None] = field(default_factory=list)
    processes: int = 1  # 2: decided in a second process (training.backtest_pipeline)

    def summary(self, timeframe: str, vol_target: float = 0.2, vol_bars: int = 24 * 30) -> dict[str, Any]:
        """Return the strategy's figures (``training.performance``) beside buy-and-hold, vol-targeted and cash.

        ``halts``: every halt, probation and release the risk engine reported, in order.
        """
        from training import performance as perf

        out: dict[str, Any] = {"bars": len(self.times), "fills": len(self.fills), "run_id": self.run_id,
                               "fees": sum(f.fee for f in self.fills),
                               "traded_notional": sum(f.qty * f.price for f in self.fills),
                               "halts": [{"ts": str(utc(h.bar_ts)), "rule": h.rule, "reason": h.reason}
                                         for h in self.halts]}
        if not self.times:
            return out
        out["start"], out["end"] = str(utc(self.times[0])), str(utc(self.times[-1]))
        index = pd.DatetimeIndex([utc(t) for t in self.times])
        e0 = self.equity[0]
        basket = pd.Series(self.benchmark, index=index)
        curves = {"strategy": pd.Series(self.equity, index=index), "buy_and_hold": e0 * basket,
                  "vol_target_buy_and_hold": perf.vol_targeted(basket, timeframe, vol_target, vol_bars, e0),
                  "cash": pd.Series(e0, index=index, dtype=float)}
        for name, curve in curves.items():
            out[name] = perf.metrics(curve, timeframe).as_dict()
        fills = pd.DataFrame({"ts": [utc(f.ts) for f in self.fills], "symbol": [f.symbol for f in self.fills],
                              "qty": [f.qty if f.side == "buy" else -f.qty for f in self.fills],
                              "price": [f.price for f in self.fills], "fee": [f.fee for f in self.fills]})
        out["strategy"].update(perf.trade_stats(perf.round_trips(fills)))
        return out


def run_backtest(settings: Settings, streams: dict[str, Iterable[Bar]], timeframe: str,
                 start_ms: int | None, chunk: int = 1, store: bool = False, matrices: bool = True,
                 clock: Callable[[], float] = time.perf_counter, processes: int = 1) -> BacktestResult:
    """Run bars through operators, scoring and decisions; trade the closes from ``start_ms`` on.

    Without ``start_ms``, the closes from the first one with features on (the bars before
    it, :data:`~flows.operators.features.WARMUP` of them, only warm up).

    ``chunk`` bar times go to the scoring step at once (:class:`flows.replay.DecisionReplay`:
    1 scores exactly as the live flow does; more is faster, equal within float rounding).
    ``matrices=False`` feeds every chunk as records (the path before the matrices, bit for bit
    the same trades: the tests and the benchmark compare the two; ``matrix_closes`` of the
    result counts the bar times that went as matrices).
    ``store`` writes every decision record of the traded closes (predictions, orders, fills,
    risk events, portfolio state) to the settings' profile's decision store.
    ``processes`` 2 (with ``chunk`` above 1) decides in a second process while this one scores
    the next chunks (:mod:`training.backtest_pipeline`): the same fills, equity, positions,
    halts, regimes and stored records (``==``), in less wall time on an idle second core.
    ``clock`` times the stages of ``spent`` (wall time; ``time.thread_time`` gives CPU time).
    """
    if processes not in (1, 2):
        raise ValueError(f"processes must be 1 or 2, got {processes}")
    symbols = tuple(streams)
    if start_ms is None:  # the bars before the first feature row only warm up (features.WARMUP, issue 17 defect 10)
        held = {s: b if isinstance(b, list) else list(b) for s, b in streams.items()}
        firsts = [b[WARMUP - 1].ts for b in held.values() if len(b) >= WARMUP]
        streams = dict[str, Iterable[Bar]](held)
        start_ms = min(firsts) if firsts else None
    if symbols != tuple(settings.symbols):
        settings = settings.model_copy(update={"symbols": symbols})
    if settings.trading_timeframe() != timeframe:  # the strategy measures holding times in the traded bars
        settings = settings.model_copy(update={"scoring": settings.scoring.model_copy(update={"timeframe": timeframe})})
    build = partial(BacktestDecisions, settings, timeframe, start_ms, store, clock)
    side: BacktestDecisions | DecisionProcess
    if processes > 1 and chunk > 1:  # forked before the models load: the child builds its side meanwhile
        streams = {s: b if isinstance(b, list) else list(b) for s, b in streams.items()}  # bars both sides hold
        side = DecisionProcess(build, clock, list(chain.from_iterable(streams.values())))
    else:
        side = build()
    try:
        sc = settings.scoring
        bank = ModelBank(settings.registry_root(), timeframe, sc.ensemble_version, sc.policy_family,
                         sc.policy_version, gnn_cluster_size=sc.gnn_cluster_size)
        bank.history_mode = chunk > 1
        barrier = CloseBarrier(ScoringStep(symbols, timeframe, bank, confidence_threshold=sc.confidence_threshold,
                                           daily=open_daily(settings.daily)), WARMUP)
        replay = DecisionReplay(barrier, None, clock=clock)  # it scores; ``side`` decides
        freeze_start_up_heap()  # models, risk and broker live for the whole replay
        first_open, t_start = dict[str, float](), clock()
        # The replay allocates millions of small acyclic records (bars, rows, predictions); as in the backfill,
        # the cyclic collector is paused for it instead of walking them again and again (8-10 % of a run).
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            tally = {"features": 0.0, "matrix_closes": 0}
            for closes in _replayed(replay, streams, timeframe, chunk, start_ms, first_open, tally, matrices):
                side.take(closes, first_open)
            result: BacktestResult = side.finish()
        finally:
            if gc_was_enabled:
                gc.enable()
    finally:
        side.close()  # the child killed if it still runs; the local store closed if finish() was not reached
    result.matrix_closes, result.processes = int(tally["matrix_closes"]), 2 if isinstance(side, DecisionProcess) else 1
    spent = {"features": float(tally["features"]), **replay.spent, **result.spent}
    if isinstance(side, DecisionProcess):  # send, wait; the child's receive, idle and CPU seconds
        spent.update(side.spent)
        here = sum(spent[k] for k in ("features", "scoring", "send", "wait"))
    else:
        here = sum(spent.values())
    spent["other"] = clock() - t_start - here  # this process's bookkeeping (the decision side's: ``record``)
    result.spent = spent
    return result


class BacktestDecisions:
    """The decision half of a backtest: the settings' decision step over settled closes, kept in a result.

    Built in this process, or in the child of :class:`training.backtest_pipeline.DecisionProcess`.
    """

    def __init__(self, settings: Settings, timeframe: str, start_ms: int | None, store: bool,
                 clock: Callable[[], float]) -> None:
        """Build the risk engine, broker and portfolio (``flows.wiring.build_deps``), and the store with ``store``."""
        deps = build_deps(settings)
        deps.kill_active = lambda: False  # the live kill switch is not the backtest's business
        step = DecisionStep(settings.symbols, timeframe_ms(timeframe), deps)
        self.decisions = ReplayDecisions(step, DecisionSink(settings).open() if store else None, clock=clock)
        self.result, self.start_ms, self.clock = BacktestResult(run_id=settings.run_id()), start_ms, clock
        self.recording, self._closed = 0.0, False

    def take(self, closes: list[Close], first_open: dict[str, float]) -> None:
        """Decide ``closes`` (those up to the start only warm the regime up); record the traded ones."""
        if not closes:
            return
        closes, out = self.decisions.decide(closes, self.start_ms)
        if closes:
            t0 = self.clock()
            _record(self.result, closes, out, first_open)
            self.recording += self.clock() - t0

    def finish(self) -> BacktestResult:
        """Write what is left to the store; return the result with this side's seconds."""
        self.close()
        self.result.spent = {**self.decisions.spent, "record": self.recording}
        return self.result

    def close(self) -> None:
        """Close the store (once)."""
        if not self._closed:
            self._closed = True
            self.decisions.close()


def _replayed(replay: DecisionReplay, streams: dict[str, Iterable[Bar]], timeframe: str, chunk: int,
              start_ms: int | None, first_open: dict[str, float], tally: dict[str, Any],
              matrices: bool = True) -> Iterator[list[Close]]:
    """Feed the bars and their features to ``replay`` ``chunk`` bar times at a time; yield the closes each settled.

    Bar by bar (``chunk`` 1): the records of the flow's streaming operators.  In chunks: the same
    values from whole arrays (:class:`training.history_features.HistoryFeatures`, bit for bit);
    a stretch where every symbol has its bar and every feature at every close goes in as one
    matrix (:meth:`flows.replay.DecisionReplay.settle_history`), any other (warm-up, gaps) as
    records.  Either way the barrier and the scoring step see the same values in the same
    groups, so the trades are the same.  ``tally`` counts the seconds spent on features and
    the bar times that went as matrices; ``first_open`` gets each symbol's first open from
    ``start_ms`` on.
    """
    clock, tf_ms = replay.clock, timeframe_ms(timeframe)
    n_symbols = len(replay.barrier.symbols)
    barrier = replay.barrier
    if chunk == 1:
        pieces: Iterator[Any] = bar_time_chunks(operator_records(streams, timeframe), 1, tf_ms)
    else:
        t0 = clock()
        hist = HistoryFeatures(streams, timeframe)
        matrices = matrices and hist.symbols == barrier.symbols and barrier.scoring.takes_matrix()
        pieces = hist.chunks(chunk)
        tally["features"] += clock() - t0
    while True:
        t0 = clock()
        piece = next(pieces, None)
        if piece is None:
            tally["features"] += clock() - t0
            return
        if chunk > 1 and piece.regular and matrices and barrier.idle():
            bars, x = hist.matrix(piece, barrier.scoring.feed)
            tally["features"] += clock() - t0
            for got in bars if len(first_open) < n_symbols else ():
                for b in got:
                    if start_ms is None or b.ts >= start_ms:
                        first_open.setdefault(b.symbol, b.open)
            tally["matrix_closes"] += len(piece.closes)
            yield replay.settle_history(piece.closes, bars, x)
            continue
        records = piece if chunk == 1 else list(hist.records(piece.lo, piece.hi))
        tally["features"] += clock() - t0
        for rec in records if len(first_open) < n_symbols else ():
            if isinstance(rec, Bar) and (start_ms is None or rec.ts >= start_ms):
                first_open.setdefault(rec.symbol, rec.open)
        yield replay.settle(records)  # the closes up to start_ms only warm up (BacktestDecisions.take)


def _record(result: BacktestResult, closes: list[Close], out: list[Any], first: dict[str, float]) -> None:
    """Keep the fills and the per-close equity of what the decision step made of ``closes``."""
    bars = {c.ts: c.bars for c in closes}
    fills, marks, firsts = result.fills, result.marks, list(first.items())
    for item in out:
        kind = type(item)
        if kind is Decided:  # most of them: nothing to keep
            continue
        if kind is PortfolioRow:
            result.times.append(item.ts)
            state = item.state
            result.equity.append(float(state["equity"]))
            result.regimes.append(state.get("regime"))
            last = {b.symbol: b.close for b in bars[item.ts]}
            rel = [last[s] / p for s, p in firsts if s in last]
            result.benchmark.append(sum(rel) / len(rel) if rel else 1.0)
            marks.update(last)
            held = state.get("positions", {})
            result.positions.append({s: float(q) * marks.get(s, 0.0) for s, q in held.items() if q})
        elif isinstance(item, Fill):
            fills.append(item)
        elif isinstance(item, Rejection) and item.symbol == PORTFOLIO:
            result.halts.append(item)


def write_outputs(out: Path, result: BacktestResult, summary: dict[str, Any]) -> None:
    """Write equity.csv, fills.csv, positions.csv (value per symbol per close), summary.json and equity.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    e0 = result.equity[0] if result.equity else 1.0
    lines = ["ts,equity,strategy_growth,buy_and_hold_growth"]
    lines += [f"{utc(t).isoformat()},{e:.6f},{e / e0:.8f},{b:.8f}"
              for t, e, b in zip(result.times, result.equity, result.benchmark, strict=True)]
    if any(result.regimes):  # the regime known at each close: the per-regime breakdown and the gate read it
        lines = [f"{line},{r or ''}" for line, r in zip(lines, ["regime", *result.regimes], strict=True)]
    (out / "equity.csv").write_text("\n".join(lines) + "\n")
    fills = ["ts,client_order_id,symbol,side,qty,price,fee,liquidity"]
    fills += [f"{utc(f.ts).isoformat()},{f.client_order_id},{f.symbol},{f.side},{f.qty!r},{f.price!r},{f.fee!r},"
              f"{f.liquidity}" for f in result.fills]
    (out / "fills.csv").write_text("\n".join(fills) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    symbols = sorted({s for p in result.positions for s in p})
    rows = ["ts," + ",".join(symbols)]
    rows += [f"{utc(t).isoformat()}," + ",".join(f"{p.get(s, 0.0):.6f}" for s in symbols)
             for t, p in zip(result.times, result.positions, strict=True)]
    (out / "positions.csv").write_text("\n".join(rows) + "\n")
    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=80)
    when: Any = [utc(t) for t in result.times]  # matplotlib plots datetimes
    ax.plot(when, [e / e0 for e in result.equity], label="strategy")
    ax.plot(when, result.benchmark, label="buy and hold (equal weight)", alpha=0.7)
    ax.set_ylabel("growth of 1")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "equity.png")
    plt.close(fig)


def _window(settings: Settings, timeframe: str) -> str:
    try:
        m = read_manifest(resolve_version_dir(settings.registry_root(), "ensemble", settings.scoring.ensemble_version,
                                              timeframe=timeframe))
    except (ManifestError, FileNotFoundError, OSError) as exc:
        raise SettingsError(f"scoring.registry: no ensemble in {settings.registry_root()} ({exc}); train one "
                            "with python -m training.train") from None
    if m.feature_service != f"ensemble_{timeframe}_v1":
        raise SettingsError(f"the registry's ensemble was trained for {m.feature_service}, not {timeframe} bars")
    return f"ensemble {m.version} trained on {m.train_start} .. {m.train_end}"


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the backtest, print and write the results."""
    p = argparse.ArgumentParser(prog="python -m training.backtest", description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, help="candle files (parquet, CSV, freqtrade feather)")
    p.add_argument("--start", help="first traded bar time, ISO 8601 UTC (earlier bars warm up)")
    p.add_argument("--end", help="end (exclusive), ISO 8601 UTC")
    p.add_argument("--registry", type=Path, help="model registry (default: the settings' scoring.registry)")
    p.add_argument("--out", type=Path, default=Path("var/backtest"), help="directory for the outputs")
    p.add_argument("--config", help="settings YAML (else $CRYPTOSTREAM_CONFIG)")
    p.add_argument("--chunk", type=int, default=1,
                   help="bar times per scoring call: 1 scores exactly as the live flow (default); more (e.g. 256) "
                        "scores history in batches, faster and equal within float rounding")
    p.add_argument("--processes", type=int, choices=(1, 2), default=PROCESSES,
                   help="with --chunk above 1, 2 decides in a second process while this one scores the next chunks "
                        "(the same trades and records; less wall time only when a second core is free, more "
                        "CPU time); 1 (default) runs all in this process")
    p.add_argument("--store", action="store_true",
                   help="also write predictions, orders, fills, risk events and portfolio state to the "
                        "profile's decision store")
    p.add_argument("--no-tearsheet", action="store_true", help="do not write tearsheet.html and its plots")
    p.add_argument("--profile", choices=("local", "timescale"), default="local",
                   help="store of --store: parquet under data_dir (local) or TimescaleDB + Redis streams")
    a = p.parse_args(argv)
    if a.chunk < 1:
        p.error("--chunk must be at least 1")
    try:
        overrides: dict[str, Any] = {"profile": a.profile if a.store else "local"}  # nothing else needs services
        settings = load_settings(a.config, **overrides)
        if a.registry is not None:
            settings = settings.model_copy(update={"scoring": settings.scoring.model_copy(
                update={"registry": a.registry})})
        streams, tf = _files(a.paths, None, _ms(a.end))
        print(_window(settings, tf), flush=True)
        result = run_backtest(settings, streams, tf, _ms(a.start), chunk=a.chunk, store=a.store,
                              processes=a.processes)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = result.summary(tf)
    write_outputs(a.out, result, summary)
    if not a.no_tearsheet and result.times:
        from training.tearsheet import render_tearsheet

        print(f"tearsheet: {render_tearsheet(a.out, tf)}")
    print(f"{summary.get('start', '-')} .. {summary.get('end', '-')}: {summary['bars']} closes, "
          f"{summary['fills']} fills, fees {summary['fees']:,.2f} (figures after fees)")
    for name in ("strategy", "buy_and_hold", "vol_target_buy_and_hold", "cash"):
        if name in summary:
            m = summary[name]
            print(f"{name:<24} return {m['total_return']:+.2%}  sharpe {m['sharpe']:+.2f}  "
                  f"max drawdown {m['max_drawdown']:.2%}")
    if "win_rate" in summary.get("strategy", {}):
        m = summary["strategy"]
        print(f"round trips {m['round_trips']:.0f}  win rate {m['win_rate']:.1%}  profit factor "
              f"{m['profit_factor']:.2f}  mean holding {m['avg_holding_hours']:.1f} h")
    for h in summary["halts"]:
        print(f"risk {h['rule']} at {h['ts']}: {h['reason']}")
    if not summary["halts"]:
        print("risk: trading was never halted")
    if a.store:
        print(f"decision records stored ({settings.profile} profile, run id {result.run_id})")
    print(f"written under {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
