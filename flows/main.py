"""The main job: run the live flow against the replay exchange, no servers needed.

    python -m flows.main                      # synthetic market, 90 s at 120x
    python -m flows.main --data ../shared/data/binance-ws-2024-08-08 --speed 10
    python -m flows.main --duration 0         # until Ctrl-C

It registers the Feast repository of the active profile (``feast apply``),
bootstraps an empty model registry (``flows/bootstrap.py``: history from a replay
exchange, quick training of every model and the tactical policy), starts a replay exchange on a free loopback port unless ``exchange.ws_url`` is
set (then it streams from that exchange), runs ``python -m bytewax.run
flows.live`` exactly as a user would (paper mode by default; its status line per bar
close goes to ``<data_dir>/trading.log``, and to the console with ``--log-level INFO``), and
ends with a summary: bars, decisions, the last portfolio status, dead letters, and the
latest features read back from the Feast online store.

The replay exchange and the flow run in process groups of their own
(:mod:`flows.lifecycle`): Ctrl-C or SIGTERM is forwarded to the flow, which stops cleanly
(no new orders, sinks flushed, its summary), then both groups are ended; exit code 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from flows import feast_store
from flows.bootstrap import LIVE_START, bootstrap, registry_summary
from flows.cli import HelpFormatter
from flows.exchange.replay_process import replay_process, speed_arg
from flows.feature_catalog import BAR_FEATURES, view_name
from flows.go_live import check_go_live
from flows.lifecycle import (
    EXIT_FORCED,
    EXIT_OK,
    EXIT_USAGE,
    child_group_kwargs,
    end_group,
    summary_path,
)
from flows.monitoring.logging import log_file
from flows.settings import Settings, SettingsError, load_settings
from flows.stores import open_stores
from flows.timeframes import timeframe_ms

STOP_GRACE_S = 120.0  # how long a stopping flow may take to flush before it is killed


@contextlib.contextmanager
def exchange_for(settings: Settings) -> Iterator[dict[str, str]]:
    """Yield the exchange URL settings for the flow, starting a replay exchange process when none is set."""
    if settings.exchange.ws_url:
        yield {}
        return
    replay = settings.replay
    start = None if replay.data else synthetic_start(settings)
    source = (["--data", str(replay.data)] if start is None else
              ["--synthetic", ",".join(settings.symbols), "--start", f"{start - warmup_history(settings):%Y-%m-%dT%H:%M:%SZ}",
               "--stream-start", f"{start:%Y-%m-%dT%H:%M:%SZ}"])
    # One connection per symbol: start the replay clock once every symbol is subscribed.
    args = [*source, "--speed", speed_arg(replay.speed), "--seed", str(replay.seed),
            "--wait-for-streams", str(len(settings.symbols))]
    with replay_process(args, port=replay.port, own_group=True) as ex:
        market = f"synthetic market from {start:%Y-%m-%d %H:%M} UTC" if start else f"data {replay.data}"
        print(f"replay exchange: {ex.http_url} ({market}, "
              f"speed {replay.speed or 'max'})", flush=True)
        # No API key: gaps are filled from the public aggTrades, as for a user without one.
        yield {"CRYPTOSTREAM_EXCHANGE__HTTP_URL": ex.http_url, "CRYPTOSTREAM_EXCHANGE__WS_URL": ex.ws_url}


def warmup_history(settings: Settings) -> timedelta:
    """Return how much market the synthetic replay holds before its stream: the flow's warm-up klines.

    A fresh flow fetches ``exchange.warmup_klines`` klines per timeframe before its first trade
    (:mod:`flows.warmup`), as against Binance, so its first streamed bar already has converged
    features; the replay serves that history over REST (``--stream-start``).
    """
    longest = max(timeframe_ms(tf) for tf in settings.bars.timeframes)
    return timedelta(milliseconds=(settings.exchange.warmup_klines + 2) * longest)


def resume_start(stored: Iterable[Any], floor: datetime = LIVE_START) -> datetime:
    """Return where the synthetic market of a run starts: ``floor`` in a fresh data directory, else
    the minute after the latest stored time (bar open or ``portfolio_state`` time), so that a rerun
    continues after the last run and never writes a time twice.

    ``stored`` holds timestamps (``None``/``NaT`` for a table without rows).
    """
    known = [pd.Timestamp(t) for t in stored if t is not None and not pd.isna(t)]
    if not known:
        return floor
    last = max(t.tz_localize("UTC") if t.tzinfo is None else t for t in known)
    after = (last.floor("1min") + pd.Timedelta(minutes=1)).to_pydatetime()
    return max(after, floor)


def synthetic_start(settings: Settings) -> datetime:
    """Return :func:`resume_start` of the latest bar and ``portfolio_state`` row stored by earlier runs."""
    stores = open_stores(settings)
    runs = stores.monitor_reader().runs()
    bars = stores.history_reader().bars(settings.symbols, settings.bars.timeframes[0], pd.Timestamp(LIVE_START),
                                        pd.Timestamp("2200-01-01", tz="UTC"), ("symbol", "ts"))
    return resume_start([runs["last"].max() if len(runs) else None,
                         pd.to_datetime(bars["ts"], utc=True).max() if len(bars) else None])


def run_flow(settings: Settings, env: dict[str, str], workers: int) -> Counter[str]:
    """Run ``python -m bytewax.run flows.live`` with these settings; return counts of bars per symbol.

    The flow runs in a process group of its own; a SIGINT or SIGTERM to this process is
    forwarded to it, so it stops cleanly (no new orders, sinks flushed, its summary printed),
    and whatever is left in its group is ended after it.  The counts come from the summary
    the flow writes at exit (:func:`flows.lifecycle.write_summary`): ``counts["status"]``
    counts bar closes decided, the last status line is kept under the key
    ``"last status: <text>"`` and what stopped the flow under ``"stopped by: <what>"``.
    """
    cmd = [sys.executable, "-m", "bytewax.run", "flows.live"] + (["-w", str(workers)] if workers > 1 else [])
    full_env = {**os.environ, **feast_store.feast_environment(settings), **env}
    done = summary_path(settings.data_dir)
    done.unlink(missing_ok=True)
    proc = subprocess.Popen(cmd, env=full_env, **child_group_kwargs())
    stops: list[float] = []

    def forward(signum: int, frame: object) -> None:
        stops.append(time.monotonic())
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)  # the flow stops cleanly; a second signal forces it

    handlers = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1.0)
            if stops and time.monotonic() - stops[0] > STOP_GRACE_S and proc.poll() is None:
                print(f"flows.live still running {STOP_GRACE_S:.0f} s after the stop: killing it", flush=True)
                end_group(proc, signal.SIGKILL)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        end_group(proc)  # the flow has ended (or this process is failing): nothing of its group stays
    if stops and proc.returncode == EXIT_FORCED:
        raise SystemExit(EXIT_FORCED)  # a second signal forced the stop: the flow said so
    if proc.returncode != 0:
        raise SystemExit(f"flows.live exited with {proc.returncode}")
    doc = json.loads(done.read_text()) if done.is_file() else {}
    counts: Counter[str] = Counter(doc.get("bars", {}))
    counts["status"] = int(doc.get("closes", 0))
    if doc.get("last_status"):
        counts["last status: " + doc["last_status"]] = 1
    counts["stopped by: " + str(doc.get("stopped_by", "unknown"))] = 1
    if doc.get("run"):
        counts["run: " + str(doc["run"])] = 1  # the run id the flow stamped on its rows
    return counts


ONLINE_SHOWN = ("ret_1", "rsi_14", "rv_15")


def online_features(settings: Settings) -> dict[str, Any]:
    """Read the summary's features and their event times (s) from the Feast online store."""
    tf = settings.bars.timeframes[0]
    refs = [f"{view_name('bar_features', tf)}:{f}" for f in ONLINE_SHOWN]
    online = feast_store.open_store(settings).get_online_features(
        features=refs, entity_rows=[{"symbol": s} for s in settings.symbols])
    return online.to_dict(include_event_timestamps=True)


