"""Back up and restore a profile's state: the database or the parquet stores, Feast's files, the model registry.

One backup is a directory ``<dest>/<YYYYmmddTHHMMSSZ>-<profile>/`` holding

- ``database.dump`` (``timescale``): ``pg_dump --format=custom`` of the DSN's database, taken on an
  exported snapshot, the same snapshot the per-table row counts and checksums were read from;
- ``files.tar.gz``: the model registry (``registry/``), Feast's registry and SQLite online store
  (``feast/``) and, on ``local``, the parquet history, decision files and dead letters (``data/``);
- ``manifest.json``: what is inside, the SHA-256 of each file, and per table its rows and checksum.

A backup is written aside and renamed into place when complete, so a failed one never counts;
the ``keep`` newest complete backups of the profile stay, older ones are deleted.  ``restore``
puts everything back (``timescaledb_pre_restore()``, ``pg_restore``, ``timescaledb_post_restore()``
on ``timescale``) and then checks every table's rows and checksum against the manifest.  It refuses
to overwrite a database with tables, or stores that hold files, unless told to (``force``).
Redis holds nothing to back up: its streams are copies of the tables and the kill switch is a key
an operator sets again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import yaml
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from infra.pgtools import find_tool, run_tool

FORMAT = 1
LOCAL_DIRS = ("offline", "decisions", "dead_letters")  # under data_dir: the local profile's stores
_NAME_RE = re.compile(r"^(\d{8}T\d{6}Z)-(local|timescale)$")
_SKIP_SCHEMAS = ("pg_catalog", "information_schema", "_timescaledb_catalog", "_timescaledb_internal",
                 "_timescaledb_cache", "_timescaledb_config", "_timescaledb_functions", "_timescaledb_debug",
                 "timescaledb_information", "timescaledb_experimental", "toolkit_experimental")


class BackupError(RuntimeError):
    """A backup or restore cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class Layout:
    """Where one profile keeps its state."""

    profile: str
    data_dir: Path
    registry: Path
    feast_files: tuple[Path, ...]  # Feast's registry file and (local) SQLite online store
    dsn: str | None = None


def feast_files(repo: Path, yaml_name: str) -> tuple[Path, ...]:
    """Return the files a Feast profile yaml keeps on disk: its registry and a SQLite online store."""
    doc = yaml.safe_load((repo / yaml_name).read_text())
    files = [doc["registry"]] if isinstance(doc.get("registry"), str) else []
    online = doc.get("online_store") or {}
    if online.get("type") == "sqlite" and online.get("path"):
        files.append(online["path"])
    return tuple((repo / f).resolve() for f in files)


# ---------------------------------------------------------------- checksums

def table_checksums(conn: psycopg.Connection) -> dict[str, list[object]]:
    """Return ``schema.table -> [rows, md5]`` of every user table (hypertables through their parent)."""
    conn.execute("SET TIME ZONE 'UTC'")
    tables = conn.execute("SELECT schemaname, tablename FROM pg_tables WHERE NOT (schemaname = ANY(%s)) "
                          "ORDER BY 1, 2", (list(_SKIP_SCHEMAS),)).fetchall()
    out: dict[str, list[object]] = {}
    for schema, table in tables:
        ident = sql.Identifier(schema, table)
        row = conn.execute(sql.SQL("SELECT count(*), coalesce(md5(string_agg(h, '' ORDER BY h)), '') "
                                   "FROM (SELECT md5(t::text) AS h FROM {} t) s").format(ident)).fetchone()
        assert row is not None
        out[f"{schema}.{table}"] = [int(row[0]), str(row[1])]
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _rows(path: Path) -> int:
    if path.suffix == ".parquet":
        return int(pq.ParquetFile(path).metadata.num_rows)
    if path.suffix == ".jsonl":
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    return 1  # any other file counts as one


def _group(prefix: str, rel: Path) -> str:
    """Name the checksum group of a file: a local table directory, a registry family, a Feast file."""
    parts = rel.parts
    if prefix == "data" and parts[0] in ("offline", "decisions") and len(parts) > 2:
        return f"data/{parts[0]}/{parts[1]}"
    return f"{prefix}/{parts[0]}"


