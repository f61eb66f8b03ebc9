"""First-run bootstrap of the main job: history, quick models and policy when the registry is empty.

On a fresh machine ``python -m flows.main`` calls :func:`bootstrap`, which

1. starts a replay exchange (``python -m infra.replay_exchange``, its own process)
   with a seeded synthetic market of the days *before*
   the live replay (``bootstrap_days``), REST horizon ``all``;
2. backfills its 1m klines through ccxt into the profile's offline store
   (``python -m training.backfill exchange ...``);
3. quick-trains every model on them (``python -m training.train`` lightgbm,
   lstm, gnn with 2 folds and tiny networks, then the ensemble, weighted by the
   members' out-of-sample AUC so that a member without an edge does not dilute it) and the tactical
   policy (``python -m training.rl train tactical --quick`` and ``export``);

each step a subprocess exactly as a user would type it.  A registry that already
holds an ensemble is left alone, so later runs skip all of it.

Each step shows a progress bar on a terminal (tqdm on stderr: ``bootstrap 3/8: train
lstm``, filled against the step's usual duration, :data:`EXPECTED_S`, and completed when
the step ends); without a terminal (a pipe, a log file) it prints a line when a step
starts and one when it is done.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from flows.exchange.replay_process import control, replay_process
from flows.operators.model_bank import has_models
from flows.settings import Settings

LIVE_START = datetime(2024, 1, 1, tzinfo=timezone.utc)  # the replay's synthetic market starts here
QUICK = {"lightgbm": ["--folds", "2"],
         "lstm": ["--folds", "2", "--epochs", "2", "--hidden", "8", "--bptt", "8", "--burn-in", "8", "--segment", "64"],
         "gnn": ["--folds", "2", "--epochs", "2", "--hidden", "8", "--graph-window", "30"],
         "ensemble": ["--method", "performance"]}


# Seconds a step usually takes on 2 cores (what a bar fills against; a slower step waits at 99 %).
EXPECTED_S = {"backfill": 5.0, "lightgbm": 15.0, "lstm": 20.0, "gnn": 20.0, "ensemble": 5.0, "policy": 15.0,
              "export": 8.0}  # README's first run: 3, 12, 14, 15, 2, 10, 5 s
STEPS = 7  # backfill, three families, the ensemble, the policy and its export


def _run(cmd: list[str], env: dict[str, str], what: str, step: int, expected_s: float,
         progress: bool | None = None, out: TextIO | None = None) -> None:
    """Run one bootstrap step as a subprocess with its progress bar (``progress`` None: a bar on a terminal only)."""
    out = out if out is not None else sys.stderr
    bar_on = out.isatty() if progress is None else progress
    t0 = time.monotonic()
    desc = f"bootstrap {step}/{STEPS}: {what}"
    if not bar_on:
        print(f"bootstrap: {what} ...", flush=True)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with tqdm(total=expected_s, desc=desc, file=out, disable=not bar_on, leave=True, mininterval=0.2,
              bar_format="{desc}: {percentage:3.0f}%|{bar:20}| {elapsed}{postfix}") as bar:
        try:
            while True:
                try:
                    stdout, stderr = proc.communicate(timeout=0.25)
                    break
                except subprocess.TimeoutExpired:
                    bar.update(min(time.monotonic() - t0, 0.99 * expected_s) - bar.n)
        except BaseException:  # Ctrl-C, SIGTERM (flows.lifecycle): no step left running, as subprocess.run
            proc.kill()
            proc.wait()
            raise
        took = time.monotonic() - t0
        if proc.returncode == 0:
            bar.update(expected_s - bar.n)
            bar.set_postfix_str(f"done in {took:.0f} s", refresh=True)
    if proc.returncode != 0:
        tail = (stderr or stdout).strip().splitlines()[-15:]
        raise SystemExit(f"bootstrap step failed ({' '.join(cmd[2:])}):\n" + "\n".join(tail))
    if not bar_on:
        print(f"bootstrap: {what} done in {took:.0f} s", flush=True)


def history_window(days: float, live_start: datetime = LIVE_START) -> tuple[datetime, datetime]:
    """Return the [start, end) of the bootstrap history: the ``days`` before the live replay."""
    return live_start - timedelta(days=days), live_start


def bootstrap(settings: Settings, env: dict[str, str], days: float = 2.0, seed: int = 11) -> bool:
    """Fill a registry without a 1m ensemble (history, models, policy); return whether anything was done.

    The main job trades the 1m bars of its replay; set ``scoring.timeframe`` and train by CLI for others.
    """
    root = settings.registry_root()
    if has_models(root, "1m"):
        print(f"bootstrap: registry {root} holds models, skipping training", flush=True)
        return False
    start, end = history_window(days)
    full = {**os.environ, **env}
    py = sys.executable
    symbols = list(settings.symbols)
    iso = [start.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ")]
    # The trade rate is the live replay's (the replay exchange's default): trade_count and the
    # volume features are then distributed as the models will see them live.
    replay = ["--synthetic", ",".join(settings.symbols), "--seed", str(seed), "--speed", "max",
              "--rest-horizon", "all", "--start", iso[0], "--end", iso[1]]
    with replay_process(replay, env=full) as ex:
        # Move the replay clock to the end so that every bar of the window counts as closed.
        control(ex.http_url, "seek", time=int(end.timestamp() * 1000))
        ex_env = {**full, "CRYPTOSTREAM_EXCHANGE__HTTP_URL": ex.http_url, "CRYPTOSTREAM_EXCHANGE__WS_URL": ex.ws_url}
        _run([py, "-m", "training.backfill", "exchange", "--symbols", *symbols, "--timeframe", "1m",
              "--start", iso[0], "--end", iso[1]], ex_env, f"backfill {days:g} days of 1m klines from the replay",
             1, EXPECTED_S["backfill"])
    window = ["--symbols", *symbols, "--timeframe", "1m", "--start", iso[0], "--end", iso[1],
              "--registry", str(root), "--seed", "7"]
    for k, fam in enumerate(("lightgbm", "lstm", "gnn"), start=2):
        _run([py, "-m", "training.train", fam, *window, *QUICK[fam]], full, f"train {fam}", k, EXPECTED_S[fam])
    _run([py, "-m", "training.train", "ensemble", "--registry", str(root), "--timeframe", "1m", *QUICK["ensemble"]],
         full, "train ensemble", 5, EXPECTED_S["ensemble"])
    rl = ["--registry", str(root)]
    _run([py, "-m", "training.rl", "train", "tactical", "--quick", *rl], full, "train tactical policy", 6,
         EXPECTED_S["policy"])
    _run([py, "-m", "training.rl", "export", "tactical", *rl], full, "export tactical policy", 7,
         EXPECTED_S["export"])
    return True


def registry_summary(root: Path) -> str:
    """Return ``family=version`` of every family in the registry."""
    if not root.is_dir():
        return "(empty)"
    parts = [f"{d.name}={(d / 'latest').read_text().strip()}" for d in sorted(root.iterdir())
             if (d / "latest").is_file()]
    return " ".join(parts) or "(empty)"