def _online_line(rows: dict[str, Any], i: int, before: dict[str, Any] | None) -> str:
    """Describe one symbol's online features; say so when this run did not write them (values of an earlier run)."""
    vals = {k: rows[k][i] for k in ONLINE_SHOWN}
    if vals["rsi_14"] is None:
        return "not warm yet (features need their warm-up bars)"
    shown = " ".join(f"{k}={v:.5g}" for k, v in vals.items() if v is not None)
    ts = rows.get("rsi_14__ts", [0] * (i + 1))[i]
    if before is not None and before.get("rsi_14__ts", [None] * (i + 1))[i] == ts and ts:
        when = pd.Timestamp(ts, unit="s", tz="UTC")
        return f"{shown} (stale: bar of {when:%Y-%m-%d %H:%M} UTC from an earlier run; this run wrote none)"
    return shown


def trading_lines(settings: Settings, run: str) -> list[str]:
    """Describe what run ``run`` traded, from the stored decision tables: P&L, fees, fills, sizes, halts."""
    mon = open_stores(settings).monitor_reader()
    state = mon.latest_state(run)
    if state is None:
        return ["  trading: no portfolio rows stored for this run (the models need 61 bars of features first)"]
    fills, curve, risk = mon.symbol_flows(run), mon.equity(run, 100_000), mon.risk_counts(run)
    equity = float(state["equity"])
    pnl = float(state["realized_pnl"]) + float(state["unrealized_pnl"])
    traded = float((fills["bought"] + fills["sold"]).sum()) if len(fills) else 0.0
    n = int(fills["fills"].sum()) if len(fills) else 0
    peak = float(curve["gross_exposure"].max()) if len(curve) else 0.0
    halts = int(risk.loc[risk["rule"].str.endswith(":halt"), "events"].sum()) if len(risk) else 0
    cut = int(risk.loc[~risk["rule"].str.contains(":"), "events"].sum()) if len(risk) else 0
    fees = float(fills["fees"].sum()) if n else 0.0
    drawdown = float(curve["drawdown"].max()) if len(curve) else 0.0
    lines = [f"  trading: P&L {pnl:+,.2f} (fees {fees:,.2f} included), equity {equity:,.2f}, fills {n}, "
             f"traded {traded:,.0f} (mean fill {traded / max(n, 1):,.0f}), largest gross exposure {peak:,.0f} "
             f"({peak / max(equity, 1e-9):.1%} of equity), max drawdown {drawdown:.3%}, halts {halts}, "
             f"orders cut by a risk rule {cut}"]
    held = state.get("positions") or {}
    for row in fills.itertuples():
        lines.append(f"    {row.symbol:<10} fills {row.fills}, bought {row.bought:,.0f}, sold {row.sold:,.0f}, "
                     f"fees {row.fees:,.2f}, holding {float(held.get(row.symbol, 0.0)):.6g}")
    return lines


