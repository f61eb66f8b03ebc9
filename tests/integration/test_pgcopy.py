"""flows.stores.pgcopy on a real TimescaleDB: idempotent bulk upserts through both paths."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from flows.stores.pgcopy import copy_rows, copy_upsert, primary_key

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
COLS = ("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume")


def bar(i: int, close: float, symbol: str = "BTC/USDT") -> tuple[Any, ...]:
    """Return a minimal bars row at minute ``i``."""
    return (symbol, "1m", T0 + timedelta(minutes=i), close, close, close, close, 1.0)


def closes(db: psycopg.Connection) -> list[tuple[Any, ...]]:
    """Return (symbol, minute, close) of every bar, in key order."""
    rows = db.execute("SELECT symbol, ts, close FROM bars ORDER BY symbol, ts").fetchall()
    return [(s, int((ts - T0).total_seconds() // 60), c) for s, ts, c in rows]


@pytest.mark.parametrize("fast_path", [True, False])
def test_insert_replay_and_revision(db: psycopg.Connection, fast_path: bool) -> None:
    assert copy_upsert(db, "bars", COLS, [bar(i, 1.0) for i in range(100)], fast_path=fast_path) == 100
    assert copy_upsert(db, "bars", COLS, [bar(i, 1.0) for i in range(100)], fast_path=fast_path) == 0
    revised = [bar(i, 2.0 if i % 10 == 0 else 1.0) for i in range(100)] + [bar(100, 3.0)]
    assert copy_upsert(db, "bars", COLS, revised, fast_path=fast_path) == 11
    assert closes(db) == [("BTC/USDT", i, 2.0 if i % 10 == 0 else 1.0) for i in range(100)] + [
        ("BTC/USDT", 100, 3.0)]


def test_a_key_twice_in_one_batch_keeps_the_last_version(db: psycopg.Connection) -> None:
    batch = (bar(i, float(v)) for v in range(3) for i in range(5))  # a generator, consumed once
    copy_upsert(db, "bars", COLS, batch)
    assert closes(db) == [("BTC/USDT", i, 2.0) for i in range(5)]


def test_update_columns_limit_what_changes(db: psycopg.Connection) -> None:
    copy_upsert(db, "bars", COLS, [bar(0, 1.0)])
    changed = ("BTC/USDT", "1m", T0, 9.0, 9.0, 9.0, 9.0, 5.0)
    copy_upsert(db, "bars", COLS, [changed], update_columns=["volume"])
    assert db.execute("SELECT close, volume FROM bars").fetchone() == (1.0, 5.0)


def test_created_at_is_kept_on_update_when_not_written(db: psycopg.Connection) -> None:
    cols = ("symbol", "timeframe", "ts", "ret_1")
    copy_upsert(db, "bar_features", cols, [("BTC/USDT", "1m", T0, 0.1)])
    first = db.execute("SELECT created_at FROM bar_features").fetchone()
    copy_upsert(db, "bar_features", cols, [("BTC/USDT", "1m", T0, 0.2)])
    assert db.execute("SELECT created_at, ret_1 FROM bar_features").fetchone() == (first[0], 0.2)  # type: ignore[index]


def test_generated_key_dead_letters_stay_one_row(db: psycopg.Connection) -> None:
    assert primary_key(db, "dead_letters") == ("source", "ts", "payload_md5")
    cols = ("ts", "source", "symbol", "reason", "payload")
    row = (T0, "binance_ws", None, "invalid json", '{"e": "trade", ')
    assert copy_upsert(db, "dead_letters", cols, [row, row]) == 1
    assert copy_upsert(db, "dead_letters", cols, [row]) == 0
    other = (T0, "binance_ws", None, "invalid json", '{"e": "trade"')
    assert copy_upsert(db, "dead_letters", cols, [other]) == 1
    assert db.execute("SELECT count(*) FROM dead_letters").fetchone() == (2,)


def test_jsonb_and_smallint_columns_round_trip(db: psycopg.Connection) -> None:
    cols = ("symbol", "timeframe", "ts", "model", "model_version", "prob_up", "confidence", "signal",
            "payload", "run_id")
    payload = {"members": {"lightgbm": 0.61, "lstm": 0.55}, "feature_hash": "abc"}
    copy_upsert(db, "predictions", cols, [("BTC/USDT", "1m", T0, "ensemble", "v1", 0.58, 0.16, 1, payload, "r1")])
    assert db.execute("SELECT signal, payload FROM predictions").fetchone() == (1, payload)


def test_a_bad_row_writes_nothing_and_leaves_the_connection_usable(db: psycopg.Connection) -> None:
    copy_upsert(db, "bars", COLS, [bar(0, 1.0)])
    bad = [bar(0, 5.0), bar(1, 5.0), ("BTC/USDT", "1m", T0, None, 1.0, 1.0, 1.0, 1.0)]
    with pytest.raises(psycopg.errors.NotNullViolation):
        copy_upsert(db, "bars", COLS, bad)
    assert closes(db) == [("BTC/USDT", 0, 1.0)]
    with db.transaction():  # inside a caller's transaction: a savepoint, the batch is atomic
        copy_upsert(db, "bars", COLS, [bar(1, 1.0)])
        copy_upsert(db, "bars", COLS, [bar(1, 2.0), bar(2, 2.0)])
    assert closes(db) == [("BTC/USDT", 0, 1.0), ("BTC/USDT", 1, 2.0), ("BTC/USDT", 2, 2.0)]


def test_copy_rows_appends_and_refuses_duplicates(db: psycopg.Connection) -> None:
    assert copy_rows(db, "bars", COLS, [bar(i, 1.0, "ETH/USDT") for i in range(10)]) == 10
    with pytest.raises(psycopg.errors.UniqueViolation):
        copy_rows(db, "bars", COLS, [bar(3, 1.0, "ETH/USDT")])
    assert db.execute("SELECT count(*) FROM bars").fetchone() == (10,)


def test_unknown_column_is_a_clear_error(db: psycopg.Connection) -> None:
    with pytest.raises(ValueError, match="no column"):
        copy_upsert(db, "bars", ("symbol", "timeframe", "ts", "closing_price"), [])
