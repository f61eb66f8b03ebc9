"""The live flow as a Bytewax cluster on namespace hosts, on the ``timescale`` profile (issue 21).

``infra/netns/hosts up 2 --services`` makes two hosts (10.210.0.11 and .12 on a bridge) and makes
the host's TimescaleDB and Redis (``infra/up``) reachable on the bridge address 10.210.0.1; the
replay exchange listens there too.  The flow processes inside the namespaces write bars,
features and cross-asset features to a scratch TimescaleDB database and the Feast online store
to a Redis db of their own, both reached only through 10.210.0.1.  Reference: one process on the
host, same profile, its own scratch database and Redis db.  Needs root for ``ip netns``
(CI runs as root).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

import pandas as pd
import pytest
import redis
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from flows import feast_store
from flows.settings import load_settings
from infra.replay_exchange.server import running_replay
from tests.kit.chaos import (
    START,
    SYMBOLS,
    candle_files,
    compare,
    flow_env,
    infra_settings,
    profile_env,
    scratch_database,
    timescale_tables,
)
from tests.kit.recovery import kill_one_of_cluster_and_finish, run_flow
from tests.kit.replay import with_history
from tests.kit.repo import PROJECT_ROOT, copy_feature_repo

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("socat") is None,
                                reason="network namespaces need root, iproute2 (ip) and socat")

HOSTS = PROJECT_ROOT / "infra" / "netns" / "hosts"
BRIDGE = "10.210.0.1"
IPS, NETNS = ["10.210.0.11", "10.210.0.12"], ["cs21-h1", "cs21-h2"]
END = START + timedelta(hours=6)  # 71 5m bars a symbol (features from the first: the replay's klines warm up)
REDIS_DBS = {"host": 12, "cluster": 13, "recovery": 14}  # apart from the db 0 of everyday runs


class Reference(NamedTuple):
    """What the single process on the host left."""

    tables: dict[str, pd.DataFrame]
    online: dict[bytes, dict[bytes, bytes]]
    applied: Path


def _servers(dsn: str, redis_url: str, db: int, host: str) -> dict[str, str]:
    """Return the profile's variables for a database and an emptied Redis db, addressed through ``host``."""
    port = urlparse(redis_url).port or 6379
    redis.Redis(host="127.0.0.1", port=port, db=db).flushdb()
    url = f"redis://{host}:{port}/{db}"
    return {**profile_env("timescale", make_conninfo(dsn, host=host), url), "CRYPTOSTREAM_FEAST_ONLINE": "redis"}


def _online(url: str) -> dict[bytes, dict[bytes, bytes]]:
    """Return every hash of the Feast online store in a Redis db."""
    r = redis.Redis.from_url(url)
    return {k: r.hgetall(k) for k in r.scan_iter()}


def _assert_same(dsn: str, want: dict[str, pd.DataFrame]) -> None:
    got = timescale_tables(dsn)
    out = compare(got, want)
    assert out.ok, out
    assert {t: len(g) for t, g in got.items()} == {t: len(w) for t, w in want.items()}


@pytest.fixture(scope="module")
def servers() -> dict[str, str]:
    return infra_settings()


@pytest.fixture(scope="module")
def hosts(servers) -> Iterator[None]:
    """The two namespace hosts, with the servers' loopback ports reachable on the bridge address."""
    ports = {"TIMESCALE_PORT": str(conninfo_to_dict(servers["TIMESCALE_DSN"]).get("port", 5432)),
             "REDIS_PORT": str(urlparse(servers["REDIS_URL"]).port or 6379)}
    subprocess.run([str(HOSTS), "up", "2", "--services"], check=True, timeout=60,
                   env={**os.environ, **ports, "PYTHON": sys.executable})
    try:
        yield
    finally:
        subprocess.run([str(HOSTS), "down"], check=False, timeout=60, env={**os.environ, "PYTHON": sys.executable})


