"""Walk-forward backtest: ``python -m training.walkforward``.

Usage::

    python -m training.walkforward ../shared/data/binance-spot-1h/*.parquet --train-start 2020-09-01 \\
        --start 2022-01-01 --end 2024-01-01 --every quarter --out var/walkforward [--config FILE]
        [--rolling-days 730] [--horizon 1] [--embargo-bars 24] [--folds 3] [--set risk.sizing.vol_target=0.3]

The test span ``[--start, --end)`` is cut into windows (calendar quarters or months,
or ``--every-bars N``).  For each window the models are trained with the project's own
code (:func:`training.train.train_member` for LightGBM, then the ensemble) on the bars
from ``--train-start`` (expanding; ``--rolling-days`` keeps only the last days) up to
the window's start less the label horizon and an embargo (purge: no training label
looks into the window; embargo: a further gap of ``--embargo-bars``), into a scratch
registry ``<out>/registry/window-<k>``, never the user's registry.  The window is then
traded by :func:`training.backtest.run_backtest` (the flow's own operators, scoring,
strategy, risk engine and paper broker; bars before the window only warm up) with
the settings given, starting from the previous window's ending equity.  Positions
still open at a window's end are closed at its last close, paying the taker fee of
the one cost model, and appear as ``closeout-<k>`` fills.

Outputs under ``--out``: ``windows.csv`` (per window: training and test ranges,
return, Sharpe, drawdown, fills, fees, round trips, win rate, buy-and-hold), the
combined out-of-sample ``equity.csv``, ``fills.csv``, ``summary.json`` (in
``training.backtest``'s format, plus the data hash, the decision config hash, the
strategy and the versions trained per window), ``REPORT.md``; ``python -m
training.gate --walkforward OUT`` judges it.  Features are backfilled once per run
into ``<out>/var`` (the candle files through the flow's operators) and reused by
every window.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from flows.cli import HelpFormatter
from flows.settings import Settings, SettingsError, load_settings
from flows.timeframes import timeframe_ms

DAY_MS = 86_400_000


@dataclass(frozen=True)
class Window:
    """One walk-forward window: train on [train_start, train_end), trade [test_start, test_end)."""

    k: int
    train_start: pd.Timestamp
    train_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp


@dataclass(frozen=True)
class WalkForwardJob:
    """One ``python -m training.walkforward`` run."""

    paths: tuple[Path, ...]
    out: Path
    train_start: str
    start: str
    end: str
    every: str = "quarter"  # "quarter", "month", or "" with every_bars
    every_bars: int = 0
    rolling_days: int = 0  # 0 = expanding
    horizon: int = 1
    embargo_bars: int = 24
    folds: int = 3
    seed: int = 7
    threshold: float = 0.1
    chunk: int = 256
    config: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)  # dotted settings path -> value
    models_dir: Path | None = None  # where features and window registries live (default: out); shared by tuning
    lgb_params: Mapping[str, Any] = field(default_factory=dict)  # LightGBM parameters over its defaults

    @property
    def work(self) -> Path:
        """Return the directory of the backfilled features and the windows' registries."""
        return self.models_dir or self.out


def windows(job: WalkForwardJob, timeframe: str) -> list[Window]:
    """Return the windows of the job (purged by the horizon, embargoed by ``embargo_bars``)."""
    start, end = pd.Timestamp(job.start, tz="UTC"), pd.Timestamp(job.end, tz="UTC")
    if end <= start:
        raise SettingsError(f"--end {job.end} must be after --start {job.start}")
    if job.every_bars:
        edges = list(pd.date_range(start, end, freq=pd.Timedelta(milliseconds=timeframe_ms(timeframe)
                                                                    * job.every_bars)))
    elif job.every in ("quarter", "month"):
        edges = [start, *[t for t in pd.date_range(start, end, freq="QS" if job.every == "quarter" else "MS")
                          if start < t < end]]
    else:
        raise SettingsError(f"--every must be quarter or month (or give --every-bars), got {job.every!r}")
    if edges[-1] < end:
        edges.append(end)
    gap = pd.Timedelta(milliseconds=timeframe_ms(timeframe) * (job.horizon + job.embargo_bars))
    first = pd.Timestamp(job.train_start, tz="UTC")
    out = []
    for k, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        t0 = max(first, a - pd.Timedelta(days=job.rolling_days)) if job.rolling_days else first
        if a - gap <= t0:
            raise SettingsError(f"window {k} ({a:%Y-%m-%d}) leaves no training data after --train-start")
        out.append(Window(k, t0, a - gap, a, b))
    return out


