"""``python -m infra.db backup`` / ``restore`` on the ``timescale`` profile, against a scratch database.

The scratch database is the only one dropped ("wiped") and restored: the shared ``cryptostream``
database of ``infra/up`` and other tests' databases are never touched.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.kit.backups import database_digest, fill, profile_env, run_db


def _drop(dsn: str) -> None:
    with psycopg.connect(make_conninfo(dsn, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(conninfo_to_dict(dsn)["dbname"])))


def test_backup_drop_restore_gives_every_table_back_identical(tmp_path: Path, migrated_dsn: str,
                                                              redis_url: str) -> None:
    env = profile_env(tmp_path, "timescale", migrated_dsn)
    fill(env, bars_per_symbol=2000, redis_url=redis_url)
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:  # Feast's online store lives in the database too
        conn.execute("CREATE SCHEMA feast_online; CREATE TABLE feast_online.cryptostream_bar_features_1m "
                     "(entity_key bytea, feature_name text, value bytea, event_ts timestamptz)")
        conn.execute("INSERT INTO feast_online.cryptostream_bar_features_1m VALUES ('\\x01', 'ret_1', '\\x02', now())")
    before = database_digest(migrated_dsn)
    assert before["public.bars"][0] == 4000 and before["public.fills"][0] > 0
    assert before["feast_online.cryptostream_bar_features_1m"][0] == 1
    registry = Path(env["CRYPTOSTREAM_DATA_DIR"]) / "registry"
    model = (registry / "lightgbm" / "v20240101T000000" / "model.onnx").read_bytes()

    done = run_db(env, "backup")
    assert done.returncode == 0, done.stderr
    _drop(migrated_dsn)
    (registry / "lightgbm" / "v20240101T000000" / "model.onnx").unlink()
    done = run_db(env, "restore")
    assert done.returncode == 2 and "pass --force" in done.stderr  # the registry still holds files
    done = run_db(env, "restore", "--force")
    assert done.returncode == 0, done.stderr
    assert "rows and checksums equal to the backup" in done.stdout

    assert database_digest(migrated_dsn) == before
    assert (registry / "lightgbm" / "v20240101T000000" / "model.onnx").read_bytes() == model
    with psycopg.connect(migrated_dsn) as conn:  # hypertables again, not plain tables
        hyper = {r[0] for r in conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")}
        assert {"bars", "bar_features", "fills", "orders", "portfolio_state", "predictions"} <= hyper
        row = conn.execute("SELECT count(*) FROM bars WHERE ts >= '2024-01-01 12:00+00'").fetchone()
        assert row is not None and row[0] > 0  # chunk exclusion works on the restored catalog


def test_restore_refuses_a_database_with_tables_without_force(tmp_path: Path, migrated_dsn: str,
                                                              redis_url: str) -> None:
    env = profile_env(tmp_path, "timescale", migrated_dsn)
    fill(env, bars_per_symbol=100, redis_url=redis_url)
    assert run_db(env, "backup").returncode == 0
    with psycopg.connect(migrated_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM fills")
    for d in ("registry",):
        for f in sorted((Path(env["CRYPTOSTREAM_DATA_DIR"]) / d).rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
    for f in (Path(env["CRYPTOSTREAM_FEAST_REPO"]) / "data").glob("*.db"):
        f.unlink()
    done = run_db(env, "restore")
    assert done.returncode == 2 and "holds" in done.stderr and "pass --force" in done.stderr
    assert database_digest(migrated_dsn)["public.fills"][0] == 0
