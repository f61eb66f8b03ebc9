"""Benchmark: peers' EMA-cross backtests beside ``training.backtest`` on the same candles, same machine, same run.

Usage::

    python3.11 -m venv var/peers-venv && var/peers-venv/bin/pip install backtrader vectorbt nautilus_trader \\
        pyarrow "plotly<6"                                 # once; the peers never enter the project's .venv
    python3.11 -m venv var/freqtrade-venv && var/freqtrade-venv/bin/pip install freqtrade   # its own: pins pandas 3
    .venv/bin/python tests/bench/bench_peers.py --registry /work/main/var/bench_registry_5m
    .venv/bin/python tests/bench/bench_peers.py --peers vectorbt --no-ours --repeat 2

(``plotly<6``: vectorbt 1.0.0 does not import with plotly 6 or later; with nautilus_trader in the same
virtualenv pip picks vectorbt 1.0.0 and pandas 2.3; freqtrade 2026.9 wants pandas 3, hence its own.)

Issue 15 quotes peers "doing only an EMA cross": nautilus_trader 20k, freqtrade 29k, backtrader 16k,
vectorbt 260k symbol-bars/s.  This runs that strategy (``tests/bench/peer_ema.py``: EMA 12 and 26 on
the close, long only, all in / all out, 10 bp fee, filled at the signal bar's close (freqtrade: the next
bar's open), one backtest per symbol) in each installed peer, in a subprocess of ``--peers-python``
(``--freqtrade-python`` for freqtrade; virtualenvs of their own), over
the files ``bench_backtest.py --full`` reads (the five symbols, ~72k 5m bars each, 359,623
symbol-bars), and in the same invocation times this project's ``training.backtest --chunk 256`` with
``bench_backtest``'s functions (models, risk engine, paper broker: not an EMA cross).

Timed end to end on both sides: ours from reading the files to the last fill (as ``bench_backtest``),
a peer's from ``pd.read_parquet`` to its fills (imports and, for vectorbt, numba's compilation on the
first repeat of a process, are printed apart: best-of figures exclude them).  Each figure is the
fastest of ``--repeat`` runs, with the process's CPU time beside it, and the load average printed.

Fairness checks printed per peer and symbol: bars, the up and down crossings of the fast EMA over the
slow one it saw after ``--warmup`` bars, its buy and sell fills, its final equity; the crossings must
equal a reference computed here with pandas (``ewm(span, adjust=False)``), else the line says DIFFERENT.
freqtrade loads its markets from the exchange at start, which this machine cannot reach: ``peer_ema.py``
gives ccxt the five spot markets (symbols, precisions) instead; the rest is freqtrade's ``Backtesting``.
Not a test: a loaded machine moves the absolute figures; read the same-run ratios.
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

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

import bench_backtest as bb  # noqa: E402

PEERS = ("backtrader", "vectorbt", "nautilus_trader", "freqtrade")
QUOTED = {"nautilus_trader": "20k", "freqtrade": "29k", "backtrader": "16k", "vectorbt": "260k"}  # issue 15


def log(msg: str) -> None:
    """Print a progress line to stderr."""
    print(f"[bench_peers {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load() -> str:
    """The 1-minute load average, as printed beside each figure."""
    return f"{os.getloadavg()[0]:.1f}"


def best(runs: list[dict[str, Any]]) -> tuple[float, float]:
    """The fastest wall seconds and the fewest CPU seconds among ``runs`` (each may come from another run)."""
    return min(r["wall"] for r in runs), min(r["cpu"] for r in runs)


def reference(path: Path, fast: int, slow: int, warmup: int) -> tuple[int, int]:
    """Up and down crossings of EMA ``fast`` over EMA ``slow`` (close, seeded with the first close) from ``warmup``."""
    close = pd.read_parquet(path, columns=["close"])["close"]
    d = (close.ewm(span=fast, adjust=False).mean() - close.ewm(span=slow, adjust=False).mean()).to_numpy()
    now, before = d[warmup:], d[warmup - 1:-1]
    return int(((now > 0) & (before <= 0)).sum()), int(((now < 0) & (before >= 0)).sum())


def ours(args: argparse.Namespace, paths: list[Path]) -> dict[str, Any]:
    """Time ``training.backtest --chunk N`` over the whole files ``--repeat`` times (``bench_backtest.backtest``)."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = bb.settings_for(args.registry, Path(tmp), bb.SYMBOLS)
        for i in range(args.repeat):
            wall, res = bb.backtest(settings, paths, None, args.chunk)
            runs.append({"wall": wall, "cpu": res.spent["cpu"], "load": load()})
            log(f"ours, repeat {i + 1}: {wall:.1f} s wall, {res.spent['cpu']:.1f} s CPU, load {runs[-1]['load']}")
    return {"runs": runs, "fills": len(res.fills), "closes": len(res.times)}