def nested(dotted: Mapping[str, Any]) -> dict[str, Any]:
    """Turn ``{"risk.sizing.vol_target": 0.3}`` into ``{"risk": {"sizing": {"vol_target": 0.3}}}``."""
    out: dict[str, Any] = {}
    for path, value in dotted.items():
        node = out
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """Parse ``--set a.b=value`` items (value as YAML: numbers, booleans, strings)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SettingsError(f"--set {item!r}: write a.b.c=value")
        out[key.strip()] = yaml.safe_load(value)
    return out


def data_hash(paths: Sequence[Path]) -> str:
    """Return the sha256 of the candle files' names and bytes, in name order."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.name):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def job_settings(job: WalkForwardJob, **extra: Any) -> Settings:
    """Return the settings of the job's runs: the config and overrides, with a Feast repository and work dir of its own.

    The Feast repository is copied under ``<out>`` (definitions only) so the run never
    touches the user's Feast registry.
    """
    repo = job.work / "feature_repo"
    if not (repo / "feature_store.yaml").is_file():
        import shutil

        from flows.settings import PROJECT_ROOT

        repo.mkdir(parents=True, exist_ok=True)
        for f in (PROJECT_ROOT / "feature_repo").iterdir():
            if f.is_file() and f.suffix in (".py", ".yaml"):
                shutil.copy(f, repo / f.name)
    return load_settings(job.config, **merged(nested(job.overrides), {"data_dir": job.work / "var",
                                                                       "feast_repo": repo, "profile": "local"},
                                               extra))


def merged(*docs: Mapping[str, Any]) -> dict[str, Any]:
    """Return the documents merged key by key (nested mappings merged, later values win)."""
    out: dict[str, Any] = {}
    for d in docs:
        for k, v in d.items():
            out[k] = merged(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def prepare(job: WalkForwardJob, settings: Settings) -> tuple[str, tuple[str, ...]]:
    """Backfill the candle files into ``<out>/var`` once (features for every window); return (timeframe, symbols)."""
    from training.backfill import _files, run_backfill

    streams, tf = _files(list(job.paths), None, None)
    symbols = tuple(streams)
    marker = job.work / "var" / "backfilled.json"
    want = {"paths": sorted(str(p) for p in job.paths), "timeframe": tf}
    if not marker.is_file() or json.loads(marker.read_text()) != want:
        run_backfill(settings.model_copy(update={"symbols": symbols}), streams, tf)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(want))
    return tf, symbols


def train_window(job: WalkForwardJob, settings: Settings, w: Window, tf: str, symbols: tuple[str, ...],
                 registry: Path) -> dict[str, str]:
    """Train LightGBM and its ensemble for window ``w`` into ``registry``; return family -> version."""
    from training.train import TrainJob, train_ensemble, train_member

    done = registry / "trained.json"
    params = {"train_start": w.train_start.isoformat(), "train_end": w.train_end.isoformat(), "symbols": symbols,
              "horizon": job.horizon, "folds": job.folds, "seed": job.seed, "threshold": job.threshold,
              "lgb_params": dict(sorted(job.lgb_params.items())),
              "paths": sorted(str(p) for p in job.paths)}
    if done.is_file():
        saved = json.loads(done.read_text())
        if saved.get("params") == json.loads(json.dumps(params)):
            return dict(saved["versions"])  # trained for exactly this window and these parameters: reuse
    a = TrainJob(family="lightgbm", registry=registry, log_dir=job.work / "var" / "logs", work_dir=job.work / "var"
                 / "work", symbols=symbols, timeframe=tf, start=w.train_start.isoformat(),
                 end=w.train_end.isoformat(), horizon=job.horizon, seed=job.seed, folds=job.folds,
                 members=("lightgbm",), threshold=job.threshold, lgb_params=dict(job.lgb_params))
    lgb = train_member(a, settings)
    ens = train_ensemble(replace(a, family="ensemble"))
    versions = {"lightgbm": lgb.version, "ensemble": ens.version}
    done.write_text(json.dumps({"params": params, "versions": versions}))
    return versions


