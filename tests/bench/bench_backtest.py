"""Benchmark: ``training.backtest`` end to end on real 5m candles, symbol-bars per second per stage.

Usage::

    .venv/bin/python tests/bench/bench_backtest.py                  # 5 symbols, January 2024 (44.6k symbol-bars)
    .venv/bin/python tests/bench/bench_backtest.py --full           # 5 symbols x ~72k bars (2024-01-01 .. 09-06)
    .venv/bin/python tests/bench/bench_backtest.py --repeat 3 --chunk 256
    .venv/bin/python tests/bench/bench_backtest.py --against ../before --pairs 3   # another checkout, A/B
    .venv/bin/python tests/bench/bench_backtest.py --against ../before --processes 2  # this one pipelined
    .venv/bin/python tests/bench/bench_backtest.py --stage-clock cpu --no-baseline  # stages in CPU time

Data: ``--data`` (default ``../shared/data/binance-spot-5m-2024``), the five symbols
BTC, ETH, SOL, XRP, DOGE against USDT.  This is a speed benchmark, not research: the
models only have to exist and be of the shape the flow scores (the speed does not
depend on their quality).

Models: ``--registry DIR`` (default ``var/bench_registry_5m``); if it holds no 5m
ensemble, it is built once with the commands a user would type, in a scratch
``local`` profile: ``training.backfill files`` of the January 5m candles,
``training.train`` lightgbm / lstm / gnn with the main job's quick flags
(``flows.bootstrap.QUICK``) and the ensemble, ``training.rl train tactical --quick``
on the candle files and ``training.rl export tactical``.  A few minutes on 2 cores.

Each repeat times, in this order:

1. *features*: the candle files through the flow's operators alone
   (``training.backfill.operator_records``: bars, per-symbol features, cross-asset), and
   the same records from whole arrays (``training.history_features.history_records``, what
   the backtest uses with ``--chunk`` above 1);
2. the backtest with ``--chunk N`` (``training.backtest.run_backtest``: files, features,
   close barrier with scoring (ensemble with LightGBM, LSTM, graph model; the tactical
   policy), decision step with risk, paper broker and portfolio), end to end, with the
   seconds of each stage as the run measured them (``BacktestResult.spent``);
3. the pipelined run (skip with ``--no-pipeline``): the same backtest with ``--processes 2``
   (``training.backtest_pipeline``: this process reads, computes the features and scores; a
   forked child decides), with its wall time, the CPU time of both processes (a pipeline does
   more work, not less: it only spreads it over two cores) and each side's stages (``send``
   and ``receive`` are the transfer's cost per side, ``wait`` and ``idle`` the time one side
   waited for the other); its fills, equity, positions, halts and regimes must be identical
   (``==``) to 2.'s;
4. the baseline: the same backtest with ``--chunk 1`` (bar time by bar time, as the
   live flow scores);
5. on the first repeat, the check: the same chunks fed to the barrier as records
   (``run_backtest(..., matrices=False)``, the path before the feed matrices), whose fills,
   equity and positions must be identical (``==``) to the timed run's.

Symbol-bars/s of a stage = symbol-bars of the run / seconds spent in that stage; the last
table gives each stage's microseconds per symbol-bar (``other`` is the bookkeeping of
``run_backtest``, ``record`` keeping each close's equity and positions; ``files, models, set-up``
reading the candle files into bar records, loading the models and building the risk engine,
broker and portfolio), and one more table the pipelined run's, per process.  On a shared
machine the wall-clock figures follow the load; the CPU time (also printed) much less so.
Checks on every run: the chunked backtest's fills and equity equal the bar by bar
one's within float rounding (as ``tests/unit/flows/test_replay.py`` asserts).  ``--against``
compares the two checkouts' fills, equity values, positions and halts by a digest of
their ``repr`` (exact for floats).
Not a test; machines here are noisy: compare ratios within one invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

from flows.operators.model_bank import has_models  # noqa: E402
from flows.settings import Settings, load_settings  # noqa: E402
from training.backfill import _files, _ms, operator_records  # noqa: E402
from training.backtest import BacktestResult, run_backtest  # noqa: E402
from training.history_features import history_records  # noqa: E402

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "DOGE/USDT")
DATA = ROOT.parent / "shared" / "data" / "binance-spot-5m-2024"
TRAIN = ("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z")  # what the quick models see (speed only)
STAGES = ("features", "scoring", "decisions")


def log(msg: str) -> None:
    """Print a progress line to stderr."""
    print(f"[bench_backtest {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def files(data: Path, symbols: tuple[str, ...]) -> list[Path]:
    """Return the 5m candle file of each symbol."""
    return [data / f"{s.replace('/', '_')}-5m.parquet" for s in symbols]


def ensure_registry(root: Path, data: Path, symbols: tuple[str, ...]) -> None:
    """Build a 5m registry with every member and the tactical policy into ``root`` unless it has a 5m ensemble."""
    if has_models(root, "5m"):
        return
    from flows.bootstrap import QUICK
    from tests.kit.repo import copy_feature_repo

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        copy_feature_repo(tmp)
        env = {**os.environ, "CRYPTOSTREAM_PROFILE": "local", "CRYPTOSTREAM_DATA_DIR": str(tmp),
               "CRYPTOSTREAM_FEAST_REPO": str(tmp / "feature_repo"), "CRYPTOSTREAM_SYMBOLS": ",".join(symbols),
               "CRYPTOSTREAM_BARS__TIMEFRAMES": "5m", "CRYPTOSTREAM_EXCHANGE__FILL_GAPS": "false",
               "PYTHONPATH": str(ROOT)}
        py = sys.executable
        window = ["--symbols", *symbols, "--timeframe", "5m", "--start", TRAIN[0], "--end", TRAIN[1],
                  "--registry", str(root), "--seed", "7"]
        steps = [
            ([str(Path(py).with_name("feast")), "-c", str(tmp / "feature_repo"), "apply"], "feast apply"),
            ([py, "-m", "training.backfill", "files", *map(str, files(data, symbols)), "--start", TRAIN[0],
              "--end", TRAIN[1]], "backfill January 5m"),
            *[([py, "-m", "training.train", fam, *window, *QUICK[fam]], f"train {fam}")
              for fam in ("lightgbm", "lstm", "gnn")],
            ([py, "-m", "training.train", "ensemble", "--registry", str(root), *QUICK["ensemble"]], "train ensemble"),
            ([py, "-m", "training.rl", "train", "tactical", "--quick", "--data-dir", str(data), "--timeframe", "5m",
              "--symbols", *symbols, "--end", TRAIN[1], "--registry", str(root), "--no-progress"], "train tactical"),
            ([py, "-m", "training.rl", "export", "tactical", "--registry", str(root)], "export tactical"),
        ]
        for cmd, what in steps:
            t0 = time.perf_counter()
            log(f"registry: {what} ...")
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, cwd=ROOT)
            if done.returncode != 0:
                raise SystemExit(f"{what} failed:\n{(done.stderr or done.stdout)[-3000:]}")
            log(f"registry: {what} done in {time.perf_counter() - t0:.0f} s")


def settings_for(registry: Path, out: Path, symbols: tuple[str, ...]) -> Settings:
    """Settings of the backtest: local profile, scratch data dir, the bench registry, 5m scoring."""
    return load_settings(env={"CRYPTOSTREAM_SYMBOLS": ",".join(symbols), "CRYPTOSTREAM_DATA_DIR": str(out),
                              "CRYPTOSTREAM_BARS__TIMEFRAMES": "5m", "CRYPTOSTREAM_SCORING__REGISTRY": str(registry),
                              "CRYPTOSTREAM_EXCHANGE__FILL_GAPS": "false"})


def features_only(paths: list[Path], end_ms: int | None, records: Any = operator_records) -> tuple[float, int]:
    """Time the candle files through ``records`` (the operators, or the whole-array path) alone: (seconds, bars)."""
    t0 = time.perf_counter()
    streams, tf = _files(paths, None, end_ms)
    bars = sum(1 for r in records(streams, tf) if type(r).__name__ == "Bar")
    return time.perf_counter() - t0, bars


def backtest(settings: Settings, paths: list[Path], end_ms: int | None, chunk: int,
             matrices: bool = True, clock: Any = time.perf_counter, processes: int = 1) -> tuple[float, BacktestResult]:
    """Time ``run_backtest`` end to end (reading the files included); return (seconds, result).

    ``clock`` times the stages (``result.spent``): wall time, or ``time.thread_time`` (CPU time).
    ``processes`` 2: the pipelined run (``result.spent["cpu"]`` then counts both processes'
    CPU seconds, ``"cpu decision process"`` the child's).
    """
    t0, c0 = time.perf_counter(), time.process_time()
    streams, tf = _files(paths, None, end_ms)
    kw: dict[str, Any] = {"processes": processes} if processes > 1 else {}  # --against: checkouts without it
    result = run_backtest(settings, streams, tf, None, chunk=chunk, matrices=matrices, clock=clock, **kw)
    # the CPU seconds of the run's processes: steadier on a shared machine than the wall time
    result.spent["cpu"] = time.process_time() - c0 + result.spent.get("cpu decision process", 0.0)
    return time.perf_counter() - t0, result


def same_trades(a: BacktestResult, b: BacktestResult, exact: bool = False) -> str:
    """Return how far two runs' fills and equity are apart (``equal`` when bit for bit).

    ``exact``: ``identical`` when every fill (all fields) and every equity value is ``==``, else ``DIFFERENT``.
    """
    if exact:
        same = (a.fills == b.fills and a.equity == b.equity and a.times == b.times and a.positions == b.positions
                and a.halts == b.halts and a.regimes == b.regimes and a.benchmark == b.benchmark)
        return ("identical" if same else "DIFFERENT") + f" ({len(a.fills)} fills, {len(a.times)} closes)"
    if len(a.fills) != len(b.fills) or a.times != b.times:
        return f"DIFFERENT: {len(a.fills)} vs {len(b.fills)} fills, {len(a.times)} vs {len(b.times)} closes"
    de = max((abs(x - y) / max(abs(y), 1.0) for x, y in zip(a.equity, b.equity, strict=True)), default=0.0)
    dq = max((abs(x.qty - y.qty) / max(abs(y.qty), 1e-12) for x, y in zip(a.fills, b.fills, strict=True)),
             default=0.0)
    sides = all(x.side == y.side and x.symbol == y.symbol and x.ts == y.ts for x, y in zip(a.fills, b.fills,
                                                                                            strict=True))
    return "equal" if de == dq == 0.0 and sides else f"{'same' if sides else 'DIFFERENT'} fills, " \
        f"max rel diff equity {de:.1e}, qty {dq:.1e}"


_CHILD = """
import hashlib, json, sys, tempfile, time
from pathlib import Path
root, registry, data, end, chunk, processes = sys.argv[1:7]
sys.path[:0] = [root, root + "/tests/bench"]
import bench_backtest as bb
kw = {"processes": int(processes)} if int(processes) > 1 else {}
with tempfile.TemporaryDirectory() as tmp:
    settings = bb.settings_for(Path(registry), Path(tmp), bb.SYMBOLS)
    c0 = time.process_time()
    wall, res = bb.backtest(settings, bb.files(Path(data), bb.SYMBOLS), None if end == "-" else int(end), int(chunk),
                            **kw)
    # every fill, equity value, position and halt by repr (exact for floats): the checkouts' trades must be ==
    digest = hashlib.sha256(repr((res.fills, res.equity, res.times, res.positions, res.halts)).encode()).hexdigest()
    print(json.dumps({"wall": wall, "cpu": time.process_time() - c0 + res.spent.get("cpu decision process", 0.0),
                      "fills": len(res.fills), "equity": repr(res.equity[-1]) if res.equity else "-",
                      "bars": len(res.times), "digest": digest[:16]}))
"""


def against(other: Path, args: argparse.Namespace, end_ms: int | None, n: int) -> None:
    """Time ``other``'s checkout and this one, alternating, each run in a fresh process; print both."""
    out: dict[str, list[dict[str, Any]]] = {"other": [], "this": []}
    for _ in range(args.pairs):
        for name, root in (("other", other), ("this", ROOT)):
            procs = args.processes if name == "this" else 1
            done = subprocess.run([sys.executable, "-c", _CHILD, str(root), str(args.registry), str(args.data),
                                   "-" if end_ms is None else str(end_ms), str(args.chunk), str(procs)],
                                  capture_output=True,
                                  text=True, check=True, env={**os.environ, "PYTHONPATH": str(root)}, cwd=root)
            out[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"\n{other} (other) against this checkout (--processes {args.processes}), --chunk {args.chunk}, alternating, "
          f"a fresh process per run (load average {os.getloadavg()[0]:.1f}; CPU: every process of the run):")
    for name in ("other", "this"):
        runs = out[name]
        print(f"  {name:<6} wall " + " ".join(f"{n / r['wall']:>8,.0f}" for r in runs) + "   CPU "
              + " ".join(f"{n / r['cpu']:>8,.0f}" for r in runs) + f"  symbol-bars/s; {runs[0]['fills']} fills, "
              f"last equity {runs[0]['equity']}")
    ratios = " ".join(f"{o['cpu'] / t['cpu']:.2f}x" for o, t in zip(out["other"], out["this"], strict=True))
    same = all(o["digest"] == t["digest"] for o, t in zip(out["other"], out["this"], strict=True))
    print(f"  CPU time other / this, per pair: {ratios}; every fill, equity value, position and halt "
          f"{'identical' if same else 'DIFFERENT'} (repr digest {out['this'][0]['digest']})")


def fmt(bars: int, seconds: float) -> str:
    """Symbol-bars per second, thousands separated."""
    return f"{bars / seconds:>10,.0f}" if seconds > 0 else "         -"


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, build or reuse the registry, time the runs, print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--registry", type=Path, default=ROOT / "var" / "bench_registry_5m")
    p.add_argument("--end", default="2024-02-01T00:00:00Z", help="end of the slice (exclusive)")
    p.add_argument("--full", action="store_true", help="every bar of the files (~72k bar times)")
    p.add_argument("--chunk", type=int, default=256, help="bar times per scoring call of the timed backtest")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-baseline", action="store_true", help="skip the --chunk 1 baseline")
    p.add_argument("--against", type=Path, help="another checkout (e.g. a worktree of the code before a change) "
                   "to time against this one, alternating, in fresh processes (only that comparison runs)")
    p.add_argument("--pairs", type=int, default=3, help="runs of each checkout with --against")
    p.add_argument("--stage-clock", choices=("wall", "cpu"), default="wall",
                   help="what times the stages: wall time, or the thread's CPU time (steadier on a loaded machine; "
                        "the last table is then in CPU microseconds)")
    p.add_argument("--no-pipeline", action="store_true",
                   help="skip the pipelined run (--processes 2: decisions in a second process) beside the timed one")
    p.add_argument("--processes", type=int, choices=(1, 2), default=1,
                   help="with --against: this checkout's runs with that many processes (the other's with 1)")
    p.add_argument("--no-check", action="store_true",
                   help="skip the records-path run (same chunks as records, not matrices) that checks bit-identity")
    args = p.parse_args(argv)
    symbols = SYMBOLS
    ensure_registry(args.registry, args.data, symbols)
    paths, end_ms = files(args.data, symbols), None if args.full else _ms(args.end)
    if args.against is not None:
        _, n = features_only(paths, end_ms, history_records)
        against(args.against, args, end_ms, n)
        return 0
    rows: list[dict[str, Any]] = []
    clock = time.thread_time if args.stage_clock == "cpu" else time.perf_counter
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_for(args.registry, Path(tmp), symbols)
        for i in range(args.repeat):
            f_s, n = features_only(paths, end_ms)
            h_s, _ = features_only(paths, end_ms, history_records)
            t_n, res_n = backtest(settings, paths, end_ms, args.chunk, clock=clock)
            row: dict[str, Any] = {"features only": f_s, "history features": h_s, "n": n,
                                   f"chunk {args.chunk}": t_n, "spent": res_n.spent, "fills": len(res_n.fills)}
            if not args.no_pipeline:
                t_p, res_p = backtest(settings, paths, end_ms, args.chunk, clock=clock, processes=2)
                row["pipelined"], row["spent p"] = t_p, res_p.spent
                row["pipeline check"] = same_trades(res_n, res_p, exact=True)
            if not args.no_baseline:
                t_1, res_1 = backtest(settings, paths, end_ms, 1, clock=clock)
                row["chunk 1"], row["spent 1"], row["check"] = t_1, res_1.spent, same_trades(res_n, res_1)
            if i == 0 and not args.no_check:
                t_r, res_r = backtest(settings, paths, end_ms, args.chunk, matrices=False)
                row["records"], row["identical"] = t_r, same_trades(res_n, res_r, exact=True)
                row["matrix share"] = res_n.matrix_closes / max(len(res_n.times), 1)
            rows.append(row)
            log(f"repeat {i + 1}: {n} symbol-bars; features only {n / f_s:,.0f}/s; chunk {args.chunk} "
                f"{n / t_n:,.0f}/s" + (f"; pipelined {n / row['pipelined']:,.0f}/s ({row['pipeline check']})"
                                      if "pipelined" in row else "") + (f"; chunk 1 {n / row['chunk 1']:,.0f}/s ({row['check']})"
                                      if "chunk 1" in row else ""))
    n = rows[0]["n"]
    print(f"\ntraining.backtest, {len(symbols)} symbols x {n // len(symbols):,} 5m bars = {n:,} symbol-bars "
          f"{rows[0]['fills']} fills, registry {args.registry}")
    print(f"{'run':<44}" + "".join(f"{'repeat ' + str(i + 1):>12}" for i in range(len(rows))) + "   (symbol-bars/s)")
    lines = [(f"backtest --chunk {args.chunk}, end to end", [r[f"chunk {args.chunk}"] for r in rows])]
    lines.append(("same, CPU time of the process", [r["spent"]["cpu"] for r in rows]))
    stage = "  stage (thread CPU) " if args.stage_clock == "cpu" else "  stage "
    lines += [(f"{stage}{k}", [r["spent"][k] for r in rows]) for k in rows[0]["spent"] if k not in ("sink", "cpu")]
    if "pipelined" in rows[0]:
        lines.append((f"backtest --chunk {args.chunk} --processes 2, end to end", [r["pipelined"] for r in rows]))
        lines.append(("same, CPU time of both processes", [r["spent p"]["cpu"] for r in rows]))
        for side, keys in PIPELINE_SIDES.items():
            lines += [(f"  {side}: {k}", [r["spent p"][k] for r in rows]) for k in keys if k != "sink"]
    if "chunk 1" in rows[0]:
        lines.append(("baseline: backtest --chunk 1, end to end", [r["chunk 1"] for r in rows]))
        lines.append(("same, CPU time of the process", [r["spent 1"]["cpu"] for r in rows]))
        lines += [(f"{stage}{k}", [r["spent 1"][k] for r in rows]) for k in rows[0]["spent 1"]
                  if k not in ("sink", "cpu")]
    lines.append(("features only, streaming operators", [r["features only"] for r in rows]))
    lines.append(("features only, whole arrays (history_records)", [r["history features"] for r in rows]))
    for name, secs in lines:
        print(f"{name:<44}" + "".join(f"{fmt(n, s):>12}" for s in secs))
    if "chunk 1" in rows[0]:
        ratios = " ".join(f"{r['chunk 1'] / r[f'chunk {args.chunk}']:.2f}x" for r in rows)
        print(f"chunk {args.chunk} vs chunk 1 (same run): {ratios}; trades: {rows[-1]['check']}")
    if "pipelined" in rows[0]:
        walls = " ".join(f"{r[f'chunk {args.chunk}'] / r['pipelined']:.2f}x" for r in rows)
        cpus = " ".join(f"{r['spent']['cpu'] / r['spent p']['cpu']:.2f}x" for r in rows)
        print(f"--processes 2 vs 1 process, --chunk {args.chunk} (same run): wall {walls}, CPU (both processes) "
              f"{cpus}; fills, equity, positions, halts, regimes: {rows[-1]['pipeline check']}")
    if "records" in rows[0]:
        r0 = rows[0]
        print(f"bar times fed as feed matrices: {r0['matrix share']:.1%}; the same chunks fed as records (the path "
              f"before, same run): {n / r0['records']:,.0f}/s; fills and equity: {r0['identical']}")
    cpu = args.stage_clock == "cpu"
    best = min(rows, key=lambda r: r["spent"]["cpu"] if cpu else r[f"chunk {args.chunk}"])
    spent = {k: v for k, v in best["spent"].items() if k != "cpu"}
    whole = best["spent"]["cpu"] if cpu else best[f"chunk {args.chunk}"]  # what the stages are a part of
    cost = {**spent, "files, models, set-up": whole - sum(spent.values())}
    print(f"\nwhere the time goes (fastest repeat, --chunk {args.chunk}): {'CPU ' if cpu else ''}microseconds "
          "per symbol-bar")
    for k, v in cost.items():
        if k != "sink":
            print(f"  {k:<16}{v / n * 1e6:>8.2f}  ({v / whole:.0%})")
    print(f"  {'total':<16}{best[f'chunk {args.chunk}'] / n * 1e6:>8.2f}  = {fmt(n, best[f'chunk {args.chunk}']).strip()} "
          f"symbol-bars/s (target 50,000 = 20 us); CPU time {best['spent']['cpu'] / n * 1e6:.2f} us = "
          f"{fmt(n, best['spent']['cpu']).strip()}/s; load average {os.getloadavg()[0]:.1f}")
    if "pipelined" in rows[0]:
        pipelined_costs(rows, n, cpu)
    return 0


PIPELINE_SIDES = {"scoring side": ("features", "scoring", "send", "wait", "other"),
                  "decision side": ("receive", "decisions", "sink", "record", "idle")}


def pipelined_costs(rows: list[dict[str, Any]], n: int, cpu: bool) -> None:
    """Print where the pipelined run's time goes, per process (its fastest repeat), in microseconds per symbol-bar.

    The scoring side is this process; its ``files, models, set-up`` is the rest of its time
    (wall, or its CPU time with ``cpu``).  ``wait`` (blocked on the decision side) and ``idle``
    (the decision side waiting for closes) are not work: a balanced pipeline has little of either.
    """
    best = min(rows, key=lambda r: r["spent p"]["cpu"] if cpu else r["pipelined"])
    spent, child = best["spent p"], best["spent p"]["cpu decision process"]
    whole = spent["cpu"] - child if cpu else best["pipelined"]
    print(f"\nwhere the time goes, --processes 2 (fastest repeat): {'CPU ' if cpu else ''}microseconds per symbol-bar")
    here = {k: spent[k] for k in PIPELINE_SIDES["scoring side"]}
    here["files, models, set-up"] = whole - sum(here.values())
    for side, costs in (("scoring side (this process)", here),
                        ("decision side (child)", {k: spent[k] for k in PIPELINE_SIDES["decision side"]})):
        print(f"  {side}: " + ", ".join(f"{k} {v / n * 1e6:.2f}" for k, v in costs.items()))
    print(f"  total {best['pipelined'] / n * 1e6:.2f} us wall = {fmt(n, best['pipelined']).strip()} symbol-bars/s; "
          f"CPU time of both processes {spent['cpu'] / n * 1e6:.2f} us (child {child / n * 1e6:.2f}) = "
          f"{fmt(n, spent['cpu']).strip()}/s; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    raise SystemExit(main())
