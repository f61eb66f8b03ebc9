"""Crash recovery and scale-out of `python -m bytewax.run flows.live`, as a user runs it.

A replay exchange (in this process) streams 5m candles of two symbols as trades.
Reference: one uninterrupted run.  Then: runs killed with SIGKILL at several
points and restarted from Bytewax's recovery snapshots (the source resumes after
the last trade id of the snapshot and fills the gap from REST); then the same
flow with 2 workers in one process and with 2 processes.  Every variant must
leave the same bars and features.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from flows import feast_store
from flows.operators.features import WARMUP
from flows.settings import load_settings
from flows.start_points import FOLDER
from infra.replay_exchange.server import running_replay
from tests.kit.recovery import kill_at_and_finish, kill_one_of_cluster_and_finish
from tests.kit.recovery import run_flow as _flow
from tests.kit.repo import copy_feature_repo

START = datetime(2024, 5, 1, tzinfo=timezone.utc)
END = datetime(2024, 5, 2, 6, tzinfo=timezone.utc)  # 30 h: 359 5m bars, past the features' 313-bar warm-up
SYMBOLS = ("BTC/USDT", "ETH/USDT")
TABLES = ("bars_5m", "bar_features_5m", "cross_asset_features_5m")


def _env(var: Path, repo: Path, ex) -> dict[str, str]:
    return {**os.environ, "CRYPTOSTREAM_DATA_DIR": str(var), "CRYPTOSTREAM_FEAST_REPO": str(repo),
            "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS), "CRYPTOSTREAM_BARS__TIMEFRAMES": "5m",
            "CRYPTOSTREAM_EXCHANGE__HTTP_URL": ex.http_url, "CRYPTOSTREAM_EXCHANGE__WS_URL": ex.ws_url,
            "CRYPTOSTREAM_EXCHANGE__API_KEY": "replay", "CRYPTOSTREAM_EXCHANGE__FILL_SINCE": START.isoformat(),
            "CRYPTOSTREAM_EXCHANGE__IDLE_STOP_S": "4"}


def _read(var: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for t in TABLES:
        files = sorted((var / "offline" / t).glob("*.parquet"))
        out[t] = pd.concat([pd.read_parquet(f) for f in files]).sort_values(["symbol", "ts"]).reset_index(drop=True)
    return out


def _recovery_dir(tmp_path: Path) -> Path:
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True)
    return recovery


def _assert_same(got: dict[str, pd.DataFrame], reference: dict[str, pd.DataFrame]) -> None:
    for t in TABLES:
        pd.testing.assert_frame_equal(got[t], reference[t], check_exact=True, obj=t)


def _replay(files: list[Path], speed: float, host: str = "127.0.0.1"):
    return running_replay(files, speed=speed, start=START, end=END, seed=5, host=host)


@pytest.fixture(scope="module")
def files(shared_data) -> list[Path]:
    return [shared_data / "binance-spot-5m-2024" / f"{s.replace('/', '_')}-5m.parquet" for s in SYMBOLS]


@pytest.fixture(scope="module")
def reference(files, tmp_path_factory) -> dict[str, pd.DataFrame]:
    tmp = tmp_path_factory.mktemp("reference")
    repo = copy_feature_repo(tmp)
    with _replay(files, speed=0) as ex:
        ex.engine.wait_for_streams = len(SYMBOLS)
        env = _env(tmp / "var", repo, ex)
        feast_store.apply(load_settings(env=env))
        proc = _flow(env)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-3000:]
    tables = _read(tmp / "var")
    assert len(tables["bars_5m"]) == 2 * (30 * 12 - 1)
    assert len(tables["bar_features_5m"]) == 2 * (30 * 12 - 1 - (WARMUP - 1))
    return tables


def test_sigkill_at_several_points_and_restart_gives_same_tables(files, reference, tmp_path) -> None:
    repo = copy_feature_repo(tmp_path)
    recovery = _recovery_dir(tmp_path)
    # ~2900 trades a symbol over ~30 s of wall time; each kill waits until the replay has
    # handed out a further quarter of its trades, so every kill lands mid-stream.
    with _replay(files, speed=3600) as ex:
        ex.engine.wait_for_streams = len(SYMBOLS)
        env = _env(tmp_path / "var", repo, ex)
        feast_store.apply(load_settings(env=env))
        kill_at_and_finish(ex, env, recovery, (0.25, 0.5, 0.75))
    got = _read(tmp_path / "var")
    _assert_same(got, reference)


def test_a_kill_before_the_first_snapshot_resumes_from_the_start_point(files, reference, tmp_path) -> None:
    """Issue 17, defect 7: at max replay speed the whole replay went out before the first snapshot; a SIGKILL
    then left no trade id to resume from, and the restart stored nothing (exit 0, no warning)."""
    repo = copy_feature_repo(tmp_path)
    recovery = _recovery_dir(tmp_path)
    with _replay(files, speed=0) as ex:
        ex.engine.wait_for_streams = len(SYMBOLS)
        env = _env(tmp_path / "var", repo, ex)
        del env["CRYPTOSTREAM_EXCHANGE__FILL_SINCE"]  # a live start: from the first trade the websocket sends
        feast_store.apply(load_settings(env=env))
        proc = _flow(env, "-r", str(recovery), "-s", "3600", "-b", "30")  # no snapshot for an hour
        total, deadline = len(ex.data.timeline), time.monotonic() + 120
        points = recovery / FOLDER
        # every trade handed out, and every symbol's first trade taken by the flow (its start point
        # recorded): a trade still in the socket when the kill lands was never the flow's to resume
        while (ex.engine.cursor < total or len(list(points.glob("*.json"))) < len(SYMBOLS)) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the flow ended before it could be killed: " + proc.stderr.read().decode()[-3000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert ex.engine.cursor == total, "the replay had not handed out every trade before the kill"
        # The restart writes to a data directory of its own: what the killed run stored does not count.
        env = {**env, "CRYPTOSTREAM_DATA_DIR": str(tmp_path / "restart")}
        feast_store.apply(load_settings(env=env))
        proc = _flow(env, "-r", str(recovery), "-s", "1", "-b", "30")
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-3000:]
    assert b"stored nothing" not in err and b"resuming from the recorded start point" in err, err.decode()[-3000:]
    assert len(list((recovery / FOLDER).glob("*.json"))) == len(SYMBOLS)
    got = _read(tmp_path / "restart")
    _assert_same(got, reference)


@pytest.mark.parametrize("layout", ["2 workers", "2 processes"])
def test_two_workers_and_two_processes_give_same_tables(files, reference, tmp_path, layout) -> None:
    repo = copy_feature_repo(tmp_path)
    with _replay(files, speed=0) as ex:
        ex.engine.wait_for_streams = len(SYMBOLS)
        env = _env(tmp_path / "var", repo, ex)
        feast_store.apply(load_settings(env=env))
        if layout == "2 workers":
            procs = [_flow(env, "-w", "2")]
        else:
            addresses = "localhost:23611;localhost:23612"
            procs = [_flow(env, "-a", addresses, "-i", str(i)) for i in (0, 1)]
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err.decode()[-3000:]
    got = _read(tmp_path / "var")
    _assert_same(got, reference)


HOSTS = Path(__file__).resolve().parents[2] / "infra" / "netns" / "hosts"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                    reason="network namespaces need root and iproute2 (ip)")
def test_cluster_on_namespace_hosts_recovers_a_process_killed_mid_run(files, reference, tmp_path) -> None:
    """Issue 21: two processes of one Bytewax cluster, each on its own namespace host
    (``infra/netns/hosts up 2``: 10.210.0.11 and .12), the replay exchange on the host side
    (10.210.0.1).  Process 1 is SIGKILLed mid-stream, the cluster is restarted from its recovery
    snapshots, and the tables equal the uninterrupted single process's."""
    repo = copy_feature_repo(tmp_path)
    recovery = _recovery_dir(tmp_path)
    subprocess.run([str(HOSTS), "up", "2"], check=True)
    try:
        with _replay(files, speed=7200, host="10.210.0.1") as ex:  # ~15 s of stream
            ex.engine.wait_for_streams = len(SYMBOLS)
            env = _env(tmp_path / "var", repo, ex)
            feast_store.apply(load_settings(env=env))
            killed = kill_one_of_cluster_and_finish(ex, env, recovery, ["10.210.0.11", "10.210.0.12"],
                                                    ["cs21-h1", "cs21-h2"], share=0.5)
    finally:
        subprocess.run([str(HOSTS), "down"], check=False)
    assert killed == -signal.SIGKILL
    got = _read(tmp_path / "var")
    _assert_same(got, reference)
