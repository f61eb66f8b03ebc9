"""Find ``pg_dump`` / ``pg_restore`` of the server's major version and run them without secrets in argv.

A ``pg_dump`` older than the server refuses to dump it (Debian bookworm ships 15; ``infra/up``
runs PostgreSQL 17 in a chroot).  The tools are looked for, in order: ``$CRYPTOSTREAM_PG_BIN``,
``PATH``, ``/usr/lib/postgresql/<major>/bin``, then the chroot ``infra/up`` built (run through
``chroot``, which needs root).  Connection values go to the tool in ``PG*`` environment
variables, never on its command line, so ``ps`` never shows a password.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict


class ToolError(RuntimeError):
    """No usable PostgreSQL client tool, or the tool failed."""


def chroot_root() -> Path:
    """Return the TimescaleDB chroot of ``infra/up`` (``$CRYPTOSTREAM_HOME/timescaledb/root``)."""
    home = os.environ.get("CRYPTOSTREAM_HOME") or str(Path.home() / ".local" / "share" / "cryptostream")
    return Path(home) / "timescaledb" / "root"


def _major(binary: list[str]) -> int | None:
    try:
        out = subprocess.run([*binary, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return None
    m = re.search(r"\) (\d+)", out.stdout)
    return int(m.group(1)) if out.returncode == 0 and m else None


def find_tool(name: str, server_major: int) -> list[str]:
    """Return the command prefix of ``name`` (``pg_dump``, ``pg_restore``) for a server of ``server_major``.

    Raises:
        ToolError: no candidate is at least the server's major version.
    """
    candidates: list[list[str]] = []
    if os.environ.get("CRYPTOSTREAM_PG_BIN"):
        candidates.append([str(Path(os.environ["CRYPTOSTREAM_PG_BIN"]) / name)])
    if shutil.which(name):
        candidates.append([str(shutil.which(name))])
    candidates.append([f"/usr/lib/postgresql/{server_major}/bin/{name}"])
    root = chroot_root()
    inner = f"/usr/lib/postgresql/{server_major}/bin/{name}"
    if os.geteuid() == 0 and (root / inner.lstrip("/")).is_file():
        candidates.append(["chroot", str(root), inner])
    seen = []
    for cmd in candidates:
        if cmd[0] != "chroot" and not Path(cmd[0]).is_file():
            continue
        major = _major(cmd)
        seen.append(f"{' '.join(cmd)} ({major or 'unusable'})")
        if major is not None and major >= server_major:
            return cmd
    raise ToolError(f"no {name} of PostgreSQL {server_major} or newer (found: {'; '.join(seen) or 'none'}); "
                    f"install postgresql-client-{server_major}, or set CRYPTOSTREAM_PG_BIN to its bin directory")


def pg_environment(dsn: str) -> dict[str, str]:
    """Return the environment that points a libpq tool at ``dsn`` (password included, never argv)."""
    params = conninfo_to_dict(dsn)
    names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD",
             "dbname": "PGDATABASE", "sslmode": "PGSSLMODE", "connect_timeout": "PGCONNECT_TIMEOUT"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({names[k]: str(v) for k, v in params.items() if k in names and v is not None})
    env.setdefault("PGCONNECT_TIMEOUT", "10")
    env["PGTZ"] = "UTC"
    return env


def run_tool(cmd: list[str], dsn: str, *, stdin: Path | None = None, stdout: Path | None = None,
             timeout: float = 3600) -> str:
    """Run a libpq tool against ``dsn``; return its stderr; raise :class:`ToolError` on failure."""
    with (open(stdin, "rb") if stdin else open(os.devnull, "rb")) as fin, \
            (open(stdout, "wb") if stdout else open(os.devnull, "wb")) as fout:
        done = subprocess.run(cmd, stdin=fin, stdout=fout, stderr=subprocess.PIPE, env=pg_environment(dsn),
                              timeout=timeout, check=False)
    err = done.stderr.decode(errors="replace").strip()
    if done.returncode != 0:
        password = conninfo_to_dict(dsn).get("password")
        if password:
            err = err.replace(str(password), "<secret>")
        name = next((Path(c).name for c in cmd if Path(c).name.startswith("pg_")), cmd[0])
        raise ToolError(f"{name} exited with {done.returncode}: {err[-2000:]}")
    return err
