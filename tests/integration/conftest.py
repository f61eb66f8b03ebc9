"""Integration fixtures: the real TimescaleDB and Redis that ``infra/up`` brings up.

``infra/up`` runs once per session (with this interpreter as its ``PYTHON``); its
``KEY=value`` output is parsed into ``infra_settings``.  Tests that change data get
a scratch database of their own (created, migrated, dropped), so the user's
``cryptostream`` database is never touched.

Without root and without a reachable TimescaleDB, ``infra/up`` cannot start one:
the tests are skipped with its reason.  CI runs as root, so there they run.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from infra.db import ensure_database, migrate

PROJECT_ROOT = Path(__file__).resolve().parents[2]
INFRA_UP = PROJECT_ROOT / "infra" / "up"
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration ``integration`` (``-m "not integration"`` skips them)."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)



def parse_settings(stdout: str) -> dict[str, str]:
    """Parse ``infra/up``'s stdout: one ``KEY=value`` per line, values shell-quoted if needed."""
    settings = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        assert sep and key.isidentifier(), f"infra/up printed a line that is not KEY=value: {line!r}"
        settings[key] = " ".join(shlex.split(value)) if value else ""
    return settings


def run_script(script: Path, *args: str, env: Mapping[str, str] | None = None,
               timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run ``infra/up`` or ``infra/down`` with this interpreter as PYTHON; capture its output."""
    full_env = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    return subprocess.run([str(script), *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout, check=False, cwd=PROJECT_ROOT)


@pytest.fixture(scope="session")
def infra_up_run() -> subprocess.CompletedProcess[str]:
    """Run ``infra/up`` once per session (skip if it cannot run here); return the finished process."""
    done = run_script(INFRA_UP)
    if done.returncode != 0:
        reason = f"infra/up failed (exit {done.returncode}): {done.stderr.strip()[-1500:]}"
        if os.geteuid() != 0:
            pytest.skip(f"needs root or a reachable TimescaleDB (TIMESCALE_DSN); {reason}")
        pytest.fail(reason)
    return done


@pytest.fixture(scope="session")
def infra_settings(infra_up_run: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """The settings ``infra/up`` printed."""
    return parse_settings(infra_up_run.stdout)


@pytest.fixture(scope="session")
def timescale_dsn(infra_settings: dict[str, str]) -> str:
    """The DSN of the database ``infra/up`` prepared."""
    return infra_settings["TIMESCALE_DSN"]


@pytest.fixture(scope="session")
def redis_url(infra_settings: dict[str, str]) -> str:
    """The URL of the Redis ``infra/up`` found or started."""
    return infra_settings["REDIS_URL"]


@pytest.fixture
def scratch_dsn(timescale_dsn: str) -> Iterator[str]:
    """Create an empty database on the same server; drop it after the test."""
    name = f"cryptostream_test_{uuid.uuid4().hex[:10]}"
    dsn = make_conninfo(timescale_dsn, dbname=name)
    ensure_database(dsn)
    try:
        yield dsn
    finally:
        admin = make_conninfo(timescale_dsn, dbname="postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def migrated_dsn(scratch_dsn: str) -> str:
    """A scratch database with every migration applied."""
    migrate(scratch_dsn)
    return scratch_dsn


@pytest.fixture
def db(migrated_dsn: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to a migrated scratch database."""
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def infra_script() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Return ``run(name, *args, env=None)`` that runs ``infra/<name>`` (up or down)."""
    def run(name: str, *args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return run_script(PROJECT_ROOT / "infra" / name, *args, env=env)
    return run
