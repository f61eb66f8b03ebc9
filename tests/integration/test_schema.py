"""The schema on a real TimescaleDB: migrations, hypertables, upserts, roll-ups, retention."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest

from flows.feature_groups import GROUPS
from flows.stores.pgcopy import copy_upsert
from infra.db import MIGRATIONS_DIR, migrate

pytestmark = pytest.mark.integration

HYPERTABLES = {"bars": "7 days", "bar_features": "7 days", "cross_asset_features": "30 days",
               "predictions": "7 days", "orders": "30 days", "fills": "30 days",
               "portfolio_state": "30 days", "dead_letters": "7 days", "risk_events": "30 days",
               **{g.table: g.chunk for g in GROUPS}}  # the feature groups' tables (flows/feature_groups.py)
BAR_COLUMNS = ("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume", "quote_volume",
               "trade_count", "vwap", "taker_buy_volume")


def snapshot(conn: psycopg.Connection) -> dict[str, Any]:
    """Return the parts of the catalog a migration could change."""
    q = {
        "columns": "SELECT table_name, column_name, data_type, collation_name, is_nullable, column_default "
                   "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2",
        "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
                   "ORDER BY 1, 2",
        "hypertables": "SELECT hypertable_name, column_name, time_interval::text "
                       "FROM timescaledb_information.dimensions ORDER BY 1",
        "functions": "SELECT p.proname, md5(p.prosrc) FROM pg_proc p JOIN pg_namespace n "
                     "ON n.oid = p.pronamespace WHERE n.nspname = 'public' ORDER BY 1",
        "ledger": "SELECT track, version, name, checksum, applied_at FROM schema_migrations ORDER BY 1, 2",
        "policies": "SELECT * FROM retention_policies ORDER BY 1",
    }
    return {k: conn.execute(sql).fetchall() for k, sql in q.items()}  # type: ignore[arg-type]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m infra.db ...``."""
    return subprocess.run([sys.executable, "-m", "infra.db", *args], capture_output=True, text=True,
                          check=False, timeout=120)


def bar(symbol: str, ts: datetime, close: float, volume: float = 1.0) -> tuple[Any, ...]:
    """Return a bars row."""
    return (symbol, "1m", ts, close - 1, close + 1, close - 2, close, volume, close * volume, 3, close, 0.4)


def test_migrate_twice_changes_nothing(scratch_dsn: str) -> None:
    first = migrate(scratch_dsn)
    assert any(line.startswith("applied core 0001_") for line in first)
    with psycopg.connect(scratch_dsn) as conn:
        before = snapshot(conn)
    second = migrate(scratch_dsn)
    assert any("core: up to date" in line for line in second)
    assert not any(line.startswith("applied") for line in second)
    with psycopg.connect(scratch_dsn) as conn:
        assert snapshot(conn) == before


def test_hypertables_exist_with_their_chunk_intervals(db: psycopg.Connection) -> None:
    rows = db.execute("SELECT d.hypertable_name, d.column_name, d.time_interval "
                      "FROM timescaledb_information.dimensions d "
                      "JOIN timescaledb_information.hypertables h USING (hypertable_schema, hypertable_name)"
                      ).fetchall()
    assert {r[0] for r in rows} == set(HYPERTABLES)
    for name, column, interval in rows:
        assert column == "ts"
        assert interval == timedelta(days=int(HYPERTABLES[name].split()[0]))


def test_primary_keys_are_the_natural_keys(db: psycopg.Connection) -> None:
    keys = dict(db.execute(
        "SELECT c.conrelid::regclass::text, array_agg(a.attname ORDER BY k.ord)::text[] FROM pg_constraint c "
        "CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord) "
        "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum "
        "WHERE c.contype = 'p' AND c.connamespace = 'public'::regnamespace GROUP BY 1").fetchall())
    assert keys["bars"] == ["symbol", "timeframe", "ts"]
    assert keys["bar_features"] == ["symbol", "timeframe", "ts"]
    assert keys["predictions"] == ["symbol", "timeframe", "ts", "model"]
    assert keys["orders"] == ["client_order_id", "ts"]
    assert keys["fills"] == ["fill_id", "ts"]
    assert keys["portfolio_state"] == ["run_id", "ts"]
    assert keys["dead_letters"] == ["source", "ts", "payload_md5"]


def test_same_bar_upserted_twice_is_one_row_with_the_second_values(db: psycopg.Connection) -> None:
    t = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
    copy_upsert(db, "bars", BAR_COLUMNS, [bar("BTC/USDT", t, 100.0)])
    copy_upsert(db, "bars", BAR_COLUMNS, [bar("BTC/USDT", t, 101.5, volume=7.0)])
    assert db.execute("SELECT close, volume FROM bars").fetchall() == [(101.5, 7.0)]
    # The plain SQL upsert any writer may use gives the same result.
    db.execute("INSERT INTO bars (symbol, timeframe, ts, open, high, low, close, volume) "
               "VALUES ('BTC/USDT', '1m', %s, 1, 2, 0.5, 1.5, 9) ON CONFLICT (symbol, timeframe, ts) "
               "DO UPDATE SET close = EXCLUDED.close, volume = EXCLUDED.volume", (t,))
    assert db.execute("SELECT close, volume FROM bars").fetchall() == [(1.5, 9.0)]


