"""Outages of the real servers (issue 17, defect 11): TimescaleDB restarted, Redis unreachable.

The servers are the test's own, stopped and started for real (:mod:`tests.kit.servers`):
a throwaway TimescaleDB cluster in the ``infra/up`` chroot and a ``redis-server`` on a
spare port.  The writers are the ones the flow's sinks open (``open_stores(settings)``).

* TimescaleDB restarted while batches are written: every batch is stored once (the writer
  reconnects and writes the batch again; the caller waits meanwhile).
* Redis down for ``CRYPTOSTREAM_OUTAGE_S`` seconds (5 here; the chaos suite's full form: 60):
  the decision sink goes on storing to TimescaleDB, the event bus publishes every record
  kept during the outage once Redis is back, in order; the kill switch reads as engaged (no
  new risk) while Redis is down and the swap check reads "no change".
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import redis

from flows.execution.orders import Order, OrderStatus
from flows.operators.decisions import DecisionStep
from flows.records import Bar, Prediction
from flows.risk.engine import Rejection
from flows.settings import Settings, load_settings
from flows.sinks.decisions import DecisionSink
from flows.sinks.history import split_rows
from flows.stores import open_stores
from flows.stores.redis import RedisKillSwitch
from flows.wiring import SwapWatch, build_deps
from tests.kit.servers import OwnRedis, ThrowawayTimescale

TF = 60_000
SYMBOLS = ("BTC/USDT", "ETH/USDT")
OUTAGE_S = float(os.environ.get("CRYPTOSTREAM_OUTAGE_S", "5"))


def _bar(sym: str, k: int, px: float = 100.0) -> Bar:
    return Bar(sym, "1m", k * TF, px, px + 1, px - 1, px + 0.5, 50.0, 50.0 * px, 10, px, 25.0)


def _pred(sym: str, k: int, signal: int = 1, confidence: float = 0.4) -> Prediction:
    p = 0.5 + (confidence / 2 if signal == 1 else -confidence / 2)
    return Prediction(sym, "1m", (k + 1) * TF, {}, p, confidence, signal, float("nan"), {}, 0.0, 0.0005)


def _settings(tmp: Path, dsn: str, url: str) -> Settings:
    return load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp / "var"), "CRYPTOSTREAM_PROFILE": "timescale",
                              "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS), "TIMESCALE_DSN": dsn, "REDIS_URL": url,
                              "CRYPTOSTREAM_STORES__WRITE_RETRY_S": "120"})


def _count(dsn: str, query: str) -> Any:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchone()


def test_a_timescale_restart_mid_run_loses_and_repeats_no_row(tmp_path: Path) -> None:
    with ThrowawayTimescale() as ts, OwnRedis(tmp_path) as rd:
        settings = _settings(tmp_path, ts.dsn, rd.url)
        history = open_stores(settings).history_writer()
        decisions = DecisionSink(settings).open()
        restarted = threading.Event()

        def restart() -> None:
            ts.stop("fast")  # as `pg_ctl restart` or a package upgrade does: every connection is cut
            time.sleep(2.0)
            ts.start()
            restarted.set()

        batches, slow = 40, 0.0
        for k in range(batches):
            if k == 10:
                threading.Thread(target=restart, daemon=True).start()
                time.sleep(0.3)  # the server is going down: the next writes hit the outage
            t0 = time.monotonic()
            history.write(split_rows([_bar(s, k) for s in SYMBOLS]))
            decisions.write_batch([_pred(s, k) for s in SYMBOLS])
            slow = max(slow, time.monotonic() - t0)
        decisions.close()
        history.close()
        assert restarted.is_set()
        assert slow > 1.0, "a write waited for the server to come back"
        n, keys = _count(ts.dsn, "SELECT count(*), count(DISTINCT (symbol, ts)) FROM bars")
        assert n == keys == batches * len(SYMBOLS), "every bar stored exactly once"
        n, keys = _count(ts.dsn, "SELECT count(*), count(DISTINCT (symbol, ts)) FROM predictions")
        assert n == keys == batches * len(SYMBOLS), "every prediction stored exactly once"
        published = redis.Redis.from_url(rd.url).xlen("cryptostream:predictions")
        assert published == batches * len(SYMBOLS), "and published once"


def test_redis_down_publishing_recovers_and_the_kill_switch_fails_closed(tmp_path: Path, migrated_dsn: str) -> None:
    with OwnRedis(tmp_path) as rd:
        settings = _settings(tmp_path, migrated_dsn, rd.url)
        assert isinstance(open_stores(settings).kill_switch(), RedisKillSwitch)
        sink = DecisionSink(settings).open()
        deps = build_deps(settings)
        step = DecisionStep(SYMBOLS, TF, deps)
        swap = SwapWatch(open_stores(settings).swap_trigger().read)
        written: list[int] = []  # the ts of every prediction, in write order

        def close(k: int) -> list[Any]:
            preds = [_pred(s, k, signal=1 if k % 2 else -1, confidence=0.2 + 0.02 * (k % 10)) for s in SYMBOLS]
            step.on_predictions(preds)
            out = [o for s in SYMBOLS for o in step.on_bar(_bar(s, k, 100.0 + k))]
            sink.write_batch(preds + out)
            written.extend(p.ts for p in preds)
            return out

        before = [o for k in range(5) for o in close(k)]
        assert any(isinstance(o, Order) and o.status == OrderStatus.NEW for o in before), "trading before"
        sink.flush()  # as at an epoch's snapshot: the batch in flight is stored and published
        rd.kill()
        k, down = 5, []
        t_end = time.monotonic() + OUTAGE_S
        while time.monotonic() < t_end:
            t0 = time.monotonic()
            down += close(k)
            assert time.monotonic() - t0 < settings.stores.redis_timeout_s + 1.0, "the flow does not wait for Redis"
            assert swap.changed() is False, "unreadable swap key: no swap, no crash"
            k += 1
            time.sleep(0.1)
        new_risk = [o for o in down if isinstance(o, Order) and o.status == OrderStatus.NEW]
        assert new_risk == [], "no order while the kill switch cannot be read"
        blocked = {(r.symbol, r.rule) for r in down if isinstance(r, Rejection)}
        assert blocked == {(s, "kill_switch") for s in SYMBOLS}, "each close blocked by the kill switch"
        rd.start()  # empty (no persistence): the switch is off again
        after = [o for j in range(k, k + 5) for o in close(j)]
        sink.close()
        assert any(isinstance(o, Order) and o.status == OrderStatus.NEW for o in after), "trading again"
        n, keys = _count(migrated_dsn, "SELECT count(*), count(DISTINCT (symbol, ts)) FROM predictions")
        assert n == keys == len(written), "TimescaleDB got every prediction, Redis outage or not"
        entries = redis.Redis.from_url(rd.url).xrange("cryptostream:predictions")
        published = [orjson.loads(e[b"data"])["ts"] for _, e in entries]
        # Entries of the records written before the kill died with the server (no persistence):
        # everything from the outage on is published, in the order written.
        lost_with_server = 5 * len(SYMBOLS)
        assert len(published) == len(written) - lost_with_server, "every record kept during the outage published"
        stamps = [int(pd_ts(t)) for t in published]
        assert stamps == written[lost_with_server:], "in the order written"


def pd_ts(value: Any) -> int:
    """Return a stream document's ``ts`` (ISO text or ms) as ms since the epoch."""
    import pandas as pd

    return int(pd.Timestamp(value).value // 1_000_000) if isinstance(value, str) else int(value)


@pytest.mark.parametrize("unreadable", ["killed"])
def test_the_kill_switch_reads_engaged_while_redis_is_down(tmp_path: Path, unreadable: str) -> None:
    with OwnRedis(tmp_path) as rd:
        switch = RedisKillSwitch(rd.url, "cryptostream:kill", timeout_s=0.5)
        assert not switch.status()
        rd.kill()
        t0 = time.monotonic()
        st = switch.status()
        assert st.active and "unreadable" in st.reason and time.monotonic() - t0 < 2.0
        rd.start()
        assert not switch.status(), "released once Redis answers without the key"
