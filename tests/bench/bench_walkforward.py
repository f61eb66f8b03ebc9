"""Benchmark: the walk-forward backtest's wall time and peak RSS, against one LightGBM training in the same run.

5 assets, 1h candles of ``../shared/data/binance-spot-1h``, quarterly retraining
(LightGBM + ensemble, 3 inner folds), the settings' default strategy, each window
traded by the backtest (``--chunk 256``).  The span ends at 2024-01-01: 2024 is the
research hold-out and is not traded by a benchmark.  The baseline is one
``python -m training.train lightgbm`` over the whole training span (what retraining
once costs).  Each command runs as a child process; peak RSS is the child's
``ru_maxrss``.

Usage::

    .venv/bin/python tests/bench/bench_walkforward.py [--data ../shared/data] [--start 2020-10-01] [--end 2024-01-01]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ("BTC", "ETH", "SOL", "BNB", "XRP")


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``cmd`` as a child; return (seconds, its peak RSS in MB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = proc.communicate()
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{err.decode()[-3000:]}")
    return took, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the only child so far


def main() -> None:
    """Print the walk-forward's figures and the baseline's."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--train-start", default="2020-09-01")
    p.add_argument("--start", default="2020-10-01")
    p.add_argument("--end", default="2024-01-01")
    a = p.parse_args()
    files = [str(a.data / "binance-spot-1h" / f"{s}_USDT-1h.parquet") for s in SYMBOLS]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CRYPTOSTREAM_DATA_DIR": f"{tmp}/var",
               "CRYPTOSTREAM_SYMBOLS": ",".join(f"{s}/USDT" for s in SYMBOLS)}
        wf, wf_rss = timed([sys.executable, "-m", "training.walkforward", *files, "--train-start", a.train_start,
                            "--start", a.start, "--end", a.end, "--every", "quarter", "--out", f"{tmp}/wf"], env)
        # the baseline runs under a second interpreter, so the walk-forward's peak does not mask its RSS
        one = subprocess.run([sys.executable, "-c", _BASELINE, f"{tmp}/wf/var", a.train_start, a.end,
                              ",".join(f"{s}/USDT" for s in SYMBOLS)], env=env, cwd=ROOT, capture_output=True,
                             text=True)
        if one.returncode != 0:
            raise SystemExit(one.stderr[-3000:])
        base, base_rss = (float(x) for x in one.stdout.split())
        windows = sum(1 for _ in open(f"{tmp}/wf/windows.csv")) - 1
    print("| what | wall s | peak RSS MB |")
    print("|---|---|---|")
    print(f"| training.walkforward, 5 assets 1h {a.start}..{a.end}, {windows} quarterly windows | {wf:.0f} | "
          f"{wf_rss:.0f} |")
    print(f"| baseline: one training.train lightgbm {a.train_start}..{a.end} (features already stored) | "
          f"{base:.0f} | {base_rss:.0f} |")
    print(f"ratio: {wf / base:.1f}x one training")


_BASELINE = """
import resource, subprocess, sys, time, os
var, start, end, symbols = sys.argv[1:]
env = {**os.environ, "CRYPTOSTREAM_DATA_DIR": var, "CRYPTOSTREAM_FEAST_REPO": os.path.join(os.path.dirname(var),
       "feature_repo")}
t0 = time.perf_counter()
subprocess.run([sys.executable, "-m", "training.train", "lightgbm", "--symbols", *symbols.split(","), "--timeframe",
                "1h", "--start", start, "--end", end, "--folds", "3", "--registry", os.path.join(var, "bench-reg")],
               env=env, check=True, capture_output=True)
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
"""


if __name__ == "__main__":
    main()
