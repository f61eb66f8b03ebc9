"""Decision sinks on the timescale profile: rows upserted (a replay adds none), events on Redis streams."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
import orjson
import psycopg
import pytest
import redis
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig
from bytewax.testing import TestingSource, run_main

from flows.settings import load_settings
from flows.sinks.decisions import PARTITION, DecisionSink
from tests.kit.decision_records import TS, records


@pytest.fixture
def settings(migrated_dsn, redis_url):
    """Settings of the timescale profile on the scratch database and Redis db 9."""
    return load_settings(env={"CRYPTOSTREAM_PROFILE": "timescale", "TIMESCALE_DSN": migrated_dsn,
                              "REDIS_URL": redis_url.rsplit("/", 1)[0] + "/9"})


def test_rows_are_upserted_and_published(settings, migrated_dsn) -> None:
    r = redis.Redis.from_url(settings.redis_url.get_secret_value())
    r.delete("cryptostream:predictions", "cryptostream:portfolio_state")
    part = DecisionSink(settings).open()
    part.write_batch(records())
    part.write_batch(records())  # a replayed batch: same rows, no duplicates
    part.snapshot()  # what Bytewax calls before it commits an epoch: both batches are stored by then
    with psycopg.connect(migrated_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM predictions").fetchone() == (2,)
    assert r.xlen("cryptostream:predictions") == 4
    part.close()
    with psycopg.connect(migrated_dsn) as conn:
        preds = conn.execute("SELECT symbol, model, model_version, prob_up, signal, payload FROM predictions "
                             "ORDER BY symbol").fetchall()
        port = conn.execute("SELECT equity, positions, state, leverage FROM portfolio_state").fetchall()
    assert [(p[0], p[1], p[2], p[3], p[4]) for p in preds] == [
        ("BTC/USDT", "ensemble", "v1", 0.58, 1), ("ETH/USDT", "ensemble", "v1", 0.58, 1)]
    assert preds[0][5]["members"] == {"lightgbm": 0.6, "lstm": None} and preds[0][5]["rl_target"] == 0.25
    assert port == [(10_010.0, {"BTC/USDT": 0.015}, {"cash": 9_000.0}, 0.1)]
    assert r.xlen("cryptostream:predictions") == 4 and r.xlen("cryptostream:portfolio_state") == 2
    entries = [orjson.loads(fields[b"data"]) for _, fields in r.xrange("cryptostream:predictions")]
    assert [e["symbol"] for e in entries] == ["BTC/USDT", "ETH/USDT"] * 2, "one entry per record, in order"
    assert entries[0]["payload"] == {"members": {"lightgbm": 0.6, "lstm": None}, "rl_target": 0.25,
                                     "versions": {"ensemble": "v1", "lightgbm": "v2"}}
    assert entries[0]["ts"] == "2024-06-03T07:33:20+00:00" and entries[0]["prob_up"] == 0.58
    (_, port_doc), = r.xrange("cryptostream:portfolio_state", count=1)
    assert orjson.loads(port_doc[b"data"])["state"] == {"cash": 9_000.0}


def test_an_order_changed_twice_in_a_batch_is_stored_once_in_its_last_state(settings, migrated_dsn) -> None:
    from flows.execution.orders import Order, OrderStatus, client_order_id
    from flows.records import OrderIntent

    r = redis.Redis.from_url(settings.redis_url.get_secret_value())
    r.delete("cryptostream:orders")
    intent = OrderIntent("cs", "SOL/USDT", "buy", 1.0, "market", None, None, TS, "entry", "test")
    cid = client_order_id("cs", "SOL/USDT", TS, "entry")
    placed, filled = Order(cid, intent, OrderStatus.NEW, updated_ts=TS), \
        Order(cid, intent, OrderStatus.FILLED, 1.0, 20.0, updated_ts=TS + 60_000)
    part = DecisionSink(settings).open()
    part.write_batch([placed, filled])
    canceled = Order("cs.SOL/USDT.other.e", intent, OrderStatus.CANCELED, updated_ts=TS)
    part.write_batch([filled, canceled])  # the stored key again, with a new one
    part.close()
    with psycopg.connect(migrated_dsn) as conn:
        rows = conn.execute("SELECT client_order_id, status FROM orders WHERE symbol = 'SOL/USDT' "
                            "ORDER BY client_order_id").fetchall()
    assert rows == [(cid, "FILLED"), ("cs.SOL/USDT.other.e", "CANCELED")]
    events = [orjson.loads(f[b"data"])["status"] for _, f in r.xrange("cryptostream:orders")]
    assert events == ["NEW", "FILLED", "FILLED", "CANCELED"], "every change is an event"


def test_a_refused_batch_raises_by_its_snapshot_and_publishes_nothing(settings, migrated_dsn) -> None:
    r = redis.Redis.from_url(settings.redis_url.get_secret_value())
    r.delete("cryptostream:predictions", "cryptostream:portfolio_state")
    bad = records()
    bad[1] = bad[1]._replace(symbol=None)  # predictions.symbol is NOT NULL
    part = DecisionSink(settings).open()
    part.write_batch(bad)  # handed to the writer thread; its error comes back at the epoch's snapshot at the latest
    with pytest.raises(psycopg.errors.NotNullViolation):
        part.snapshot()
    assert r.xlen("cryptostream:predictions") == 0 and r.xlen("cryptostream:portfolio_state") == 0
    part.write_batch(records())  # the writer goes on after a refused batch
    part.close()
    assert r.xlen("cryptostream:predictions") == 2
    with psycopg.connect(migrated_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM predictions WHERE ts = to_timestamp(%s / 1000.0)",
                            (TS,)).fetchone() == (2,)


class _HeldSink(DecisionSink):
    """The real timescale sink whose writer thread waits for ``release`` before its first write."""

    def __init__(self, settings, release: threading.Event) -> None:
        super().__init__(settings)
        self.release = release

    def build_part(self, step_id, for_part, resume_state):
        part = super().build_part(step_id, for_part, resume_state)
        write = part._write

        def held(*args):
            self.release.wait(30)
            write(*args)

        part._write = held
        return part


def _committed(recovery: Path) -> int:
    with sqlite3.connect(recovery / "part-0.sqlite3") as db:
        row = db.execute("SELECT max(commit_epoch) FROM commits").fetchone()
    return row[0] or 0


def test_no_epoch_commits_while_its_batch_is_still_being_written(settings, migrated_dsn, tmp_path) -> None:
    """The sink's snapshot waits for the batch in flight, so Bytewax cannot commit an epoch before its rows are stored.

    Every item is its own epoch.  While the writer thread holds the first batch, no epoch
    may commit (without the wait in ``snapshot``, epoch 1 commits with its rows unwritten,
    and a kill then would lose them for good: the restart resumes after epoch 1).
    """
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True)
    items = [r._replace(ts=TS + 60_000 * i) for i in range(12) for r in records()]
    release = threading.Event()
    flow = Dataflow("held_sink")
    keyed = op.key_on("key", op.input("in", flow, TestingSource(items)), lambda _: PARTITION)
    op.output("out", keyed, _HeldSink(settings, release))
    runner = threading.Thread(target=run_main, args=(flow,),
                              kwargs={"epoch_interval": timedelta(0), "recovery_config": RecoveryConfig(recovery)})
    runner.start()
    try:
        time.sleep(3)
        held_at = _committed(recovery)
        with psycopg.connect(migrated_dsn) as conn:
            stored = conn.execute("SELECT count(*) FROM predictions").fetchone()[0]
    finally:
        release.set()
        runner.join(60)
    assert stored == 0, "the writer was held: nothing can be stored yet"
    assert held_at == 0, f"epoch {held_at} committed while its rows were not stored"
    assert _committed(recovery) > 10, "once written, the epochs commit"
    with psycopg.connect(migrated_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM predictions").fetchone()[0] == 24
