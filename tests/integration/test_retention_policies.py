"""The local profile's retention defaults are the database's ``retention_policies`` (migration 0007)."""

from __future__ import annotations

import psycopg

from infra.retention import DEFAULT_KEEP, parse_interval


def test_local_defaults_equal_the_migrated_policies(db: psycopg.Connection) -> None:
    rows = dict(db.execute("SELECT hypertable, keep::text FROM retention_policies").fetchall())
    hypertables = {r[0] for r in db.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")}
    assert set(DEFAULT_KEEP) == hypertables  # every table of the schema has a local rule
    for table, keep in DEFAULT_KEEP.items():
        stored = rows.get(table)  # a hypertable without a row is kept, as --all-default does
        assert (stored is None) == (keep is None), table
        if keep is not None:
            assert stored == keep and parse_interval(keep).days == int(stored.split()[0]), table