def file_checksums(layout: Layout) -> dict[str, list[object]]:
    """Return ``group -> [rows, sha256]`` of the stored files: one group per local table directory, the
    registry's families and each Feast file; a group's checksum covers its files' names and contents."""
    groups: dict[str, list[tuple[str, str, int]]] = {}
    for prefix, root, path in _files(layout):
        key = _group(prefix, path.relative_to(root))
        groups.setdefault(key, []).append((str(path.relative_to(root)), _sha256(path), _rows(path)))
    out: dict[str, list[object]] = {}
    for key, files in sorted(groups.items()):
        h = hashlib.sha256()
        for name, digest, _ in sorted(files):
            h.update(f"{name}\0{digest}\n".encode())
        out[key] = [sum(n for *_, n in files), h.hexdigest()]
    return out


def _files(layout: Layout) -> Iterable[tuple[str, Path, Path]]:
    """Yield ``(archive prefix, root, file)`` of everything the files archive holds."""
    if layout.profile == "local":
        for d in LOCAL_DIRS:
            for p in sorted((layout.data_dir / d).rglob("*")):
                if p.is_file() and not p.name.endswith(".tmp"):
                    yield "data", layout.data_dir, p
    for p in sorted(layout.registry.rglob("*")) if layout.registry.is_dir() else []:
        if p.is_file() and not p.name.endswith(".tmp"):
            yield "registry", layout.registry, p
    for f in layout.feast_files:
        if f.is_file():
            yield "feast", f.parent, f


# ---------------------------------------------------------------- backup

def _database_major(conn: psycopg.Connection) -> int:
    return int(conn.info.server_version) // 10000