def peer(name: str, args: argparse.Namespace, paths: list[Path]) -> dict[str, Any]:
    """Run ``peer_ema.py NAME`` in the peers' interpreter; return its JSON line plus the load after it."""
    python = args.freqtrade_python if name == "freqtrade" else args.peers_python
    cmd = [str(python), str(Path(__file__).with_name("peer_ema.py")), name, *map(str, paths),
           "--repeat", str(args.repeat), "--fast", str(args.fast), "--slow", str(args.slow),
           "--fee", str(args.fee), "--warmup", str(args.warmup)]
    log(f"{name} ...")
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": ""})
    if done.returncode != 0:
        return {"peer": name, "error": (done.stderr or done.stdout).strip().splitlines()[-1:]}
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    out["load"] = load()
    log(f"{name}: " + ", ".join(f"{r['wall']:.2f} s" for r in out["runs"]) + f", load {out['load']}")
    return out


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, time ours and each peer, print the tables."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peers-python", type=Path, default=ROOT / "var" / "peers-venv" / "bin" / "python",
                   help="the interpreter of the peers' virtualenv (see the usage above for the command)")
    p.add_argument("--freqtrade-python", type=Path, default=ROOT / "var" / "freqtrade-venv" / "bin" / "python",
                   help="the interpreter of freqtrade's virtualenv")
    p.add_argument("--peers", nargs="+", default=list(PEERS), choices=PEERS)
    p.add_argument("--data", type=Path, default=bb.DATA)
    p.add_argument("--registry", type=Path, default=ROOT / "var" / "bench_registry_5m")
    p.add_argument("--chunk", type=int, default=256, help="ours: bar times per scoring call")
    p.add_argument("--repeat", type=int, default=3, help="runs of ours and of each peer (the fastest is reported)")
    p.add_argument("--no-ours", action="store_true", help="time the peers only")
    p.add_argument("--fast", type=int, default=12)
    p.add_argument("--slow", type=int, default=26)
    p.add_argument("--fee", type=float, default=0.001, help="per fill, as a fraction (0.001 = 10 bp)")
    p.add_argument("--warmup", type=int, default=1000, help="bars before the first signal (see peer_ema.py)")
    args = p.parse_args(argv)
    paths = bb.files(args.data, bb.SYMBOLS)
    if not args.no_ours:
        bb.ensure_registry(args.registry, args.data, bb.SYMBOLS)  # as bench_backtest: built once if missing
    log(f"load average at start {load()}; {os.cpu_count()} CPUs")
    refs = {s: reference(f, args.fast, args.slow, args.warmup) for s, f in zip(bb.SYMBOLS, paths, strict=True)}
    results = [peer(name, args, paths) for name in args.peers]
    mine = None if args.no_ours else ours(args, paths)
    n = sum(len(pd.read_parquet(f, columns=["close"])) for f in paths)

    print(f"\nEMA {args.fast}/{args.slow} cross, long only, all in / all out, fee {args.fee:g}, signals from bar "
          f"{args.warmup}; {len(paths)} symbols, {n:,} symbol-bars; best of {args.repeat}; {os.cpu_count()} CPUs")
    print(f"{'who':<34}{'version':<12}{'wall /s':>10}{'CPU /s':>10}{'1st run /s':>12}{'import s':>10}{'load':>6}"
          f"{'issue 15 quoted':>17}")
    for r in results:
        if "error" in r:
            print(f"{r['peer']:<34}failed: {r['error']}")
            continue
        wall, cpu = best(r["runs"])
        print(f"{r['peer']:<34}{r['version']:<12}{n / wall:>10,.0f}{n / cpu:>10,.0f}"
              f"{n / r['runs'][0]['wall']:>12,.0f}{r['import']:>10.2f}{r['load']:>6}{QUOTED[r['peer']]:>17}")
    if mine is not None:
        wall, cpu = best(mine["runs"])
        name = f"training.backtest --chunk {args.chunk}"
        print(f"{name:<34}{'(this)':<12}{n / wall:>10,.0f}{n / cpu:>10,.0f}"
              f"{n / mine['runs'][0]['wall']:>12,.0f}{'':>10}{mine['runs'][-1]['load']:>6}{'':>17}")
        print(f"  ({mine['fills']} fills over {mine['closes']:,} closes: ensemble LightGBM + LSTM + graph model, "
              "RL tactical policy, risk engine, paper broker; not an EMA cross)")
        for r in results:
            if "error" not in r:
                (pw, pc), (ow, oc) = best(r["runs"]), best(mine["runs"])
                print(f"  {r['peer']}'s speed / this one's, same run: {ow / pw:.2f}x wall, {oc / pc:.2f}x CPU")

    print("\nchecks per symbol: bars, up/down crossings after the warm-up (reference: pandas ewm), "
          "buy/sell fills, final equity (from 10,000 USDT)")
    for r in results:
        if "error" in r:
            continue
        for s in r["symbols"]:
            ref = refs[s["symbol"]]
            ok = "same crossings" if (s["ups"], s["downs"]) == ref else f"DIFFERENT from reference {ref}"
            print(f"  {r['peer']:<16}{s['symbol']:<10}{s['bars']:>7,} bars  crossings {s['ups']:>5} up "
                  f"{s['downs']:>5} down  fills {s['buys']:>5} buy {s['sells']:>5} sell  equity "
                  f"{s['equity']:>10,.2f}  {ok}")
    print(f"load average at the end {load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
