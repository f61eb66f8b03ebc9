"""Real servers a test may stop and start: a throwaway TimescaleDB cluster and a redis-server of its own.

Outage tests must never stop the servers other tests use (the ``infra/up`` cluster on
55432, a Redis on 6379, the machine's PostgreSQL on 5432).  :class:`ThrowawayTimescale`
makes a new cluster with ``initdb`` inside the chroot ``infra/up`` built (the same
PostgreSQL 17 + TimescaleDB binaries), on a port of its own, and removes it afterwards;
:class:`OwnRedis` runs ``redis-server`` on a spare port with its data in a temporary
directory.  Both stop and start on request, as an operator or a crash would.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from infra.db import ensure_database, migrate
from infra.pgtools import chroot_root

PGBIN = "/usr/lib/postgresql/17/bin"  # inside the chroot (infra/lib/common.sh: TS_PGBIN)


def free_port() -> int:
    """Return a TCP port nobody listens on just now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class ThrowawayTimescale:
    """A TimescaleDB cluster of one test: ``initdb`` in the chroot, migrated database ``cryptostream``."""

    def __init__(self, port: int | None = None) -> None:
        self.root = chroot_root()
        if os.geteuid() != 0 or not (self.root / ".cryptostream-ready").is_file():
            pytest.skip(f"a throwaway TimescaleDB needs root and the chroot infra/up builds ({self.root}); "
                        "run infra/up as root once")
        self.port = port or free_port()
        self.pgdata = f"/var/lib/tsdata/throwaway-{self.port}-{uuid.uuid4().hex[:6]}"
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/cryptostream"

    def _pg(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = ["chroot", "--userspec=postgres:postgres", str(self.root), "env", "-i",
               "HOME=/var/lib/postgresql", "LANG=C.UTF-8", "PATH=/usr/bin:/bin", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)

    def create(self) -> ThrowawayTimescale:
        """Initialise, start, create and migrate the database; return self."""
        done = self._pg(f"{PGBIN}/initdb", "-D", self.pgdata, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                        "--locale=C.UTF-8")
        assert done.returncode == 0, done.stderr
        conf = (f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '/tmp'\n"
                "shared_preload_libraries = 'timescaledb'\ntimescaledb.telemetry_level = off\n"
                "dynamic_shared_memory_type = mmap\nsynchronous_commit = off\nfsync = off\n"
                "shared_buffers = 64MB\ntimezone = 'UTC'\n")
        with open(self.root / self.pgdata.lstrip("/") / "postgresql.conf", "a") as f:
            f.write(conf)
        self.start()
        ensure_database(self.dsn)
        migrate(self.dsn)
        return self

    def start(self) -> None:
        """Start the cluster and wait until it accepts connections."""
        done = self._pg(f"{PGBIN}/pg_ctl", "-D", self.pgdata, "-l", f"{self.pgdata}.log", "-w", "-t", "60", "start")
        assert done.returncode == 0, done.stderr + done.stdout

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster (``fast``: as a restart does; ``immediate``: as a crash does)."""
        done = self._pg(f"{PGBIN}/pg_ctl", "-D", self.pgdata, "-m", mode, "-w", "-t", "60", "stop")
        assert done.returncode == 0, done.stderr + done.stdout

    def remove(self) -> None:
        """Stop the cluster if it runs and delete its data directory."""
        if self._pg(f"{PGBIN}/pg_ctl", "-D", self.pgdata, "status").returncode == 0:
            self.stop("immediate")
        data = self.root / self.pgdata.lstrip("/")
        if data.is_dir() and data.parent == self.root / "var/lib/tsdata":
            shutil.rmtree(data)
        log = Path(str(data) + ".log")
        log.unlink(missing_ok=True)

    def __enter__(self) -> ThrowawayTimescale:
        try:
            return self.create()
        except BaseException:
            self.remove()
            raise

    def __exit__(self, *exc: object) -> None:
        self.remove()


class OwnRedis:
    """A ``redis-server`` of one test on a spare port (never the machine's 6379), killed and started at will."""

    def __init__(self, tmp: Path, port: int | None = None) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed (infra/up installs it as root)")
        self.port = port or free_port()
        assert self.port != 6379, "never the machine's Redis"
        self.dir = tmp / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it listens."""
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _listening(self.port):
            assert self.proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the server (its data is gone: no persistence) and wait until the port is closed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> OwnRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