def backup(layout: Layout, dest: Path, keep: int, now: datetime | None = None) -> Path:
    """Write one complete backup of ``layout`` under ``dest``, keep the ``keep`` newest; return its directory."""
    if keep < 1:
        raise BackupError("keep must be at least 1 (the backup just made)")
    now = now or datetime.now(UTC)
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / f"{now:%Y%m%dT%H%M%SZ}-{layout.profile}"
    if final.exists():
        raise BackupError(f"{final} exists already (two backups in one second?)")
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=dest))
    try:
        manifest: dict[str, object] = {"format": FORMAT, "profile": layout.profile, "created": now.isoformat(),
                                       "files": {}, "tables": {}}
        if layout.profile == "timescale":
            manifest.update(_dump(layout, work / "database.dump"))
        with tarfile.open(work / "files.tar.gz", "w:gz") as tar:
            for prefix, root, path in _files(layout):
                tar.add(path, arcname=f"{prefix}/{path.relative_to(root)}", recursive=False)
        manifest["stores"] = file_checksums(layout)
        manifest["files"] = {p.name: _sha256(p) for p in sorted(work.iterdir())}
        (work / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
        os.rename(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    prune(dest, layout.profile, keep)
    return final


def _dump(layout: Layout, out: Path) -> dict[str, object]:
    """``pg_dump`` on an exported snapshot; return the checksums and versions read on that snapshot."""
    assert layout.dsn
    from infra.db import connect

    with connect(layout.dsn) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = str(conn.execute("SELECT pg_export_snapshot()").fetchone()[0])  # type: ignore[index]
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        tables = table_checksums(conn)
        major = _database_major(conn)
        run_tool([*find_tool("pg_dump", major), "--format=custom", f"--snapshot={snapshot}"], layout.dsn,
                 stdout=out)
        conn.execute("COMMIT")
    return {"tables": tables, "timescaledb": row[0] if row else None, "server_major": major,
            "database": conninfo_to_dict(layout.dsn).get("dbname")}


def backups(dest: Path, profile: str | None = None) -> list[Path]:
    """Return the complete backups under ``dest`` (of ``profile``), oldest first."""
    if not dest.is_dir():
        return []
    found = [p for p in dest.iterdir() if (m := _NAME_RE.match(p.name)) and (profile in (None, m.group(2)))
             and (p / "manifest.json").is_file()]
    return sorted(found, key=lambda p: p.name)


def prune(dest: Path, profile: str, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest complete backups of ``profile``; return the deleted ones."""
    old = backups(dest, profile)[:-keep]
    for p in old:
        shutil.rmtree(p)
    return old


# ---------------------------------------------------------------- restore

def _manifest(source: Path) -> dict[str, object]:
    path = source / "manifest.json"
    if not path.is_file():
        raise BackupError(f"{source} is not a backup: no manifest.json")
    manifest: dict[str, object] = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{path}: format {manifest.get('format')!r}, this version reads {FORMAT}")
    for name, digest in dict(manifest["files"]).items():  # type: ignore[call-overload]
        if _sha256(source / name) != digest:
            raise BackupError(f"{source / name} does not match its SHA-256 in the manifest: the backup is damaged")
    return manifest


def restore(layout: Layout, source: Path, force: bool = False) -> list[str]:
    """Restore the backup ``source`` into ``layout``; check every table and store; return report lines.

    Raises:
        BackupError: the backup is damaged or of another profile, the target holds data and
            ``force`` is false, or a restored table differs from the manifest.
    """
    manifest = _manifest(source)
    if manifest["profile"] != layout.profile:
        raise BackupError(f"{source} is a backup of profile {manifest['profile']!r}, not {layout.profile!r}")
    occupied = [str(p) for p in (*(layout.data_dir / d for d in LOCAL_DIRS if layout.profile == "local"),
                                 layout.registry) if p.is_dir() and any(p.iterdir())]
    occupied += [str(f) for f in layout.feast_files if f.is_file()]
    if occupied and not force:
        raise BackupError("refusing to overwrite " + ", ".join(occupied) + ": pass --force to replace them")
    lines = []
    if layout.profile == "timescale":
        lines += _restore_database(layout, source, manifest, force)
    for p in occupied:
        path = Path(p)
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    roots = {"data": layout.data_dir, "registry": layout.registry}
    feast_by_name = {f.name: f for f in layout.feast_files}
    with tarfile.open(source / "files.tar.gz", "r:gz") as tar:
        for member in tar.getmembers():
            prefix, _, rest = member.name.partition("/")
            if prefix == "feast":
                target = feast_by_name.get(rest)
                if target is None:
                    continue  # a Feast file this profile's yaml no longer names
                member.name = rest
                tar.extract(member, target.parent, filter="data")
            else:
                member.name = rest
                tar.extract(member, roots[prefix], filter="data")
    stores = file_checksums(layout)
    expected = dict(manifest["stores"])  # type: ignore[call-overload]
    bad = [k for k in sorted(set(stores) | set(expected)) if stores.get(k) != expected.get(k)]
    if bad:
        raise BackupError(f"restored files differ from the backup: {', '.join(bad)}")
    lines.append(f"files: {len(stores)} groups restored, rows and checksums equal to the backup")
    return lines


def _restore_database(layout: Layout, source: Path, manifest: dict[str, object], force: bool) -> list[str]:
    assert layout.dsn
    from infra.db import connect, ensure_database

    name = str(conninfo_to_dict(layout.dsn).get("dbname") or "")
    if not name:
        raise BackupError("the DSN names no database to restore into")
    with connect(make_conninfo(layout.dsn, dbname="postgres"), autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        major = _database_major(admin)
        available = admin.execute("SELECT default_version FROM pg_available_extensions "
                                  "WHERE name = 'timescaledb'").fetchone()
    if available is None or available[0] != manifest["timescaledb"]:
        raise BackupError(f"the backup holds timescaledb {manifest['timescaledb']}, this server offers "
                          f"{available[0] if available else 'none'}: restore on a server with the same version")
    if exists:
        with connect(layout.dsn, autocommit=True) as conn:
            tables = table_checksums(conn)
        if tables and not force:
            raise BackupError(f"database {name} holds {len(tables)} tables: pass --force to drop and replace it")
        with connect(make_conninfo(layout.dsn, dbname="postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    ensure_database(layout.dsn)
    with connect(layout.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE EXTENSION timescaledb VERSION {}").format(
            sql.Literal(manifest["timescaledb"])))
        conn.execute("SELECT timescaledb_pre_restore()")
    try:
        run_tool([*find_tool("pg_restore", major), "--format=custom", "--no-owner", f"--dbname={name}"],
                 layout.dsn, stdin=source / "database.dump")
    finally:
        with connect(layout.dsn, autocommit=True) as conn:
            conn.execute("SELECT timescaledb_post_restore()")
    with connect(layout.dsn, autocommit=True) as conn:
        tables = table_checksums(conn)
    expected = dict(manifest["tables"])  # type: ignore[call-overload]
    bad = [t for t in sorted(set(tables) | set(expected)) if tables.get(t) != expected.get(t)]
    if bad:
        raise BackupError(f"restored tables differ from the backup: {', '.join(bad)}")
    return [f"database {name}: {len(tables)} tables restored, rows and checksums equal to the backup"]
