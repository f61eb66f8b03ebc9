"""A profile's state on disk (and in a database) for the backup and retention tests, and independent digests of it.

:func:`profile_env` gives a data directory, a Feast repository copy and a model registry of one
test, so a ``restore --force`` can only ever delete the test's own files.  The digests read the
tables the way an analyst would (pandas over the parquet files, ``count(*)`` and an ``md5`` of the
rows in SQL), not with the code under test.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import psycopg
from psycopg import sql

from flows.settings import load_settings
from flows.stores import open_stores
from tests.kit.dashboard_store import fill_store

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def profile_env(tmp: Path, profile: str = "local", dsn: str | None = None) -> dict[str, str]:
    """Return the environment of a profile whose every file lives under ``tmp``."""
    repo = tmp / "feature_repo"
    (repo / "data").mkdir(parents=True, exist_ok=True)
    for y in (PROJECT_ROOT / "feature_repo").glob("*.yaml"):
        shutil.copy(y, repo / y.name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRYPTOSTREAM_", "TIMESCALE_"))}
    env |= {"CRYPTOSTREAM_PROFILE": profile, "CRYPTOSTREAM_DATA_DIR": str(tmp / "data"),
            "CRYPTOSTREAM_FEAST_REPO": str(repo), "CRYPTOSTREAM_BACKUP__DIR": str(tmp / "backups")}
    if dsn:
        env["TIMESCALE_DSN"] = dsn
    return env


def fill(env: dict[str, str], bars_per_symbol: int = 3000, redis_url: str | None = None) -> None:
    """Write bars, features and decisions through the profile's writers, a registry and Feast's files."""
    settings = load_settings(env={**env, **({"REDIS_URL": redis_url} if redis_url else {})})
    fill_store(open_stores(settings), ["BTC/USDT", "ETH/USDT"], bars_per_symbol)
    data = Path(env["CRYPTOSTREAM_DATA_DIR"])
    (data / "dead_letters").mkdir(parents=True, exist_ok=True)
    (data / "dead_letters" / "w0.jsonl").write_text('{"ts":"2024-01-01T00:00:00Z","reason":"bad json"}\n' * 3)
    version = data / "registry" / "lightgbm" / "v20240101T000000"
    version.mkdir(parents=True)
    (version / "model.onnx").write_bytes(bytes(range(256)) * 40)
    (version / "manifest.json").write_text('{"family": "lightgbm"}')
    (data / "registry" / "lightgbm" / "latest").write_text("v20240101T000000\n")
    repo = Path(env["CRYPTOSTREAM_FEAST_REPO"])
    (repo / "data" / "registry.db").write_bytes(b"feast registry")
    (repo / "data" / "online.db").write_bytes(b"feast online")


def run_db(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m infra.db ARGS`` as a user would."""
    return subprocess.run([sys.executable, "-m", "infra.db", *args], capture_output=True, text=True, env=env,
                          cwd=PROJECT_ROOT, timeout=300, check=False)


def local_digest(env: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Return ``table -> (rows, hash of the rows)`` of the local stores, plus each other file's bytes hash."""
    data = Path(env["CRYPTOSTREAM_DATA_DIR"])
    out: dict[str, tuple[int, int]] = {}
    for d in sorted([*(data / "offline").glob("*"), *(data / "decisions").glob("*")]):
        frame = pd.concat([pd.read_parquet(f) for f in sorted(d.glob("*.parquet"))], ignore_index=True)
        out[d.name] = (len(frame), int(pd.util.hash_pandas_object(frame, index=False).sum()))
    others = [*(data / "dead_letters").glob("*"), *(data / "registry").rglob("*"),
              *(Path(env["CRYPTOSTREAM_FEAST_REPO"]) / "data").glob("*.db")]
    for f in sorted(p for p in others if p.is_file()):
        out[str(f.relative_to(f.anchor))] = (f.stat().st_size, int(hashlib.sha256(f.read_bytes()).hexdigest()[:15], 16))
    return out


def database_digest(dsn: str) -> dict[str, tuple[int, str]]:
    """Return ``schema.table -> (rows, md5 of the rows in text form)`` of every table outside the catalogs."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        tables = conn.execute("SELECT table_schema, table_name FROM information_schema.tables "
                              "WHERE table_type = 'BASE TABLE' AND table_schema NOT LIKE 'pg\\_%' "
                              "AND table_schema NOT LIKE '\\_timescaledb%' AND table_schema <> "
                              "'information_schema' AND table_schema NOT LIKE 'timescaledb\\_%'").fetchall()
        out = {}
        for schema, table in tables:
            q = sql.SQL("SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {} t")
            rows, digest = conn.execute(q.format(sql.Identifier(schema, table))).fetchone()  # type: ignore[misc]
            out[f"{schema}.{table}"] = (int(rows), str(digest))
    return out
