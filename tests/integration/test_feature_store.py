"""Feast on the timescale profile: the flow writes TimescaleDB and the online store; Feast reads both back.

Real TimescaleDB and Redis from infra/up; a scratch database per test and a copy of
the Feast repository, so nothing of the user's is touched.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import psycopg
import pytest
import redis
from bytewax.testing import TestingSource, run_main

from flows import feast_store
from flows.feature_catalog import BAR_FEATURES, CROSS_FEATURES
from flows.live import build_flow
from flows.operators.features import WARMUP
from flows.settings import load_settings
from tests.kit.live_flow import SYMBOLS, market
from tests.kit.repo import copy_feature_repo


@pytest.fixture(params=["postgres", "redis"])
def ts_settings(request, migrated_dsn, redis_url, tmp_path):
    repo = copy_feature_repo(tmp_path)
    url = redis_url.rsplit("/", 1)[0] + "/7"  # a db of our own on the shared Redis
    redis.Redis.from_url(url).flushdb()
    env = {"CRYPTOSTREAM_PROFILE": "timescale", "TIMESCALE_DSN": migrated_dsn, "REDIS_URL": url,
           "CRYPTOSTREAM_FEAST_ONLINE": request.param, "CRYPTOSTREAM_FEAST_REPO": str(repo),
           "CRYPTOSTREAM_DATA_DIR": str(tmp_path / "var"), "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS)}
    settings = load_settings(env=env)
    feast_store.apply(settings)
    return settings


def _table(dsn: str, table: str) -> pd.DataFrame:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(f"SELECT * FROM {table} WHERE timeframe = '1m' ORDER BY symbol, ts")
        return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])


def test_online_equals_last_rows_and_historical_equals_asof_join(ts_settings) -> None:
    run_main(build_flow(ts_settings, TestingSource(market(minutes=WARMUP + 90, seed=21))))
    dsn = ts_settings.timescale_dsn.get_secret_value()
    bars, feats, cross = _table(dsn, "bars"), _table(dsn, "bar_features"), _table(dsn, "cross_asset_features")
    n = WARMUP + 89  # bars a symbol: the last minute stays open
    assert len(bars) == 3 * n and len(feats) == 3 * (n - (WARMUP - 1)) and len(cross) == 3 * (n - 1 - 59)
    assert np.isfinite(feats[list(BAR_FEATURES)].to_numpy(float)).all()

    store = feast_store.open_store(ts_settings)
    refs = [f"bar_features_1m:{f}" for f in BAR_FEATURES] + [f"cross_asset_features_1m:{f}" for f in CROSS_FEATURES]
    online = pd.DataFrame(store.get_online_features(features=refs, entity_rows=[{"symbol": s} for s in SYMBOLS]).to_dict())
    for table, names in ((feats, BAR_FEATURES), (cross, CROSS_FEATURES)):
        last = table.sort_values("ts").groupby("symbol").tail(1).set_index("symbol").loc[list(SYMBOLS)]
        np.testing.assert_allclose(online[list(names)].to_numpy(float), last[list(names)].to_numpy(float), rtol=0, atol=0)

    # historical: Feast's point-in-time join against a hand-written as-of join
    rng = np.random.default_rng(0)
    t0, t1 = feats.ts.min(), feats.ts.max() + pd.Timedelta(minutes=3)
    times = pd.to_datetime(rng.integers(t0.value, t1.value, 40), utc=True).floor("s")
    entity = pd.DataFrame({"symbol": rng.choice(SYMBOLS, 40), "event_timestamp": times})
    got = store.get_historical_features(entity_df=entity, features=[f"bar_features_1m:{f}" for f in BAR_FEATURES]).to_df()
    got = got.sort_values(["symbol", "event_timestamp"]).reset_index(drop=True)
    want = pd.merge_asof(entity.sort_values("event_timestamp"), feats.rename(columns={"ts": "fts"}).sort_values("fts"),
                         left_on="event_timestamp", right_on="fts", by="symbol", direction="backward")
    want = want.sort_values(["symbol", "event_timestamp"]).reset_index(drop=True)
    np.testing.assert_allclose(got[list(BAR_FEATURES)].to_numpy(float), want[list(BAR_FEATURES)].to_numpy(float),
                               rtol=0, atol=0)