def summary(settings: Settings, counts: Counter[str], took: float, before: dict[str, Any] | None = None) -> None:
    """Print what the run produced and read the latest features back from Feast."""
    stopped = next((k[len("stopped by: "):] for k in counts if k.startswith("stopped by: ")), "unknown")
    run = next((k[len("run: "):] for k in counts if k.startswith("run: ")), "unknown (the flow wrote no summary)")
    print(f"\nsummary ({took:.0f} s, profile {settings.profile}, run {run}, stopped by {stopped}):")
    for symbol in settings.symbols:
        print(f"  {symbol:<10} closed bars: {counts.get(symbol, 0)}")
    print(f"  models: {registry_summary(settings.registry_root())}")
    print(f"  bars decided (status lines, mode {settings.mode}): {counts.get('status', 0)}")
    last = next((k[len("last status: "):] for k in counts if k.startswith("last status: ")), None)
    print(f"  last status: {last or 'none (features still warming up: the models need 61 bars)'}")
    if not run.startswith("unknown"):
        for line in trading_lines(settings, run):
            print(line)
    if settings.profile == "local":
        print(f"  decision tables (orders, fills, portfolio_state; this run's run_id {run}): "
              f"{settings.data_dir / 'decisions'}")
    dead = sum(1 for f in (settings.data_dir / "dead_letters").glob("*.jsonl") for _ in f.open())
    print(f"  dead letters (all runs, {settings.data_dir / 'dead_letters'}): {dead}")
    tf = settings.bars.timeframes[0]
    rows = online_features(settings)
    for i, symbol in enumerate(rows["symbol"]):
        print(f"  Feast online {view_name('bar_features', tf)}[{symbol}]: {_online_line(rows, i, before)}")
    print(open_stores(settings).describe(len(BAR_FEATURES)))
    dash = settings.dashboard
    print(f"  dashboard: `cryptostream dashboard` (python -m flows.monitoring.dashboard), then open "
          f"http://{dash.address}:{dash.port}")
    print(f"  log: {log_file(settings.log, settings.data_dir)} (CRYPTOSTREAM_LOG__LEVEL=INFO shows a status line "
          "per bar close here, DEBUG every bar)")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the job."""
    p = argparse.ArgumentParser(prog="python -m flows.main", description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter)
    p.add_argument("--config", help="settings YAML (else $CRYPTOSTREAM_CONFIG)")
    p.add_argument("--duration", type=float, help="seconds to run (default 90; 0 = until Ctrl-C)")
    p.add_argument("--data", type=Path, help="replay these recorded messages or candle files")
    p.add_argument("--speed", type=float, help="replay speed, times real time (0 = as fast as possible)")
    p.add_argument("--symbols", help="comma-separated ccxt symbols")
    p.add_argument("--workers", type=int, default=1, help="Bytewax workers (-w)")
    p.add_argument("--mode", choices=("paper", "live"), help="paper (default) or live (needs the live settings)")
    p.add_argument("--no-bootstrap", action="store_true", help="do not train models into an empty registry")
    p.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                   help="the flow's console level (log.level): INFO = a status line per bar close, DEBUG = also "
                   "every bar (default: the settings', WARNING)")
    a = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # until the flow runs, SIGTERM ends the job as Ctrl-C does
    try:
        return _run(a)
    except KeyboardInterrupt:
        print(f"interrupted before the flow ran (exit {EXIT_FORCED}); its child processes were ended",
              file=sys.stderr, flush=True)
        return EXIT_FORCED


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _run(a: argparse.Namespace) -> int:
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
        return EXIT_USAGE
    if not a.no_bootstrap:
        bootstrap(settings, {**feast_store.feast_environment(settings)})
    try:
        check_go_live(settings)  # mode=live: the deployed versions must carry a passing verdict (flows.go_live)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    before = online_features(settings)  # to tell this run's online features from an earlier run's
    t0 = time.monotonic()
    with exchange_for(settings) as env:
        env = {**env, "CRYPTOSTREAM_DURATION_S": str(duration)}
        if a.mode:
            env["CRYPTOSTREAM_MODE"] = a.mode
        if a.symbols:
            env["CRYPTOSTREAM_SYMBOLS"] = a.symbols
        if a.config:
            env["CRYPTOSTREAM_CONFIG"] = str(Path(a.config).resolve())
        if a.log_level:
            env["CRYPTOSTREAM_LOG__LEVEL"] = a.log_level
        counts = run_flow(settings, env, a.workers)
    summary(settings, counts, time.monotonic() - t0, before)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