@pytest.fixture(scope="module")
def reference(servers, shared_data, tmp_path_factory) -> Iterator[Reference]:
    """One process on the host (loopback servers), timescale profile: its tables and online store, and its
    data directory as applied (``feast apply``, ~40 s under load, is run once and copied for the cluster)."""
    tmp = tmp_path_factory.mktemp("host")
    env_servers = _servers(servers["TIMESCALE_DSN"], servers["REDIS_URL"], REDIS_DBS["host"], "127.0.0.1")
    with scratch_database(servers["TIMESCALE_DSN"]) as dsn:
        with running_replay(candle_files(shared_data), speed=0, end=END, seed=5, **with_history(START, "5m")) as ex:
            ex.engine.wait_for_streams = len(SYMBOLS)
            env = flow_env(tmp / "var", copy_feature_repo(tmp), ex, {**env_servers, "TIMESCALE_DSN": dsn})
            feast_store.apply(load_settings(env=env))
            applied = shutil.copytree(tmp / "var", tmp / "applied")
            proc = run_flow(env)
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()[-3000:]
        tables = timescale_tables(dsn)
    assert len(tables["bars"]) == len(SYMBOLS) * (6 * 12 - 1)
    assert len(tables["bar_features"]) == len(tables["cross_asset_features"]) == len(tables["bars"])
    online = _online(env_servers["REDIS_URL"])
    assert len(online) >= len(SYMBOLS), "the Feast online store in Redis holds no entity"
    yield Reference(tables, online, applied)


def _cluster_env(tmp: Path, ex, servers: dict[str, str], dsn: str, db: int, applied: Path) -> dict[str, str]:
    """The environment of a cluster process: the scratch database and Redis db through the bridge, and a
    copy of the applied data directory (the Feast registry is a file in it)."""
    shutil.copytree(applied, tmp / "var")
    return flow_env(tmp / "var", copy_feature_repo(tmp), ex, _servers(dsn, servers["REDIS_URL"], db, BRIDGE))


def test_cluster_on_namespace_hosts_stores_the_rows_of_one_process(servers, hosts, reference, shared_data,
                                                                   tmp_path) -> None:
    with scratch_database(servers["TIMESCALE_DSN"]) as dsn:
        with running_replay(candle_files(shared_data), speed=0, end=END, seed=5, host=BRIDGE,
                            **with_history(START, "5m")) as ex:
            ex.engine.wait_for_streams = len(SYMBOLS)
            env = _cluster_env(tmp_path, ex, servers, dsn, REDIS_DBS["cluster"], reference.applied)
            addresses = ";".join(f"{ip}:{23641 + i}" for i, ip in enumerate(IPS))
            procs = [run_flow(env, "-a", addresses, "-i", str(i), prefix=("ip", "netns", "exec", ns))
                     for i, ns in enumerate(NETNS)]
            for p in procs:
                _, err = p.communicate(timeout=120)
                assert p.returncode == 0, err.decode()[-3000:]
        _assert_same(dsn, reference.tables)
    assert _online(env["REDIS_URL"].replace(BRIDGE, "127.0.0.1")) == reference.online


def test_cluster_process_killed_mid_run_on_timescale_recovers_to_the_same_rows(servers, hosts, reference,
                                                                                shared_data, tmp_path) -> None:
    """Process 1 is SIGKILLed at half the replay, the other stopped, the cluster restarted from its
    recovery snapshots: the hypertables hold the single process's rows, none lost or twice."""
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True)
    with scratch_database(servers["TIMESCALE_DSN"]) as dsn:
        with running_replay(candle_files(shared_data), speed=3600, end=END, seed=5, host=BRIDGE,
                            **with_history(START, "5m")) as ex:  # ~6 s of stream
            ex.engine.wait_for_streams = len(SYMBOLS)
            env = _cluster_env(tmp_path, ex, servers, dsn, REDIS_DBS["recovery"], reference.applied)
            killed = kill_one_of_cluster_and_finish(ex, env, recovery, IPS, NETNS, share=0.5)
        assert killed == -signal.SIGKILL
        _assert_same(dsn, reference.tables)
    assert _online(env["REDIS_URL"].replace(BRIDGE, "127.0.0.1")) == reference.online
