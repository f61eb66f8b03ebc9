"""Ctrl-C and SIGTERM to ``flows.main`` and to ``python -m bytewax.run flows.live``: a clean stop.

Real signals to real processes: each run must exit 0, print its summary, have written
what it counted (the sinks flushed), take its final recovery snapshot, and leave no
process behind (its children and their process groups are gone).  Before the fix,
SIGTERM to the main job left ``bytewax.run flows.live`` running re-parented to PID 1,
and Ctrl-C printed ``flows.live exited with -15`` and exited 1; ``flows.live`` itself
died on SIGTERM without flushing or a summary.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from flows import feast_store
from flows.settings import load_settings
from infra.replay_exchange.server import running_replay
from tests.kit.processes import live_in_group, still_running
from tests.kit.repo import PROJECT_ROOT, copy_feature_repo

SYMBOLS = ("BTC/USDT", "ETH/USDT")
SECRETS = {"CRYPTOSTREAM_EXCHANGE__API_KEY": "replay-key-5f1d2c3b4a",  # the replay takes any key
           "CRYPTOSTREAM_EXCHANGE__API_SECRET": "api-secret-9e8d7c6b5a",
           "TIMESCALE_DSN": "postgresql://trader:pg-pw-1a2b3c4d@127.0.0.1:1/none",
           "REDIS_URL": "redis://:redis-pw-4d3c2b1a@127.0.0.1:1/0"}


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOSTREAM_")}
    return {**env, **SECRETS, "CRYPTOSTREAM_DATA_DIR": str(tmp / "var"),
            "CRYPTOSTREAM_FEAST_REPO": str(copy_feature_repo(tmp)), "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS),
            "CRYPTOSTREAM_LOG__FILE_LEVEL": "DEBUG"}


def _stored_bars(var: Path) -> pd.Series:
    files = sorted((var / "offline" / "bars_1m").glob("*.parquet"))
    frame = pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame({"symbol": []})
    return frame.groupby("symbol").size()


def _wait_for_bars(var: Path, proc: subprocess.Popen, n: int = 4, timeout: float = 240.0) -> None:
    """Wait until the flow has logged ``n`` closed bars of each symbol (trading.log at DEBUG)."""
    deadline = time.monotonic() + timeout
    log = var / "trading.log"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"exited {proc.returncode} before the signal: {proc.communicate()}")
        text = log.read_text() if log.is_file() else ""
        if all(text.count(f" 1m {s} ") >= n for s in SYMBOLS):
            return
        time.sleep(0.2)
    pytest.fail("no bars within the timeout")


def _assert_gone(procs: list[psutil.Process]) -> None:
    """Every process and every process group they led has ended."""
    alive = still_running(procs) + [q for p in procs for q in live_in_group(p.pid)]
    assert alive == [], f"left behind: {[(p.pid, p.cmdline()) for p in alive]}"


def _assert_flushed_and_secret_free(var: Path, out: str, sig: signal.Signals) -> dict:
    doc = json.loads((var / "flow_summary.json").read_text())
    assert doc["stopped_by"] == sig.name
    stored = _stored_bars(var)
    assert {s: int(stored.get(s, 0)) for s in SYMBOLS} == doc["bars"], "a counted bar did not reach the store"
    assert min(doc["bars"].values()) >= 4
    log = (var / "trading.log").read_text()
    for secret in (*SECRETS.values(), "pg-pw-1a2b3c4d", "redis-pw-4d3c2b1a"):
        assert secret not in log and secret not in out
    return doc


def test_sigterm_to_bytewax_run_flows_live_stops_it_cleanly(tmp_path: Path) -> None:
    """SIGTERM straight to the flow (SIGINT reaches it through the main job's test below)."""
    sig = signal.SIGTERM
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True, cwd=PROJECT_ROOT)
    env = _env(tmp_path)
    feast_store.apply(load_settings(env=env))
    with running_replay(None, synthetic=SYMBOLS, speed=300, seed=3, wait_for_streams=len(SYMBOLS)) as ex:
        env.update({"CRYPTOSTREAM_EXCHANGE__HTTP_URL": ex.http_url, "CRYPTOSTREAM_EXCHANGE__WS_URL": ex.ws_url})
        # One epoch per hour: the only snapshot this run takes is the final one, at the stop.
        cmd = [sys.executable, "-m", "bytewax.run", "flows.live", "-r", str(recovery), "-s", "3600", "-b", "0"]
        proc = subprocess.Popen(cmd, env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        try:
            _wait_for_bars(tmp_path / "var", proc)
            me = psutil.Process(proc.pid)
            procs = [me, *me.children(recursive=True)]
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-3000:]
    assert f"{sig.name}: stopping; no new orders" in err
    assert "flows.live summary" in out and f"stopped by {sig.name}" in out
    _assert_flushed_and_secret_free(tmp_path / "var", out + err, sig)
    with sqlite3.connect(recovery / "part-0.sqlite3") as db:
        steps = {r[0] for r in db.execute("SELECT DISTINCT step_id FROM snaps")}
    assert any("symbol_pipeline" in s for s in steps) and any("exchange_ws" in s for s in steps), steps
    _assert_gone(procs)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_main_job_stops_the_flow_and_the_exchange(tmp_path: Path, sig: signal.Signals) -> None:
    """SIGTERM to the main job's pid, or SIGINT to its process group as a Ctrl-C at the terminal sends it."""
    env = _env(tmp_path)
    for k in ("CRYPTOSTREAM_EXCHANGE__API_KEY", "CRYPTOSTREAM_EXCHANGE__API_SECRET"):
        env.pop(k)  # the main job sets the replay's key itself
    cmd = [sys.executable, "-m", "flows.main", "--no-bootstrap", "--duration", "0", "--speed", "300",
           "--symbols", ",".join(SYMBOLS)]
    proc = subprocess.Popen(cmd, env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _wait_for_bars(tmp_path / "var", proc)
        me = psutil.Process(proc.pid)
        procs = [me, *me.children(recursive=True)]
        assert any("flows.live" in " ".join(p.cmdline()) for p in procs)
        assert any("infra.replay_exchange" in " ".join(p.cmdline()) for p in procs)
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # the terminal's foreground group: the main job alone
        else:
            proc.send_signal(sig)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    assert "flows.live summary" in out and "\nsummary (" in out and f"stopped by {sig.name}" in out
    doc = _assert_flushed_and_secret_free(tmp_path / "var", out + err, sig)
    for s in SYMBOLS:
        assert f"{s:<10} closed bars: {doc['bars'][s]}" in out
    _assert_gone(procs)
