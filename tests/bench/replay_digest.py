"""Digest of a fixed historical replay through the decision path: bit-identity before / after a change.

Usage::

    PYTHONPATH=$PWD .venv/bin/python tests/bench/replay_digest.py > /tmp/replay_digest_before.txt
    ... change the code ...
    PYTHONPATH=$PWD .venv/bin/python tests/bench/replay_digest.py | diff /tmp/replay_digest_before.txt -

Real 5m candles of BTC, ETH and SOL (``--data``, default ../shared/data/binance-spot-5m-2024)
go through ``python -m training.backtest --store`` (local profile: the decision records as
parquet under the run's data_dir) over 420 traded bar times (1,260 symbol-bars) after one day
of warm-up bars, bar by bar (``--chunk 1``) and chunked (``--chunk 256``).  The script prints,
per mode and table (predictions, orders, fills, risk events, portfolio state), the count of
records and a sha256 over their rows (sorted, every column, floats as their exact ``repr``),
and one sha256 over all of them.

Models: ``--registry DIR`` (default /tmp/digest_registry).  When it holds no 5m ensemble it is
filled once by the project's CLIs (backfill of the 12 days before the replay from the same
files, quick lightgbm / lstm / gnn / ensemble as ``flows.bootstrap.QUICK``, the tactical policy
with ``training.rl train --quick`` and ``export``), so the same registry serves every later run.
Comparing two checkouts: every record carries the run id, a hash of the effective settings, and
those include ``feast_repo`` (the checkout's own path) and the work directory; so run both with
the same ``CRYPTOSTREAM_FEAST_REPO`` and ``--work``, one after the other, e.g.
``CRYPTOSTREAM_FEAST_REPO=/work/main/feature_repo ... replay_digest.py --work /tmp/digest_work``.
Not a test: a before / after check.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
TRAIN = ("2024-05-20T00:00:00+00:00", "2024-06-01T00:00:00+00:00")
WARM = "2024-05-31T00:00:00+00:00"  # one day of bars that only warm features and models up
START = "2024-06-01T00:00:00+00:00"  # first traded bar time
END = "2024-06-02T11:00:00+00:00"  # 420 bar times of 5 minutes after START
TABLES = ("predictions", "orders", "fills", "risk_events", "portfolio_state")
QUICK = {"lightgbm": ["--folds", "2"],
         "lstm": ["--folds", "2", "--epochs", "2", "--hidden", "8", "--bptt", "8", "--burn-in", "8", "--segment", "64"],
         "gnn": ["--folds", "2", "--epochs", "2", "--hidden", "8", "--graph-window", "30"],
         "ensemble": ["--method", "fixed"]}  # as flows.bootstrap.QUICK


def _run(cmd: list[str], env: dict[str, str]) -> None:
    print("  $ " + " ".join(cmd[2:]), file=sys.stderr, flush=True)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def trimmed_files(data: Path, dest: Path, start: str, end: str) -> list[Path]:
    """Write the candles of [start, end) of each symbol to ``dest`` (named as the originals)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for s in SYMBOLS:
        name = f"{s.replace('/', '_')}-5m.parquet"
        df = pd.read_parquet(data / name)
        df = df[(df.ts >= pd.Timestamp(start)) & (df.ts < pd.Timestamp(end))].reset_index(drop=True)
        df.to_parquet(dest / name, index=False)
        out.append(dest / name)
    return out