@dataclass
class WindowResult:
    """What trading one window gave."""

    window: Window
    result: Any  # training.backtest.BacktestResult, close-out fills included
    versions: dict[str, str]
    closeout_fee: float


def trade_window(job: WalkForwardJob, settings: Settings, w: Window, tf: str, registry: Path, cash: float
                 ) -> Any:
    """Trade window ``w`` with the models of ``registry`` from ``cash``; close what is open at its last close."""
    from flows.records import Fill
    from training.backfill import _files
    from training.backtest import run_backtest

    step = timeframe_ms(tf)
    warm = int(w.test_start.value // 1_000_000) - 30 * DAY_MS  # features and models' state warm up for 30 days
    end = int(w.test_end.value // 1_000_000)
    streams, _ = _files(list(job.paths), max(warm, 0), end)
    frames = {s: list(b) for s, b in streams.items()}
    s = settings.model_copy(update={"initial_cash": cash, "scoring": settings.scoring.model_copy(
        update={"registry": registry})})
    result = run_backtest(s, dict(frames), tf, int(w.test_start.value // 1_000_000), chunk=job.chunk)
    held: dict[str, float] = {}
    for f in result.fills:
        held[f.symbol] = held.get(f.symbol, 0.0) + (f.qty if f.side == "buy" else -f.qty)
    fee_rate = settings.execution.taker_fee
    fee_total = 0.0
    last_ts = result.times[-1] if result.times else end - step
    for sym, qty in sorted(held.items()):
        if abs(qty) < 1e-12 or not frames.get(sym):
            continue
        price = frames[sym][-1].close
        fee = abs(qty) * price * fee_rate
        fee_total += fee
        result.fills.append(Fill(f"closeout-{w.k}-{sym}", f"closeout-{w.k}", last_ts, sym,
                                 "sell" if qty > 0 else "buy", abs(qty), price, fee, "USDT", "taker"))
    if result.equity and fee_total:
        result.equity[-1] -= fee_total
    return result, fee_total


def before_fees(result: Any, timeframe: str) -> dict[str, float]:
    """Return the figures of the equity curve with every fee paid so far added back (before fees)."""
    import numpy as np

    from training import performance as perf

    fills = sorted(result.fills, key=lambda f: f.ts)
    paid = np.cumsum([f.fee for f in fills]) if fills else np.zeros(0)
    at = np.searchsorted(np.array([f.ts for f in fills], dtype=np.int64), np.array(result.times, dtype=np.int64),
                         side="right")
    added = np.where(at > 0, paid[np.maximum(at - 1, 0)] if len(paid) else 0.0, 0.0)
    curve = pd.Series(np.asarray(result.equity) + added, index=pd.to_datetime(result.times, unit="ms", utc=True))
    return perf.metrics(curve, timeframe).as_dict()


def window_row(wr: WindowResult, tf: str) -> dict[str, Any]:
    """Return the ``windows.csv`` row of one traded window."""
    from training import performance as perf

    w, r = wr.window, wr.result
    row: dict[str, Any] = {"window": w.k, "train_start": w.train_start.isoformat(), "train_end": w.train_end.isoformat(),
                           "test_start": w.test_start.isoformat(), "test_end": w.test_end.isoformat(),
                           "ensemble": wr.versions.get("ensemble", "")}
    if not r.times:
        return {**row, "return": 0.0, "sharpe": 0.0, "max_drawdown": 0.0, "fills": 0}
    idx = pd.DatetimeIndex(pd.to_datetime(r.times, unit="ms", utc=True))
    eq = pd.Series(r.equity, index=idx)
    m = perf.metrics(eq, tf)
    fills = _fills_frame(r.fills)
    trades = perf.trade_stats(perf.round_trips(fills))
    return {**row, "return": m.total_return, "sharpe": m.sharpe, "max_drawdown": m.max_drawdown,
            "fills": len(r.fills), "fees": float(sum(f.fee for f in r.fills)), "closeout_fee": wr.closeout_fee,
            "round_trips": trades["round_trips"], "win_rate": trades["win_rate"],
            "buy_and_hold_return": r.benchmark[-1] / r.benchmark[0] - 1.0 if r.benchmark else 0.0}


def _fills_frame(fills: Sequence[Any]) -> pd.DataFrame:
    return pd.DataFrame({"ts": pd.to_datetime([f.ts for f in fills], unit="ms", utc=True),
                         "symbol": [f.symbol for f in fills],
                         "qty": [f.qty if f.side == "buy" else -f.qty for f in fills],
                         "price": [f.price for f in fills], "fee": [f.fee for f in fills]})


def combine(results: Sequence[WindowResult]) -> Any:
    """Concatenate the windows' results into one (each window started from the previous one's ending equity)."""
    from training.backtest import BacktestResult

    out = BacktestResult(run_id="walkforward")
    level = 1.0  # the basket's growth carried from window to window
    for wr in results:
        r = wr.result
        out.times += r.times
        out.equity += r.equity
        out.regimes += r.regimes or [None] * len(r.times)
        out.benchmark += [level * b for b in r.benchmark]
        if r.benchmark:
            level *= r.benchmark[-1]
        out.fills += r.fills
        out.halts += r.halts
        out.positions += r.positions
    return out


def run(job: WalkForwardJob) -> tuple[list[WindowResult], dict[str, Any]]:
    """Train and trade every window; write the outputs; return the windows' results and the summary."""
    from flows.go_live import decision_config_hash, strategy_name
    from training.backtest import write_outputs

    job.out.mkdir(parents=True, exist_ok=True)
    job.work.mkdir(parents=True, exist_ok=True)
    settings = job_settings(job)
    tf, symbols = prepare(job, settings)
    settings = settings.model_copy(update={"symbols": symbols, "bars": settings.bars.model_copy(
        update={"timeframes": (tf,)}), "scoring": settings.scoring.model_copy(update={"timeframe": None})})
    results: list[WindowResult] = []
    cash = settings.initial_cash
    for w in windows(job, tf):
        registry = job.work / "registry" / f"window-{w.k}"
        versions = train_window(job, settings, w, tf, symbols, registry)
        result, fee = trade_window(job, settings, w, tf, registry, cash)
        results.append(WindowResult(w, result, versions, fee))
        if result.equity:
            cash = result.equity[-1]
        row = window_row(results[-1], tf)
        print(f"window {w.k}: train {w.train_start:%Y-%m-%d}..{w.train_end:%Y-%m-%d} test {w.test_start:%Y-%m-%d}.."
              f"{w.test_end:%Y-%m-%d} return {row['return']:+.2%} fills {row['fills']}", flush=True)
    combined = combine(results)
    summary = combined.summary(tf, settings.risk.sizing.vol_target)
    if combined.times:
        summary["strategy_before_fees"] = before_fees(combined, tf)
    summary.update({"timeframe": tf, "data_hash": data_hash(job.paths), "decision_config_hash":
                    decision_config_hash(settings), "strategy_name": strategy_name(settings),
                    "windows": [{"window": wr.window.k, **wr.versions} for wr in results],
                    "job": {k: (str(v) if isinstance(v, Path) else v) for k, v in job.__dict__.items()
                            if k not in ("paths", "overrides", "models_dir", "lgb_params")} | {"overrides": dict(job.overrides), "lgb_params": dict(job.lgb_params)}})
    write_outputs(job.out, combined, summary)
    rows = pd.DataFrame([window_row(wr, tf) for wr in results])
    rows.to_csv(job.out / "windows.csv", index=False)
    text = report(job, rows, summary)
    (job.out / "REPORT.md").write_text(text)
    win = text.split("## Windows (after fees)", 1)[1].split("## Combined", 1)[0]
    (job.out / "windows.section.md").write_text("# Walk-forward windows (after fees)\n" + win)
    if combined.times:
        from training.tearsheet import render_tearsheet

        render_tearsheet(job.out, tf, f"Walk-forward {job.start} .. {job.end}, out of sample")
    return results, summary


def report(job: WalkForwardJob, rows: pd.DataFrame, summary: Mapping[str, Any]) -> str:
    """Return the walk-forward report (windows, combined figures after fees beside the benchmarks)."""
    from training.performance import format_table

    keep = ("total_return", "cagr", "volatility", "sharpe", "sortino", "max_drawdown")
    table = format_table({n: {k: summary[n][k] for k in keep} for n in
                          ("strategy", "strategy_before_fees", "buy_and_hold", "vol_target_buy_and_hold", "cash")
                          if n in summary})
    cols = ["window", "test_start", "test_end", "return", "sharpe", "max_drawdown", "fills", "fees", "round_trips",
            "win_rate", "buy_and_hold_return"]
    win = rows[[c for c in cols if c in rows]].to_markdown(index=False, floatfmt=".4f")
    return (f"# Walk-forward {job.start} .. {job.end}\n\nEvery {job.every_bars or job.every}, trained from "
            f"{job.train_start} ({'rolling ' + str(job.rolling_days) + ' days' if job.rolling_days else 'expanding'}),"
            f" horizon {job.horizon} bars, embargo {job.embargo_bars} bars, strategy `{summary.get('strategy_name')}`, "
            f"overrides {dict(job.overrides) or 'none'}.\n\n## Windows (after fees)\n\n{win}\n\n"
            f"## Combined out-of-sample, after fees ({summary.get('fills', 0)} fills, fees "
            f"{summary.get('fees', 0.0):,.2f})\n\n{table}\n")


def parse_args(argv: Sequence[str] | None) -> WalkForwardJob:
    """Parse the command line into a job (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m training.walkforward", description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, help="candle files (one timeframe)")
    p.add_argument("--out", type=Path, default=Path("var/walkforward"))
    p.add_argument("--train-start", required=True, help="first training bar, ISO 8601 UTC")
    p.add_argument("--start", required=True, help="first traded bar (the first window's start)")
    p.add_argument("--end", required=True, help="end of the last window (exclusive)")
    p.add_argument("--every", default="quarter", choices=("quarter", "month"))
    p.add_argument("--every-bars", type=int, default=0, help="windows of this many bars instead of --every")
    p.add_argument("--rolling-days", type=int, default=0, help="train on the last N days only (0: expanding)")
    p.add_argument("--horizon", type=int, default=1, help="label horizon in bars (purge)")
    p.add_argument("--embargo-bars", type=int, default=24)
    p.add_argument("--folds", type=int, default=3, help="walk-forward folds inside each training window")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--threshold", type=float, default=0.1, help="the ensemble's minimum confidence for a signal")
    p.add_argument("--chunk", type=int, default=256, help="bar times per scoring call (1: exactly as live)")
    p.add_argument("--config", help="settings YAML of the strategy and risk (else $CRYPTOSTREAM_CONFIG)")
    p.add_argument("--set", action="append", default=[], dest="sets", help="override a setting: a.b.c=value")
    p.add_argument("--lgb", action="append", default=[], help="a LightGBM parameter: num_leaves=31 (repeat)")
    a = p.parse_args(argv)
    return WalkForwardJob(tuple(a.paths), a.out, a.train_start, a.start, a.end, a.every, a.every_bars,
                          a.rolling_days, a.horizon, a.embargo_bars, a.folds, a.seed, a.threshold, a.chunk, a.config,
                          parse_set(a.sets), lgb_params=parse_set(a.lgb))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the walk-forward; print the combined figures; return 0, or 2 on a usage or configuration error."""
    try:
        job = parse_args(argv)
        _, summary = run(job)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name in ("strategy", "buy_and_hold", "vol_target_buy_and_hold", "cash"):
        m = summary.get(name)
        if m:
            print(f"{name:<24} return {m['total_return']:+.2%}  sharpe {m['sharpe']:+.2f}  "
                  f"max drawdown {m['max_drawdown']:.2%}")
    print(f"written under {job.out} (judge it: python -m training.gate --walkforward {job.out})")
    return 0 if math.isfinite(summary.get("fees", 0.0)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
