"""The main job: run the live flow against the replay exchange, no servers needed.

    python -m flows.main                      # synthetic market, 90 s at 120x
    python -m flows.main --data ../shared/data/binance-ws-2024-08-08 --speed 10
    python -m flows.main --duration 0         # until Ctrl-C

It registers the Feast repository of the active profile (``feast apply``),
bootstraps an empty model registry (``flows/bootstrap.py``: history from a replay
exchange, quick training of every model and the tactical policy), starts a replay exchange on a free loopback port unless ``exchange.ws_url`` is
set (then it streams from that exchange), runs ``python -m bytewax.run
flows.live`` exactly as a user would (paper mode by default), echoes one status line
per bar (equity, positions, last signal; each closed bar while features warm up), and
ends with a summary: bars, decisions, the last portfolio status, dead letters, and the
latest features read back from the Feast online store.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from flows import feast_store
from flows.bootstrap import bootstrap, registry_summary
from flows.exchange.replay_process import replay_process, speed_arg
from flows.feature_catalog import BAR_FEATURES, view_name
from flows.go_live import check_go_live
from flows.settings import Settings, SettingsError, load_settings
from flows.stores import open_stores


@contextlib.contextmanager
def exchange_for(settings: Settings) -> Iterator[dict[str, str]]:
    """Yield the exchange URL settings for the flow, starting a replay exchange process when none is set."""
    if settings.exchange.ws_url:
        yield {}
        return
    replay = settings.replay
    source = ["--data", str(replay.data)] if replay.data else ["--synthetic", ",".join(settings.symbols)]
    # One connection per symbol: start the replay clock once every symbol is subscribed.
    args = [*source, "--speed", speed_arg(replay.speed), "--seed", str(replay.seed),
            "--wait-for-streams", str(len(settings.symbols))]
    with replay_process(args, port=replay.port) as ex:
        print(f"replay exchange: {ex.http_url} ({'data ' + str(replay.data) if replay.data else 'synthetic market'}, "
              f"speed {replay.speed or 'max'})", flush=True)
        # No API key: gaps are filled from the public aggTrades, as for a user without one.
        yield {"CRYPTOSTREAM_EXCHANGE__HTTP_URL": ex.http_url, "CRYPTOSTREAM_EXCHANGE__WS_URL": ex.ws_url}


def run_flow(settings: Settings, env: dict[str, str], workers: int) -> Counter[str]:
    """Run ``python -m bytewax.run flows.live`` with these settings; return counts of bars per symbol.

    ``counts["status"]`` counts status lines; the last one is kept under the key
    ``"last status: <text>"``.
    """
    cmd = [sys.executable, "-m", "bytewax.run", "flows.live"] + (["-w", str(workers)] if workers > 1 else [])
    full_env = {**os.environ, **feast_store.feast_environment(settings), **env}
    counts: Counter[str] = Counter()
    with subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                print(line, end="", flush=True)
                if line.startswith("bar "):
                    counts[line.split()[2]] += 1
                elif line.startswith("status "):
                    counts["status"] += 1
                    last = line[len("status "):].strip()
                    for key in [k for k in counts if k.startswith("last status: ")]:
                        del counts[key]
                    counts["last status: " + last] = 1
        except KeyboardInterrupt:
            proc.terminate()
        if proc.wait() != 0:
            raise SystemExit(f"flows.live exited with {proc.returncode}")
    return counts


def summary(settings: Settings, counts: Counter[str], took: float) -> None:
    """Print what the run produced and read the latest features back from Feast."""
    print(f"\nsummary ({took:.0f} s, profile {settings.profile}, run {settings.run_id()}):")
    for symbol in settings.symbols:
        print(f"  {symbol:<10} closed bars printed: {counts.get(symbol, 0)}")
    print(f"  models: {registry_summary(settings.registry_root())}")
    print(f"  bars decided (status lines, mode {settings.mode}): {counts.get('status', 0)}")
    last = next((k[len("last status: "):] for k in counts if k.startswith("last status: ")), None)
    print(f"  last status: {last or 'none (features still warming up: the models need 61 bars)'}")
    dead = sum(1 for f in (settings.data_dir / "dead_letters").glob("*.jsonl") for _ in f.open())
    print(f"  dead letters (all runs, {settings.data_dir / 'dead_letters'}): {dead}")
    store = feast_store.open_store(settings)
    tf = settings.bars.timeframes[0]
    refs = [f"{view_name('bar_features', tf)}:{f}" for f in ("ret_1", "rsi_14", "rv_15")]
    online = store.get_online_features(features=refs, entity_rows=[{"symbol": s} for s in settings.symbols])
    rows = online.to_dict()
    for i, symbol in enumerate(rows["symbol"]):
        vals = {k: rows[k][i] for k in ("ret_1", "rsi_14", "rv_15")}
        shown = "not warm yet (features need 61 bars)" if vals["rsi_14"] is None else \
            " ".join(f"{k}={v:.5g}" for k, v in vals.items())
        print(f"  Feast online {view_name('bar_features', tf)}[{symbol}]: {shown}")
    print(open_stores(settings).describe(len(BAR_FEATURES)))


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the job."""
    p = argparse.ArgumentParser(prog="python -m flows.main", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="settings YAML (else $CRYPTOSTREAM_CONFIG)")
    p.add_argument("--duration", type=float, help="seconds to run (default 90; 0 = until Ctrl-C)")
    p.add_argument("--data", type=Path, help="replay these recorded messages or candle files")
    p.add_argument("--speed", type=float, help="replay speed, times real time (0 = as fast as possible)")
    p.add_argument("--symbols", help="comma-separated ccxt symbols")
    p.add_argument("--workers", type=int, default=1, help="Bytewax workers (-w)")
    p.add_argument("--mode", choices=("paper", "live"), help="paper (default) or live (needs the live settings)")
    p.add_argument("--no-bootstrap", action="store_true", help="do not train models into an empty registry")
    a = p.parse_args(argv)
    try:
        base = load_settings(a.config)
        replay = base.replay.model_dump()
        replay.update({k: v for k, v in (("data", a.data), ("speed", a.speed)) if v is not None})
        if "CRYPTOSTREAM_REPLAY__SPEED" not in os.environ and a.speed is None and not (a.config or base.replay.data):
            replay["speed"] = 120.0
        duration = a.duration if a.duration is not None else (base.duration_s or 90.0)
        settings = load_settings(a.config, symbols=a.symbols, duration_s=duration, replay=replay, mode=a.mode)
        settings.require_servers()
        settings.require_live_guard()
        print(f"feast apply ({settings.profile} profile) ...", flush=True)
        feast_store.apply(settings)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not a.no_bootstrap:
        bootstrap(settings, {**feast_store.feast_environment(settings)})
    try:
        check_go_live(settings)  # mode=live: the deployed versions must carry a passing verdict (flows.go_live)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    with exchange_for(settings) as env:
        env = {**env, "CRYPTOSTREAM_DURATION_S": str(duration)}
        if a.mode:
            env["CRYPTOSTREAM_MODE"] = a.mode
        if a.symbols:
            env["CRYPTOSTREAM_SYMBOLS"] = a.symbols
        if a.config:
            env["CRYPTOSTREAM_CONFIG"] = str(Path(a.config).resolve())
        counts = run_flow(settings, env, a.workers)
    summary(settings, counts, time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