def ensure_registry(root: Path, data: Path, work: Path) -> None:
    """Train a fixed 5m registry into ``root`` by the project's CLIs unless it holds a 5m ensemble."""
    from flows.operators.model_bank import has_models

    if has_models(root, "5m"):
        return
    print(f"training a 5m registry into {root} (once)", file=sys.stderr, flush=True)
    shutil.rmtree(work, ignore_errors=True)
    from tests.kit.repo import copy_feature_repo

    files = trimmed_files(data, work / "train-files", *TRAIN)
    env = {**os.environ, "CRYPTOSTREAM_DATA_DIR": str(work / "var"), "CRYPTOSTREAM_PROFILE": "local",
           "CRYPTOSTREAM_FEAST_REPO": str(copy_feature_repo(work)), "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS),
           "CRYPTOSTREAM_BARS__TIMEFRAMES": "5m"}
    py = sys.executable
    _run([py, "-m", "training.backfill", "files", *map(str, files), "--start", TRAIN[0], "--end", TRAIN[1]], env)
    _run([py, "-c", "from flows import feast_store; from flows.settings import load_settings; "
                    "feast_store.apply(load_settings())"], env)
    window = ["--symbols", *SYMBOLS, "--timeframe", "5m", "--start", TRAIN[0], "--end", TRAIN[1],
              "--registry", str(root), "--seed", "7"]
    for fam in ("lightgbm", "lstm", "gnn"):
        _run([py, "-m", "training.train", fam, *window, *QUICK[fam]], env)
    _run([py, "-m", "training.train", "ensemble", "--registry", str(root), *QUICK["ensemble"]], env)
    rl = ["--registry", str(root), "--timeframe", "5m", "--symbols", *SYMBOLS, "--data-dir",
          str(work / "train-files"), "--work-dir", str(work / "rl"), "--log-dir", str(work / "logs")]
    _run([py, "-m", "training.rl", "train", "tactical", "--quick", "--no-progress", *rl], env)
    _run([py, "-m", "training.rl", "export", "tactical", *rl], env)


def _cell(v: object) -> str:
    return repr(v)  # floats exactly (repr round-trips), None as None, timestamps with their zone


def table_digest(root: Path, table: str) -> tuple[int, str]:
    """Return the number of rows of a decision table under ``root`` and a sha256 over them (sorted)."""
    files = sorted((root / table).glob("*.parquet")) if (root / table).is_dir() else []
    rows: list[str] = []
    for f in files:
        t = pq.read_table(f)
        cols = t.column_names
        for r in t.to_pylist():
            rows.append("\x1f".join(f"{c}={_cell(r[c])}" for c in cols))
    rows.sort()
    h = hashlib.sha256()
    for r in rows:
        h.update(r.encode())
        h.update(b"\n")
    return len(rows), h.hexdigest()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "binance-spot-5m-2024")
    p.add_argument("--registry", type=Path, default=Path("/tmp/digest_registry"))
    p.add_argument("--work", type=Path, default=Path("/tmp/replay_digest_work"))
    a = p.parse_args()
    ensure_registry(a.registry, a.data, a.work / "train")
    files = trimmed_files(a.data, a.work / "replay-files", WARM, END)
    total = hashlib.sha256()
    count = 0
    print(f"replay {START} .. {END} of {', '.join(SYMBOLS)} (5m), registry {a.registry}")
    for chunk in (1, 256):
        data_dir = a.work / f"run-chunk{chunk}"  # a fixed path: the run id hashes the settings
        shutil.rmtree(data_dir, ignore_errors=True)
        env = {**os.environ, "CRYPTOSTREAM_DATA_DIR": str(data_dir), "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS),
               "CRYPTOSTREAM_BARS__TIMEFRAMES": "5m", "CRYPTOSTREAM_SCORING__CONFIDENCE_THRESHOLD": "0",
               "CRYPTOSTREAM_RISK__SIZING__MIN_REBALANCE_FRACTION": "0"}
        env.pop("CRYPTOSTREAM_CONFIG", None)
        _run([sys.executable, "-m", "training.backtest", *map(str, files), "--start", START, "--end", END,
              "--registry", str(a.registry), "--chunk", str(chunk), "--store", "--profile", "local",
              "--out", str(a.work / f"out-chunk{chunk}")], env)
        for table in TABLES:
            n, digest = table_digest(data_dir / "decisions", table)
            count += n
            total.update(f"{chunk}/{table}/{n}/{digest}\n".encode())
            print(f"chunk {chunk:>3}  {table:<16} {n:>6} records  sha256 {digest}")
    print(f"all  {count} records  sha256 {total.hexdigest()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
