"""Bulk, idempotent writes to PostgreSQL / TimescaleDB with binary COPY.

``copy_upsert`` writes a batch in one transaction:

1. fast path: ``COPY ... (FORMAT BINARY)`` straight into the table, under a
   savepoint.  New rows (the live flow's normal case) go in at raw COPY speed,
   which on a hypertable is TimescaleDB's batched multi-insert path;
2. if any key already exists (a replay, a restart, a revised bar, a key twice in
   the batch), the savepoint is rolled back and the batch is COPYed into a
   session-local staging table and merged with one
   ``INSERT ... SELECT ... ON CONFLICT (key) DO UPDATE``; rows whose values did not
   change are not rewritten.

Either way the result equals a row-by-row upsert in batch order (last version of
a key wins), at a fraction of the cost of ``executemany`` (figures:
``tests/bench/bench_ingest.py``).

``copy_rows`` is the raw append (COPY straight into the table) for loads that are
known not to collide with existing keys.

Rows are sequences in ``columns`` order, with Python values of the columns' types
(timezone-aware ``datetime`` for ``timestamptz``, ``float``, ``int``, ``str``,
``dict`` / ``list`` for ``jsonb``, ``None`` for NULL).
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql


@dataclass(frozen=True)
class _Plan:
    types: tuple[int, ...]
    prepare: bytes  # create (once per session) and empty the staging table
    copy: sql.Composed  # into the staging table
    merge: sql.Composed
    fast: sql.Composed | None  # COPY straight into the table; None if the key is not unique


_plans: weakref.WeakKeyDictionary[psycopg.Connection[Any], dict[tuple[Any, ...], _Plan]] = (
    weakref.WeakKeyDictionary())


def _ident(table: str) -> sql.Identifier:
    """Return ``name`` or ``schema.name`` as an identifier (resolved by search_path if unqualified)."""
    return sql.Identifier(*table.split("."))


def table_columns(conn: psycopg.Connection[Any], table: str) -> dict[str, int]:
    """Return ``{column: type oid}`` of a table, in column order."""
    rows = conn.execute(
        "SELECT a.attname, a.atttypid FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) "
        "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum", (table,)).fetchall()
    if not rows:
        raise ValueError(f"table {table!r} does not exist (or has no columns)")
    return {str(r[0]): int(r[1]) for r in rows}


def primary_key(conn: psycopg.Connection[Any], table: str) -> tuple[str, ...]:
    """Return the primary key columns of a table, in key order (empty if it has none)."""
    rows = conn.execute(
        "SELECT a.attname FROM pg_index i "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) "
        "WHERE i.indrelid = to_regclass(%s) AND i.indisprimary "
        "ORDER BY array_position(i.indkey::int2[], a.attnum)", (table,)).fetchall()
    return tuple(str(r[0]) for r in rows)


def _plan(conn: psycopg.Connection[Any], table: str, columns: tuple[str, ...],
          key_columns: tuple[str, ...] | None, update_columns: tuple[str, ...] | None,
          dedupe: bool) -> _Plan:
    cache = _plans.setdefault(conn, {})
    cache_key = (table, columns, key_columns, update_columns, dedupe)
    if cache_key in cache:
        return cache[cache_key]
    known = table_columns(conn, table)
    missing = [c for c in columns if c not in known]
    if missing:
        raise ValueError(f"{table} has no column(s) {missing}")
    keys = key_columns or primary_key(conn, table)
    if not keys:
        raise ValueError(f"{table} has no primary key; pass key_columns")
    updates = update_columns if update_columns is not None else tuple(c for c in columns if c not in keys)
    target = _ident(table)
    stage = sql.Identifier("_stage_" + table.rpartition(".")[2] + "_" +
                           hashlib.sha1(",".join(columns).encode()).hexdigest()[:8])
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    prepare = sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {stage} AS SELECT {cols} FROM {target} WITH NO DATA; "
                      "TRUNCATE {stage}").format(stage=stage, cols=cols, target=target)
    source = sql.SQL("SELECT {cols} FROM {stage}").format(cols=cols, stage=stage)
    # A key generated in the target (dead_letters.payload_md5) is not in the stage:
    # such rows are immutable by construction, the first copy wins.
    keys_in_stage = all(k in columns for k in keys)
    if dedupe and keys_in_stage:
        # Several versions of one key in a batch: keep the last one written.  The stage
        # is truncated and then filled by one COPY, so ctid order is write order.
        k = sql.SQL(", ").join(map(sql.Identifier, keys))
        source = sql.SQL("SELECT DISTINCT ON ({k}) {cols} FROM {stage} ORDER BY {k}, ctid DESC").format(
            k=k, cols=cols, stage=stage)
    conflict = sql.SQL(", ").join(map(sql.Identifier, keys))
    action: sql.Composable = sql.SQL("DO NOTHING")
    if updates and keys_in_stage:
        sets = sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in updates)
        old = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in updates)
        new = sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in updates)
        action = sql.SQL("DO UPDATE SET {sets} WHERE ({old}) IS DISTINCT FROM ({new})").format(
            sets=sets, old=old, new=new)
    merge = sql.SQL("INSERT INTO {target} AS t ({cols}) {source} ON CONFLICT ({conflict}) {action}").format(
        target=target, cols=cols, source=source, conflict=conflict, action=action)
    # The fast path relies on a unique index on the key raising UniqueViolation.
    fast = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(target, cols) \
        if key_columns is None or tuple(keys) == primary_key(conn, table) else None
    plan = _Plan(types=tuple(known[c] for c in columns), prepare=prepare.as_bytes(conn),
                 copy=sql.SQL("COPY {stage} ({cols}) FROM STDIN (FORMAT BINARY)").format(stage=stage, cols=cols),
                 merge=merge, fast=fast)
    cache[cache_key] = plan
    return plan


def copy_upsert(conn: psycopg.Connection[Any], table: str, columns: Sequence[str],
                rows: Iterable[Sequence[Any]], key_columns: Sequence[str] | None = None, *,
                update_columns: Sequence[str] | None = None, dedupe: bool = True,
                fast_path: bool = True) -> int:
    """Upsert rows into ``table``: binary COPY, merged on the key when keys collide.

    Runs in one transaction (a savepoint if the connection is already in one), so a
    batch is written entirely or not at all.

    Args:
        conn: an open psycopg connection (autocommit or not).
        table: target table, ``name`` or ``schema.name``.
        columns: the columns the rows hold, in order.
        rows: the rows; any iterable (materialized once if ``fast_path``).
        key_columns: the conflict key; default the table's primary key.
        update_columns: columns overwritten on conflict; default every non-key column
            given.  Columns not given (e.g. ``created_at``) keep their stored value.
        dedupe: if several rows of the batch share a key, keep the last one (costs a
            sort of the batch on the merge path; pass False only when keys are unique).
        fast_path: try a plain COPY into the table first (see the module docstring);
            pass False for batches that are mostly known to exist already.

    Returns:
        The number of rows inserted or changed (unchanged replays are not counted).
    """
    plan = _plan(conn, table, tuple(columns), tuple(key_columns) if key_columns else None,
                 tuple(update_columns) if update_columns is not None else None, dedupe)
    if fast_path and plan.fast is not None:
        batch = rows if isinstance(rows, Sequence) else list(rows)
        try:
            with conn.transaction(), conn.cursor() as cur:
                _copy(cur, plan.fast, plan.types, batch)
                return len(batch)
        except psycopg.errors.UniqueViolation:
            rows = batch  # some key exists already: merge
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(plan.prepare)
        _copy(cur, plan.copy, plan.types, rows)
        cur.execute(plan.merge)
        return cur.rowcount


def _copy(cur: psycopg.Cursor[Any], statement: sql.Composed, types: Sequence[int],
          rows: Iterable[Sequence[Any]]) -> None:
    with cur.copy(statement) as copy:
        copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)


def copy_rows(conn: psycopg.Connection[Any], table: str, columns: Sequence[str],
              rows: Iterable[Sequence[Any]]) -> int:
    """Append rows with binary COPY straight into ``table``; a duplicate key fails the batch.

    Returns:
        The number of rows written.
    """
    types = table_columns(conn, table)
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        _ident(table), sql.SQL(", ").join(map(sql.Identifier, columns)))
    with conn.transaction(), conn.cursor() as cur:
        _copy(cur, statement, [types[c] for c in columns], rows)
        return cur.rowcount