def test_latest_bar_is_an_index_scan_of_the_primary_key(db: psycopg.Connection) -> None:
    t0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
    copy_upsert(db, "bars", BAR_COLUMNS,
                [bar(s, t0 + timedelta(minutes=i), 100.0 + i) for s in ("BTC/USDT", "ETH/USDT") for i in range(500)])
    db.execute("ANALYZE bars")
    db.execute("SET enable_seqscan = off")  # tiny table: make the planner show its index choice
    plan = "\n".join(r[0] for r in db.execute(
        "EXPLAIN SELECT * FROM bars WHERE symbol = 'ETH/USDT' AND timeframe = '1m' ORDER BY ts DESC LIMIT 1"))
    assert "Index Scan Backward using" in plan and "pkey" in plan, plan
    latest = db.execute("SELECT close FROM bars WHERE symbol = 'ETH/USDT' AND timeframe = '1m' "
                        "ORDER BY ts DESC LIMIT 1").fetchone()
    assert latest == (599.0,)


def test_rollup_builds_hourly_bars_from_minute_bars(db: psycopg.Connection) -> None:
    t0 = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)
    rows = [bar("BTC/USDT", t0 + timedelta(minutes=i), 100.0 + i, volume=1.0 + i % 3) for i in range(150)]
    copy_upsert(db, "bars", BAR_COLUMNS, rows)
    out = db.execute("SELECT ts, open, high, low, close, volume, trade_count, source_bars "
                     "FROM bars_rollup('1m', INTERVAL '1 hour', %s, %s)", (t0, t0 + timedelta(days=1))).fetchall()
    assert [r[0] for r in out] == [t0, t0 + timedelta(hours=1), t0 + timedelta(hours=2)]
    first = out[0]
    hour = rows[:60]
    assert first[1:5] == (hour[0][3], max(r[4] for r in hour), min(r[5] for r in hour), hour[-1][6])
    assert first[5] == pytest.approx(sum(r[7] for r in hour))
    assert first[6] == 3 * 60 and first[7] == 60
    assert out[2][7] == 30  # the incomplete last hour says so


def test_retention_drops_old_chunks_and_keeps_recent(db: psycopg.Connection, migrated_dsn: str) -> None:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    ages = (200, 100, 1)
    copy_upsert(db, "bars", BAR_COLUMNS, [bar("BTC/USDT", now - timedelta(days=d), 100.0) for d in ages])
    dry = cli("retention", "--dsn", migrated_dsn, "--table", "bars", "--older-than", "90 days", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "bars: would drop 2 chunk(s) older than 90 days" in dry.stdout
    assert db.execute("SELECT count(*) FROM bars").fetchone() == (3,)
    done = cli("retention", "--dsn", migrated_dsn, "--table", "bars", "--older-than", "90 days")
    assert done.returncode == 0, done.stderr
    assert "bars: dropped 2 chunk(s) older than 90 days: _timescaledb_internal._hyper_" in done.stdout
    assert db.execute("SELECT ts FROM bars").fetchall() == [(now - timedelta(days=1),)]


def test_retention_defaults_follow_the_policy_table(db: psycopg.Connection, migrated_dsn: str) -> None:
    now = datetime.now(timezone.utc)
    rows = [(now - timedelta(days=d), "ws", None, "bad json", f"payload {d}") for d in (60, 2)]
    copy_upsert(db, "dead_letters", ("ts", "source", "symbol", "reason", "payload"), rows)
    copy_upsert(db, "bars", BAR_COLUMNS, [bar("BTC/USDT", now - timedelta(days=400), 1.0)])
    done = cli("retention", "--dsn", migrated_dsn, "--all-default")
    assert done.returncode == 0, done.stderr
    assert "dead_letters: dropped 1 chunk(s) older than 30 days" in done.stdout
    assert "bars: kept (no retention policy)" in done.stdout
    assert db.execute("SELECT payload FROM dead_letters").fetchall() == [("payload 2",)]
    assert db.execute("SELECT count(*) FROM bars").fetchone() == (1,)


def test_community_features_skipped_on_the_apache_edition(scratch_dsn: str) -> None:
    report = migrate(scratch_dsn)
    with psycopg.connect(scratch_dsn) as conn:
        license_ = conn.execute("SELECT current_setting('timescaledb.license')").fetchone()
        community = conn.execute("SELECT count(*) FROM schema_migrations WHERE track = 'community'").fetchone()
        cagg = conn.execute("SELECT to_regclass('bars_1h')").fetchone()
    if license_ != ("apache",):
        assert community is not None and community[0] >= 2 and cagg != (None,)
        pytest.skip("community build: the optional migrations were applied (checked above)")
    assert any(line.startswith("community: skipped") and "apache" in line for line in report)
    assert community == (0,) and cagg == (None,)


def test_changed_applied_migration_is_refused(scratch_dsn: str, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    migrate(scratch_dsn, migrations)
    edited = sorted(migrations.glob("0002_*.sql"))[0]
    edited.write_text(edited.read_text() + "\n-- an innocent-looking edit\n")
    (migrations / "0099_new_table.sql").write_text("CREATE TABLE must_not_exist (x int);\n")
    done = cli("migrate", "--dsn", scratch_dsn, "--migrations-dir", str(migrations))
    assert done.returncode == 2
    assert f"{edited} changed after it was applied" in done.stderr
    with psycopg.connect(scratch_dsn) as conn:  # refused before anything was applied
        assert conn.execute("SELECT to_regclass('must_not_exist')").fetchone() == (None,)


def test_status_reports_extension_migrations_and_hypertables(migrated_dsn: str) -> None:
    done = cli("status", "--dsn", migrated_dsn)
    assert done.returncode == 0, done.stderr
    assert "timescaledb 2." in done.stdout and "license" in done.stdout
    assert "core      0001_bars" in done.stdout
    assert all(name in done.stdout for name in HYPERTABLES)
