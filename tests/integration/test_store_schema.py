"""The stores' schema description (``flows.stores.schema``) equals the migrated database's tables."""

from __future__ import annotations

import psycopg
import pytest

from flows.stores.schema import TABLES

pytestmark = pytest.mark.integration


def _columns(conn: psycopg.Connection, table: str) -> list[str]:
    rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
                        "AND table_name = %s ORDER BY ordinal_position", (table,)).fetchall()
    return [r[0] for r in rows]


def _primary_key(conn: psycopg.Connection, table: str) -> tuple[str, ...]:
    rows = conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary "
        "ORDER BY array_position(i.indkey, a.attnum)", (table,)).fetchall()
    return tuple(r[0] for r in rows)


@pytest.mark.parametrize("table", sorted(TABLES))
def test_each_described_table_has_the_migrations_columns_and_key(db: psycopg.Connection, table: str) -> None:
    t = TABLES[table]
    stored = _columns(db, table)
    assert stored, f"{table} is not in sql/migrations"
    assert set(t.columns) <= set(stored), "every written column exists (writers name them: order is free)"
    assert set(stored) - set(t.columns) == set(t.stored), "the rest are filled by the database"
    assert _primary_key(db, table) == t.key


def test_every_hypertable_of_the_migrations_is_described(db: psycopg.Connection) -> None:
    hyper = {r[0] for r in db.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")}
    assert hyper == set(TABLES)
