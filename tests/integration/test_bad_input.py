"""Bad input through the whole flow, on the timescale profile.

The replay exchange corrupts, duplicates and reorders messages (seeded).  The flow
must not crash, must keep every refused message in ``dead_letters`` with its reason
(one row per injected corruption or duplicate), and must never write a NaN feature.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

import numpy as np
import psycopg
from bytewax.testing import run_main

from flows import feast_store
from flows.feature_catalog import BAR_FEATURES
from flows.live import build_flow
from flows.settings import load_settings
from infra.replay_exchange.faults import FaultConfig
from infra.replay_exchange.server import running_replay
from tests.kit.replay import with_history
from tests.kit.repo import copy_feature_repo

START = datetime(2024, 6, 3, tzinfo=timezone.utc)
END = datetime(2024, 6, 3, 10, tzinfo=timezone.utc)
SYMBOLS = ("BTC/USDT", "ETH/USDT")
REASON = {"malformed_json": "malformed json", "missing_field": "missing fields", "nan_price": "bad price",
          "negative_price": "bad price", "zero_price": "bad price", "nan_qty": "bad quantity",
          "negative_qty": "bad quantity", "zero_qty": "bad quantity"}


def test_faults_become_dead_letters_and_features_stay_finite(shared_data, migrated_dsn, redis_url, tmp_path) -> None:
    files = [shared_data / "binance-spot-5m-2024" / f"{s.replace('/', '_')}-5m.parquet" for s in SYMBOLS]
    repo = copy_feature_repo(tmp_path)
    faults = FaultConfig(corrupt=0.03, duplicate=0.03, reorder=0.03)
    with running_replay(files, speed=0, end=END, seed=11, faults=faults, **with_history(START, "5m")) as ex:
        ex.engine.wait_for_streams = len(SYMBOLS)
        env = {"CRYPTOSTREAM_PROFILE": "timescale", "TIMESCALE_DSN": migrated_dsn,
               "REDIS_URL": redis_url.rsplit("/", 1)[0] + "/8", "CRYPTOSTREAM_FEAST_REPO": str(repo),
               "CRYPTOSTREAM_DATA_DIR": str(tmp_path / "var"), "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS),
               "CRYPTOSTREAM_BARS__TIMEFRAMES": "5m", "CRYPTOSTREAM_EXCHANGE__HTTP_URL": ex.http_url,
               "CRYPTOSTREAM_EXCHANGE__WS_URL": ex.ws_url, "CRYPTOSTREAM_EXCHANGE__API_KEY": "replay",
               "CRYPTOSTREAM_EXCHANGE__IDLE_STOP_S": "3"}
        settings = load_settings(env=env)
        feast_store.apply(settings)
        run_main(build_flow(settings))
        injected = ex.faults

    with psycopg.connect(migrated_dsn) as conn:
        dead = conn.execute("SELECT reason, payload FROM dead_letters").fetchall()
        feats = conn.execute(f"SELECT {', '.join(BAR_FEATURES)} FROM bar_features").fetchall()
        n_bars = conn.execute("SELECT count(*) FROM bars").fetchone()[0]
    kinds = Counter(f.kind for f in injected)
    assert kinds["corrupt"] > 10 and kinds["duplicate"] > 10 and kinds["reorder"] > 10
    got = Counter(r.split(":")[0] for r, _ in dead)
    want = Counter(REASON[f.detail.split()[0]] for f in injected if f.kind == "corrupt")
    for reason, n in want.items():
        assert got[reason] >= n, f"{reason}: {got[reason]} dead letters for {n} injected"
    assert got["duplicate trade id"] >= kinds["duplicate"] - kinds["corrupt"]
    assert sum(got.values()) == len(dead) and all(p for _, p in dead), "every dead letter keeps its raw payload"
    assert n_bars > 200 and len(feats) > 100
    assert np.isfinite(np.array(feats, dtype=float)).all(), "no NaN or infinite feature"
