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
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from flows.exchange.replay_process import control, replay_process
from flows.operators.model_bank import has_models
from flows.settings import Settings

LIVE_START = datetime(2024, 1, 1, tzinfo=timezone.utc)  # the replay's synthetic market starts here
QUICK = {"lightgbm": ["--folds", "2"],
         "lstm": ["--folds", "2", "--epochs", "2", "--hidden", "8", "--bptt", "8", "--burn-in", "8", "--segment", "64"],
         "gnn": ["--folds", "2", "--epochs", "2", "--hidden", "8", "--graph-window", "30"],
         "ensemble": ["--method", "performance"]}


def _run(cmd: list[str], env: dict[str, str], what: str) -> None:
    t0 = time.monotonic()
    print(f"bootstrap: {what} ...", flush=True)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
        raise SystemExit(f"bootstrap step failed ({' '.join(cmd[2:])}):\n" + "\n".join(tail))
    print(f"bootstrap: {what} done in {time.monotonic() - t0:.0f} s", flush=True)


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
              "--start", iso[0], "--end", iso[1]], ex_env, f"backfill {days:g} days of 1m klines from the replay")
    window = ["--symbols", *symbols, "--timeframe", "1m", "--start", iso[0], "--end", iso[1],
              "--registry", str(root), "--seed", "7"]
    for fam in ("lightgbm", "lstm", "gnn"):
        _run([py, "-m", "training.train", fam, *window, *QUICK[fam]], full, f"train {fam}")
    _run([py, "-m", "training.train", "ensemble", "--registry", str(root), "--timeframe", "1m", *QUICK["ensemble"]],
         full,
         "train ensemble")
    rl = ["--registry", str(root)]
    _run([py, "-m", "training.rl", "train", "tactical", "--quick", *rl], full, "train tactical policy")
    _run([py, "-m", "training.rl", "export", "tactical", *rl], full, "export tactical policy")
    return True


def registry_summary(root: Path) -> str:
    """Return ``family=version`` of every family in the registry."""
    if not root.is_dir():
        return "(empty)"
    parts = [f"{d.name}={(d / 'latest').read_text().strip()}" for d in sorted(root.iterdir())
             if (d / "latest").is_file()]
    return " ".join(parts) or "(empty)"
