"""The regime group on the timescale profile: migration 0010's table, Feast's PostgreSQL offline and online stores.

A scratch database with every migration applied; the regime rows of a fitted HMM (with daily
funding and Fear & Greed) go in through ``training.regime.backfill_regime`` (the history sink);
Feast's point-in-time join and online read return the decision step's regime at the same times.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from flows import feast_store
from flows.operators.regime import (
    REGIME_FEATURES,
    REGIMES,
    RegimeFeed,
    load_daily_inputs,
    state_rows,
)
from flows.settings import load_settings
from flows.sinks.feast_online import FeastOnlineSink
from tests.kit.regimes import regime_market, write_daily
from tests.kit.repo import copy_feature_repo
from training.regime import backfill_regime, fit_hmm, regime_inputs

pytestmark = pytest.mark.integration
SYMBOLS = ("BTC/USDT", "ETH/USDT")


def test_timescale_serves_the_decision_step_s_regime(tmp_path: Path, migrated_dsn: str, redis_url: str) -> None:
    times, prices = regime_market(seed=5, days=45)
    daily_dir = write_daily(tmp_path / "daily", seed=5, days=45)
    closes = pd.Series(prices, index=times)
    model = fit_hmm([regime_inputs(closes, load_daily_inputs(daily_dir))], ["trend", "vol", "funding", "sentiment"],
                    states=4, seed=0)
    feed = RegimeFeed(SYMBOLS[0], model, load_daily_inputs(daily_dir, 2.0))
    states = [feed.on_close(t, {SYMBOLS[0]: p}) for t, p in zip(times.tolist(), prices.tolist(), strict=True)]
    settings = load_settings(env={"CRYPTOSTREAM_PROFILE": "timescale", "CRYPTOSTREAM_DATA_DIR": str(tmp_path / "var"),
                                  "TIMESCALE_DSN": migrated_dsn, "REDIS_URL": redis_url,
                                  "CRYPTOSTREAM_FEAST_ONLINE": "postgres",
                                  "CRYPTOSTREAM_FEAST_REPO": str(copy_feature_repo(tmp_path)),
                                  "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS)})
    n = backfill_regime(settings, closes, model, load_daily_inputs(daily_dir, 2.0), SYMBOLS)
    assert n == len(SYMBOLS) * len({s.ts for s in states if s is not None}) > 500
    feast_store.apply(settings)
    store = feast_store.open_store(settings)
    at = [(int(t) + off, s) for i, (t, s) in enumerate(zip(times, states, strict=True))
          if s is not None and i % 5 == 0 for off in (0, 1_800_000)]
    entity = pd.DataFrame({"symbol": [SYMBOLS[i % 2] for i in range(len(at))],
                           "event_timestamp": pd.to_datetime([t for t, _ in at], unit="ms", utc=True)})
    refs = [f"regime_features_1h:{f}" for f in REGIME_FEATURES]
    got = store.get_historical_features(entity, refs).to_df().set_index(["symbol", "event_timestamp"])
    for i, (t, s) in enumerate(at):
        row = got.loc[(SYMBOLS[i % 2], pd.Timestamp(t, unit="ms", tz="UTC"))]
        assert [row[f] for f in REGIME_FEATURES] == [float(REGIMES.index(s.label)), s.score, *s.probs], t
    FeastOnlineSink(settings).build("online", 0, 1).write_batch(state_rows(states, SYMBOLS))
    online = store.get_online_features(refs, [{"symbol": s} for s in SYMBOLS]).to_dict()
    last = states[-1]
    assert last is not None
    assert [online[f] for f in REGIME_FEATURES] == [[v] * 2 for v in (float(REGIMES.index(last.label)), last.score,
                                                                       *last.probs)]
