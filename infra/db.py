"""TimescaleDB schema tooling: migrations, retention, status.

Usage::

    python -m infra.db migrate   [--dsn DSN] [--create-database]
    python -m infra.db status    [--dsn DSN]
    python -m infra.db retention [--profile P] [--dsn DSN] (--table T --older-than '90 days' | --all-default) [--dry-run]
    python -m infra.db backup    [--profile P] [--dsn DSN] [--dest DIR] [--keep N]
    python -m infra.db restore   [--profile P] [--dsn DSN] [--dest DIR] [PATH] [--force]
    python -m infra.db backups   [--profile P] [--dest DIR]
    python -m infra.db probe     [--dsn DSN]
    python -m infra.db env       [--dsn DSN] [--redis-url URL]

``--dsn`` defaults to ``$TIMESCALE_DSN``; ``--profile`` to ``$CRYPTOSTREAM_PROFILE``, else ``timescale``
when a DSN is known and ``local`` when not (``local``: retention and backups of the parquet stores
under the settings' ``data_dir``, no server; ``infra/retention.py``, ``infra/backup.py``).  Migrations are ``sql/migrations/NNNN_name.sql``,
applied in order, each in its own transaction, and recorded with their SHA-256 in
``schema_migrations``; an applied file that changed is refused.  ``sql/community/``
holds features of Timescale's community build (compression, continuous aggregates),
applied the same way only when ``timescaledb.license`` is ``timescale``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from flows.cli import HelpFormatter
from flows.settings import SettingsError
from infra.backup import BackupError, Layout, backup, backups, feast_files, restore
from infra.pgtools import ToolError
from infra.retention import RetentionError
from infra.retention import retention as local_retention

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
MIGRATIONS_DIR = SQL_DIR / "migrations"
COMMUNITY_DIR = SQL_DIR / "community"
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x63727970746F  # one migrate at a time per database ("crypto")
_CONNECT_TIMEOUT = 10


class MigrationError(RuntimeError):
    """The database and the migration files disagree; nothing was applied."""


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    track: str  # "core" (sql/migrations) or "community" (sql/community)
    version: int
    name: str
    sql: str
    checksum: str


def load_migrations(directory: Path, track: str) -> list[Migration]:
    """Read ``NNNN_name.sql`` files in version order; refuse duplicates and misnamed files."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _FILE_RE.match(path.name)
        if not m:
            raise MigrationError(f"{path}: migration files are named NNNN_lower_snake.sql")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"{path}: version {version:04d} is used twice in {directory}")
        text = path.read_bytes().replace(b"\r\n", b"\n")  # a CRLF checkout is the same migration
        found[version] = Migration(track, version, m.group(2), text.decode(),
                                   hashlib.sha256(text).hexdigest())
    return [found[v] for v in sorted(found)]


def connect(dsn: str, **kwargs: object) -> psycopg.Connection:
    """Open a connection with a connect timeout (unless the DSN sets one)."""
    params = conninfo_to_dict(dsn)
    params.setdefault("connect_timeout", _CONNECT_TIMEOUT)
    return psycopg.connect(make_conninfo(**params), **kwargs)  # type: ignore[arg-type]


