"""SIGKILL twice and restart with the ``timescale`` decision sink (TimescaleDB + Redis streams).

The decision sink writes each batch on a writer thread while the flow goes on, and
waits for it in the partition's ``snapshot``, which Bytewax calls before it commits an
epoch.  If that wait were missing, a kill right after a commit would lose the batch in
flight for good (the restart resumes after the committed epoch).  The same replay as
``tests/e2e/test_decisions_restart.py`` is killed twice and restarted; the predictions
stored in TimescaleDB must equal the uninterrupted local reference's, no client order
id may be stored twice, and the last portfolio row must equal the reference's.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import psycopg
import pytest
import redis

from flows import feast_store
from flows.settings import load_settings
from infra.replay_exchange.server import running_replay
from tests.kit.paper import KILLS, LIVE, SYMBOLS, reference, registry  # noqa: F401  (fixtures)
from tests.kit.paper import candle_files as _files
from tests.kit.paper import decision_table as _table
from tests.kit.paper import paper_env as _env
from tests.kit.paper import stored_predictions as _predictions
from tests.kit.recovery import kill_at_and_finish
from tests.kit.replay import with_history
from tests.kit.repo import copy_feature_repo


def _stored(dsn: str, query: str) -> pd.DataFrame:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(query)
        return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])


def test_sigkill_twice_with_the_timescale_sink_loses_and_repeats_nothing(
        shared_data, registry, reference, migrated_dsn, redis_url, tmp_path) -> None:  # noqa: F811
    url = redis_url.rsplit("/", 1)[0] + "/10"
    redis.Redis.from_url(url).flushdb()
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True)
    with running_replay(_files(shared_data), speed=3600, end=LIVE[1], **with_history(LIVE[0], "5m"), seed=5) as ex:
        ex.engine.wait_for_streams = len(SYMBOLS)
        env = {**_env(tmp_path / "var", copy_feature_repo(tmp_path), ex, registry),
               "CRYPTOSTREAM_PROFILE": "timescale", "TIMESCALE_DSN": migrated_dsn, "REDIS_URL": url}
        feast_store.apply(load_settings(env=env))
        kill_at_and_finish(ex, env, recovery, KILLS)
    want = _predictions(reference)
    got = _stored(migrated_dsn, "SELECT symbol, ts, model_version, prob_up, confidence, signal, payload "
                                "FROM predictions ORDER BY ts, symbol")
    assert len(got) == len(want) > 3 * 40, "a batch in flight at a kill was lost (or repeated)"
    got["ts"] = pd.to_datetime(got.ts, utc=True).astype(want.ts.dtype)
    pd.testing.assert_series_equal(got.prob_up, want.prob_up, check_exact=False, rtol=0, atol=1e-12)
    assert (got.ts.to_numpy() == want.ts.to_numpy()).all() and (got.symbol == want.symbol).all()
    assert (got.signal.to_numpy() == want.signal.to_numpy()).all()
    orders = _stored(migrated_dsn, "SELECT client_order_id FROM orders")
    assert len(orders) > 0 and orders.client_order_id.is_unique, "a replayed decision placed a second order"
    ref_port = _table(reference, "portfolio_state").sort_values("ts").iloc[-1]
    port = _stored(migrated_dsn, "SELECT ts, cash, positions FROM portfolio_state ORDER BY ts DESC LIMIT 1").iloc[0]
    assert pd.Timestamp(port.ts) == pd.Timestamp(ref_port.ts)
    assert port.cash == pytest.approx(ref_port.cash, rel=1e-12)
    assert port.positions == json.loads(ref_port.positions)
    entries = redis.Redis.from_url(url).xlen("cryptostream:predictions")
    assert entries >= len(want), "every stored prediction was published (replayed ones again)"
