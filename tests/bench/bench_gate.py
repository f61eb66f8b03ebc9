"""Benchmark: the go-live gate from stored results, against reading the same files in the same run.

A walk-forward directory of 4 years of 1h equity (35,040 closes), a round trip every
two days and 16 quarterly windows is written once (``tests/kit/walkforward_dir.py``);
then ``python -m training.gate --no-paper --dry-run`` judges it in-process (metrics,
round trips, deflated Sharpe with 200 trials, regimes, windows) and the baseline only
reads ``equity.csv`` and ``fills.csv`` with pandas.  The paper record's replay is a
backtest of the paper run's bars and costs what a backtest of that span costs.

Usage::

    .venv/bin/python tests/bench/bench_gate.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from tests.kit.verdicts import deployment
from tests.kit.walkforward_dir import write_run
from training.gate import main


def _trials(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"trial": range(200), "sharpe": [0.01 * k - 1.0 for k in range(200)]}).to_csv(
        directory / "trials.csv", index=False)
    return directory


def main_bench(repeats: int) -> None:
    """Print the gate's time and the baseline's."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        deployment(root / "registry")
        wf = write_run(root / "wf", 0.0001, bars=24 * 365 * 4, windows=16)
        tune = _trials(root / "tune")
        os.environ.update({"CRYPTOSTREAM_SCORING__REGISTRY": str(root / "registry"),
                           "CRYPTOSTREAM_BARS__TIMEFRAMES": "1h", "CRYPTOSTREAM_DATA_DIR": str(root / "var")})
        gate, base = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            pd.read_csv(wf / "equity.csv", parse_dates=["ts"])
            pd.read_csv(wf / "fills.csv", parse_dates=["ts"])
            base.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                code = main(["--walkforward", str(wf), "--tuning", str(tune), "--no-paper", "--dry-run"])
            gate.append(time.perf_counter() - t0)
            assert code in (0, 1)
    g, b = sorted(gate)[len(gate) // 2], sorted(base)[len(base) // 2]
    print("| figure | median s | ratio to reading the files |")
    print("|---|---|---|")
    print(f"| training.gate (35,040 closes, 730 round trips, 200 trials) | {g:.3f} | {g / b:.1f}x |")
    print(f"| baseline: read equity.csv + fills.csv | {b:.3f} | 1.0x |")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    main_bench(p.parse_args().repeats)
