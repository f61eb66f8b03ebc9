"""infra/up and infra/down against the real services: reuse, settings, failures, state."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import redis

pytestmark = pytest.mark.integration

Run = Callable[..., subprocess.CompletedProcess[str]]
REQUIRED = ("TIMESCALE_DSN", "TIMESCALE_HOST", "TIMESCALE_PORT", "TIMESCALE_DB", "TIMESCALE_USER",
            "TIMESCALE_PASSWORD", "REDIS_URL", "FEAST_REDIS_CONNECTION")


def postmaster(dsn: str) -> tuple[str, object]:
    """Return the postmaster's pid (from postmaster.pid; superuser) and its start time."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT split_part(pg_read_file('postmaster.pid'), E'\\n', 1), "
                           "pg_postmaster_start_time()").fetchone()
    assert row is not None
    return str(row[0]), row[1]


def free_port() -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_settings_are_key_value_lines(infra_up_run: subprocess.CompletedProcess[str],
                                      infra_settings: dict[str, str]) -> None:
    assert all(k in infra_settings for k in REQUIRED), infra_settings.keys()
    assert infra_settings["TIMESCALE_DSN"].startswith("postgresql://")
    assert infra_settings["REDIS_URL"].startswith("redis")
    assert "infra:" not in infra_up_run.stdout  # progress goes to stderr only


def test_second_run_reuses_without_restart(infra_up_run: subprocess.CompletedProcess[str],
                                           timescale_dsn: str, infra_script: Run) -> None:
    before = postmaster(timescale_dsn)
    again = infra_script("up")
    assert again.returncode == 0, again.stderr
    assert again.stdout == infra_up_run.stdout
    assert "reusing" in again.stderr or "from TIMESCALE_DSN" in again.stderr
    assert "starting TimescaleDB" not in again.stderr
    assert postmaster(timescale_dsn) == before


def test_timescaledb_extension_present(timescale_dsn: str) -> None:
    with psycopg.connect(timescale_dsn) as conn:
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        applied = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
    assert row is not None and row[0].startswith("2.")
    assert applied is not None and applied[0] >= 7


def test_redis_pings(redis_url: str) -> None:
    assert redis.Redis.from_url(redis_url, socket_timeout=5).ping()


def test_unreachable_dsn_fails_clearly(tmp_path: Path, infra_script: Run) -> None:
    done = infra_script("up", env={"TIMESCALE_DSN": f"postgresql://postgres@127.0.0.1:{free_port()}/x",
                                   "CRYPTOSTREAM_HOME": str(tmp_path / "home")})
    assert done.returncode != 0
    assert done.stdout == ""
    assert "TIMESCALE_DSN is set but is not a usable TimescaleDB" in done.stderr
    assert "cannot connect" in done.stderr


def test_port_taken_by_something_else_fails_clearly(tmp_path: Path, infra_script: Run) -> None:
    with socket.socket() as server:  # accepts and hangs up: not PostgreSQL
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def hang_up() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                conn.close()

        threading.Thread(target=hang_up, daemon=True).start()
        done = infra_script("up", env={"TIMESCALE_PORT": str(port), "TIMESCALE_DSN": "",
                                       "CRYPTOSTREAM_HOME": str(tmp_path / "home")})
    assert done.returncode != 0
    assert done.stdout == ""
    assert f"something else listens on 127.0.0.1:{port}" in done.stderr


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_up_starts_redis_and_down_stops_exactly_it(tmp_path: Path, infra_script: Run,
                                                   timescale_dsn: str) -> None:
    home, port = tmp_path / "home", free_port()
    env = {"CRYPTOSTREAM_HOME": str(home), "TIMESCALE_DSN": timescale_dsn, "REDIS_PORT": str(port),
           "REDIS_URL": ""}
    up = infra_script("up", env=env)
    assert up.returncode == 0, up.stderr
    assert f"REDIS_URL=redis://127.0.0.1:{port}/0" in up.stdout.splitlines()
    assert redis.Redis(port=port).ping()
    state = (home / "state.env").read_text()
    assert "REDIS_STARTED=1" in state and "TIMESCALE_STARTED" not in state  # TimescaleDB was only reused
    again = infra_script("up", env=env)
    assert again.returncode == 0 and again.stdout == up.stdout
    down = infra_script("down", env=env)
    assert down.returncode == 0, down.stderr
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=port, socket_connect_timeout=2).ping()
    with psycopg.connect(timescale_dsn) as conn:  # the reused server keeps running
        conn.execute("SELECT 1")
    assert infra_script("down", env=env).returncode == 0  # idempotent
    purge = infra_script("down", "--purge", env=env)
    assert purge.returncode == 0, purge.stderr
    assert not home.exists()


def test_down_is_a_noop_without_state(tmp_path: Path, infra_script: Run) -> None:
    done = infra_script("down", env={"CRYPTOSTREAM_HOME": str(tmp_path / "absent")})
    assert done.returncode == 0 and "nothing to stop" in done.stderr


def test_purge_refuses_a_directory_infra_up_did_not_make(tmp_path: Path, infra_script: Run) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    done = infra_script("down", "--purge", env={"CRYPTOSTREAM_HOME": str(tmp_path)})
    assert done.returncode != 0 and "not deleting" in done.stderr
    assert (tmp_path / "precious.txt").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the chroot's data directory is readable by root only")
def test_data_lives_under_cryptostream_home(timescale_dsn: str) -> None:
    home = Path(os.environ.get("CRYPTOSTREAM_HOME", Path.home() / ".local/share/cryptostream"))
    pid_file = home / "timescaledb/root/var/lib/tsdata/pg/postmaster.pid"
    if not pid_file.exists() or pid_file.read_text().splitlines()[0] != postmaster(timescale_dsn)[0]:
        pytest.skip("this session uses a TimescaleDB that infra/up did not start from CRYPTOSTREAM_HOME")
    assert "TIMESCALE_STARTED=1" in (home / "state.env").read_text()