def ensure_database(dsn: str) -> bool:
    """Create the DSN's database if it is missing; return whether it was created."""
    params = conninfo_to_dict(dsn)
    name = str(params.get("dbname") or params.get("user") or "postgres")
    with connect(make_conninfo(dsn, dbname="postgres"), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateDatabase:  # created concurrently: fine
            return False
    return True


def ensure_extension(conn: psycopg.Connection) -> str:
    """Create the timescaledb extension if needed and return its version."""
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    if row:
        return str(row[0])
    if not conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone():
        raise MigrationError("this PostgreSQL server has no timescaledb extension installed; "
                             "use infra/up's server, or the timescale/timescaledb image")
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as e:
        raise MigrationError(f"CREATE EXTENSION timescaledb failed: {e}".strip() +
                             " (it must be in shared_preload_libraries and needs a superuser)") from e
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    assert row is not None
    return str(row[0])


def license_of(conn: psycopg.Connection) -> str:
    """Return ``timescaledb.license``: ``apache`` (Debian's build) or ``timescale`` (community)."""
    row = conn.execute("SELECT current_setting('timescaledb.license', true)").fetchone()
    return str(row[0]) if row and row[0] else "apache"


_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    track      text        NOT NULL,
    version    integer     NOT NULL,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (track, version)
)"""


def _check_applied(conn: psycopg.Connection, track: str, files: Sequence[Migration],
                   directory: Path) -> set[int]:
    """Return the applied versions of a track; refuse if any applied file is gone or changed."""
    by_version = {m.version: m for m in files}
    applied: set[int] = set()
    problems = []
    rows = conn.execute("SELECT version, name, checksum FROM schema_migrations WHERE track = %s "
                        "ORDER BY version", (track,)).fetchall()
    for version, name, checksum in rows:
        applied.add(version)
        m = by_version.get(version)
        if m is None:
            problems.append(f"{version:04d}_{name} was applied but is missing from {directory}")
        elif m.checksum != checksum:
            problems.append(f"{directory / f'{version:04d}_{m.name}.sql'} changed after it was applied "
                            f"(checksum {checksum[:12]} in the database, {m.checksum[:12]} on disk)")
    if problems:
        raise MigrationError("refusing to migrate: " + "; ".join(problems) +
                             ". Applied migrations are immutable: restore the file and put the change "
                             "in a new migration.")
    return applied


def _apply(conn: psycopg.Connection, files: Sequence[Migration], applied: set[int]) -> list[str]:
    done = []
    for m in files:
        if m.version in applied:
            continue
        with conn.transaction():
            conn.execute(m.sql.encode())
            conn.execute("INSERT INTO schema_migrations (track, version, name, checksum) "
                         "VALUES (%s, %s, %s, %s)", (m.track, m.version, m.name, m.checksum))
        done.append(f"{m.track} {m.version:04d}_{m.name}")
    return done


def migrate(dsn: str, migrations_dir: Path = MIGRATIONS_DIR,
            community_dir: Path = COMMUNITY_DIR) -> list[str]:
    """Apply pending migrations (and community ones when licensed); return report lines.

    Raises:
        MigrationError: an applied migration changed or disappeared, or the
            server cannot provide timescaledb.  Nothing is applied in that case.
    """
    core = load_migrations(migrations_dir, "core")
    community = load_migrations(community_dir, "community") if community_dir.is_dir() else []
    report = []
    with connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            report.append(f"timescaledb {ensure_extension(conn)}, license {license_of(conn)}")
            conn.execute(_CREATE_LEDGER)
            applied = _check_applied(conn, "core", core, migrations_dir)
            community_applied = _check_applied(conn, "community", community, community_dir)
            done = _apply(conn, core, applied)
            report += [f"applied {d}" for d in done] or [f"core: up to date ({len(core)} migrations)"]
            if license_of(conn) != "timescale":
                report.append(f"community: skipped {len(community)} migrations (timescaledb.license = "
                              f"{license_of(conn)}; compression and continuous aggregates need "
                              "Timescale's community build)")
            else:
                done = _apply(conn, community, community_applied)
                report += [f"applied {d}" for d in done] or ["community: up to date"]
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return report


def _hypertables(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables "
                        "WHERE hypertable_schema = 'public' ORDER BY 1").fetchall()
    return [r[0] for r in rows]


def drop_old_chunks(conn: psycopg.Connection, table: str, older_than: str,
                    dry_run: bool = False) -> list[str]:
    """Drop (or with ``dry_run`` list) the chunks of ``table`` entirely older than ``now() - older_than``."""
    if table not in _hypertables(conn):
        raise MigrationError(f"{table!r} is not a hypertable in schema public "
                             f"(hypertables: {', '.join(_hypertables(conn))})")
    fn = "show_chunks" if dry_run else "drop_chunks"
    query = sql.SQL("SELECT {}(%s::regclass, older_than => %s::interval)").format(sql.Identifier(fn))
    with conn.transaction():
        return [str(r[0]) for r in conn.execute(query, (table, older_than)).fetchall()]


def retention(dsn: str, table: str | None, older_than: str | None, all_default: bool,
              dry_run: bool = False) -> list[str]:
    """Apply one retention rule, or every row of ``retention_policies``; return report lines."""
    verb = "would drop" if dry_run else "dropped"
    with connect(dsn, autocommit=True) as conn:
        if all_default:
            rules = conn.execute("SELECT hypertable, keep::text FROM retention_policies "
                                 "ORDER BY hypertable").fetchall()
        else:
            rules = [(table, older_than)]
        lines = []
        for name, keep in rules:
            if keep is None:
                lines.append(f"{name}: kept (no retention policy)")
                continue
            chunks = drop_old_chunks(conn, name, keep, dry_run)
            detail = ": " + ", ".join(chunks) if chunks else ""
            lines.append(f"{name}: {verb} {len(chunks)} chunk(s) older than {keep}{detail}")
    return lines


def status(dsn: str, migrations_dir: Path = MIGRATIONS_DIR,
           community_dir: Path = COMMUNITY_DIR) -> list[str]:
    """Describe the server, the applied and pending migrations and the hypertables."""
    with connect(dsn, autocommit=True) as conn:
        lines = [str(conn.execute("SELECT version()").fetchone()[0])]  # type: ignore[index]
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        lines.append(f"timescaledb {row[0] if row else 'NOT INSTALLED'}, license {license_of(conn)}")
        has_ledger = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        applied = conn.execute("SELECT track, version, name, checksum, applied_at FROM schema_migrations "
                               "ORDER BY track DESC, version").fetchall() if has_ledger and has_ledger[0] else []
        lines.append(f"migrations applied: {len(applied)}")
        lines += [f"  {t:9} {v:04d}_{n:28} {c[:12]}  {a:%Y-%m-%d %H:%M:%S%z}" for t, v, n, c, a in applied]
        done = {(t, v) for t, v, *_ in applied}
        pending = [m for m in load_migrations(migrations_dir, "core") +
                   (load_migrations(community_dir, "community") if community_dir.is_dir() else [])
                   if (m.track, m.version) not in done]
        lines.append(f"migrations pending: {len(pending)}")
        skipped = "  (skipped: needs the community build)" if license_of(conn) != "timescale" else ""
        lines += [f"  {m.track:9} {m.version:04d}_{m.name}{skipped if m.track == 'community' else ''}"
                  for m in pending]
        if row:
            lines.append("hypertables (chunks, approximate rows, total size):")
            for name in _hypertables(conn):
                n, rows, size = conn.execute(
                    "SELECT (SELECT count(*) FROM show_chunks(%(t)s::regclass)), "
                    "approximate_row_count(%(t)s::regclass), "
                    "pg_size_pretty(hypertable_size(%(t)s::regclass))", {"t": name}).fetchone() or (0, 0, "")
                lines.append(f"  {name:22} {n:6} {rows:12} {size:>10}")
    return lines


def probe(dsn: str) -> tuple[int, str]:
    """Say whether the server is reachable and can run timescaledb: (0 yes | 3 no | 4 unreachable, why)."""
    try:
        conn = connect(dsn, autocommit=True)
    except psycopg.OperationalError as e:
        # A missing database is fine (migrate --create-database makes it): probe the server.
        if "does not exist" in str(e) and conninfo_to_dict(dsn).get("dbname") != "postgres":
            return probe(make_conninfo(dsn, dbname="postgres"))
        return 4, f"cannot connect: {' '.join(str(e).split())}"
    with conn:
        row = conn.execute("SELECT (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'), "
                           "(SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'), "
                           "current_setting('shared_preload_libraries')").fetchone()
    assert row is not None
    installed, available, preload = row
    if installed:
        return 0, f"timescaledb {installed} installed"
    if available and "timescaledb" in preload:
        return 0, f"timescaledb {available} available"
    why = "not installed on the server" if not available else "not in shared_preload_libraries"
    return 3, f"PostgreSQL is reachable but timescaledb is {why}"


def settings_lines(dsn: str, redis_url: str | None) -> list[str]:
    """Return ``KEY=value`` lines (shell-quoted when needed) for the flow, Feast and the tests."""
    p = conninfo_to_dict(dsn)
    values = {"TIMESCALE_DSN": dsn, "TIMESCALE_HOST": p.get("host", "127.0.0.1"),
              "TIMESCALE_PORT": p.get("port", "5432"), "TIMESCALE_DB": p.get("dbname", ""),
              "TIMESCALE_USER": p.get("user", ""), "TIMESCALE_PASSWORD": p.get("password", "")}
    if redis_url:
        u = urlsplit(redis_url)
        db = (u.path or "/0").lstrip("/") or "0"
        feast = f"{u.hostname or '127.0.0.1'}:{u.port or 6379}"
        # Same logical database as REDIS_URL, as flows.feast_store derives it for the flow.
        feast += f",db={db}"
        feast += f",password={unquote(u.password)}" if u.password else ""
        feast += ",ssl=true" if u.scheme == "rediss" else ""
        values |= {"REDIS_URL": redis_url, "FEAST_REDIS_CONNECTION": feast}
    return [f"{k}={shlex.quote(str(v)) if v != '' else ''}" for k, v in values.items()]


def _layout(profile: str, dsn: str | None, config: str | None) -> tuple[Layout, Path, int]:
    """Return where the profile keeps its state, the backup directory and how many backups are kept,
    from the settings (``--config``, the environment)."""
    from flows.settings import load_settings
    from flows.stores import PROFILES

    settings = load_settings(config, profile=profile)
    yaml_name = PROFILES[profile](settings).feast_yaml
    layout = Layout(profile, settings.data_dir.resolve(), settings.registry_root().resolve(),
                    feast_files(settings.feast_repo, yaml_name), dsn if profile == "timescale" else None)
    dest = Path(settings.backup.dir) if settings.backup.dir else layout.data_dir / "backups"
    return layout, dest, settings.backup.keep


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    ap = argparse.ArgumentParser(prog="python -m infra.db", description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    cmds = {name: sub.add_parser(name, help=h, formatter_class=HelpFormatter) for name, h in (
        ("migrate", "apply pending migrations"), ("status", "show extension, migrations, hypertables"),
        ("retention", "drop old chunks (timescale: drop_chunks) or old parquet files (local)"),
        ("probe", "check a server for timescaledb"), ("env", "print KEY=value connection settings"),
        ("backup", "back up the database or the parquet stores, Feast's files and the model registry"),
        ("restore", "restore a backup and check every table against it"),
        ("backups", "list the complete backups"))}
    for p in cmds.values():
        p.add_argument("--dsn", default=os.environ.get("TIMESCALE_DSN"),
                       help="libpq DSN (default: $TIMESCALE_DSN)")
    for name in ("retention", "backup", "restore", "backups"):
        cmds[name].add_argument("--profile", choices=("local", "timescale"),
                                default=os.environ.get("CRYPTOSTREAM_PROFILE"),
                                help="default: $CRYPTOSTREAM_PROFILE, else timescale with a DSN, local without")
        cmds[name].add_argument("--config", default=None, help="settings YAML (data_dir, scoring.registry)")
    for name in ("backup", "restore", "backups"):
        cmds[name].add_argument("--dest", type=Path, default=None,
                                help="backup directory (default: backup.dir, else <data_dir>/backups)")
    cmds["backup"].add_argument("--keep", type=int, default=None,
                                help="complete backups of the profile kept (default: backup.keep, 7)")
    cmds["restore"].add_argument("path", nargs="?", type=Path, help="backup directory (default: the newest)")
    cmds["restore"].add_argument("--force", action="store_true",
                                 help="drop the database / delete the stores and registry it replaces")
    for name in ("migrate", "status"):
        cmds[name].add_argument("--migrations-dir", type=Path, default=MIGRATIONS_DIR)
        cmds[name].add_argument("--community-dir", type=Path, default=COMMUNITY_DIR)
    cmds["migrate"].add_argument("--create-database", action="store_true",
                                 help="create the DSN's database if it does not exist")
    r = cmds["retention"]
    r.add_argument("--table", help="hypertable (or local table) to trim")
    r.add_argument("--older-than", help="PostgreSQL interval, e.g. '90 days'")
    r.add_argument("--all-default", action="store_true",
                   help="apply every row of retention_policies (local: infra/retention.py DEFAULT_KEEP)")
    r.add_argument("--dry-run", action="store_true", help="list the chunks or files without dropping them")
    cmds["env"].add_argument("--redis-url", default=os.environ.get("REDIS_URL"), help="(default: $REDIS_URL)")
    args = ap.parse_args(argv)
    profile = getattr(args, "profile", None) or ("timescale" if args.dsn else "local")
    if not args.dsn and (args.command not in ("retention", "backup", "restore", "backups") or
                         profile == "timescale"):
        ap.error("no DSN: pass --dsn or set TIMESCALE_DSN (eval \"$(infra/up)\")")
    if args.command == "retention" and args.all_default == bool(args.table or args.older_than):
        ap.error("retention needs either --table and --older-than, or --all-default")
    if args.command == "retention" and not args.all_default and not (args.table and args.older_than):
        ap.error("retention --table needs --older-than (and the reverse)")
    try:
        if args.command == "migrate":
            if args.create_database and ensure_database(args.dsn):
                print(f"created database {conninfo_to_dict(args.dsn).get('dbname')}")
            lines = migrate(args.dsn, args.migrations_dir, args.community_dir)
        elif args.command == "status":
            lines = status(args.dsn, args.migrations_dir, args.community_dir)
        elif args.command == "retention" and profile == "timescale":
            lines = retention(args.dsn, args.table, args.older_than, args.all_default, args.dry_run)
        elif args.command == "retention":
            layout, _, _ = _layout(profile, None, args.config)
            lines = [f"profile local, {layout.data_dir}"] + local_retention(
                layout.data_dir, args.table, args.older_than, args.all_default, args.dry_run)
        elif args.command in ("backup", "restore", "backups"):
            layout, dest, keep = _layout(profile, args.dsn, args.config)
            lines = _backup_command(args, layout, args.dest or dest, getattr(args, "keep", None) or keep)
        elif args.command == "probe":
            code, why = probe(args.dsn)
            print(why)
            return code
        else:
            lines = settings_lines(args.dsn, args.redis_url)
    except (MigrationError, BackupError, RetentionError, ToolError, SettingsError) as e:
        print(f"infra.db {args.command}: {e}", file=sys.stderr)
        return 2
    except psycopg.Error as e:
        print(f"infra.db {args.command}: {type(e).__name__}: {str(e).strip()}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def _backup_command(args: argparse.Namespace, layout: Layout, dest: Path, keep: int) -> list[str]:
    if args.command == "backup":
        done = backup(layout, dest, keep)
        kept = backups(dest, layout.profile)
        return [f"backup of profile {layout.profile}: {done}",
                f"{len(kept)} backup(s) of {layout.profile} kept in {dest} (keep {keep})"]
    if args.command == "backups":
        return [f"{p}  {sum(f.stat().st_size for f in p.iterdir()) / 1e6:.1f} MB"
                for p in backups(dest, layout.profile)] or [f"no backups of {layout.profile} in {dest}"]
    source = args.path
    if source is None:
        found = backups(dest, layout.profile)
        if not found:
            raise BackupError(f"no backup of profile {layout.profile} in {dest}; name one or pass --dest")
        source = found[-1]
    return [f"restoring {source}", *restore(layout, source, args.force)]


if __name__ == "__main__":
    sys.exit(main())
