"""Live: with ``regime.source`` on, the flow writes the regime group, equal to the decision step's regime.

The history it writes is what Feast's point-in-time join returns, and the online store holds the latest.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from bytewax.testing import TestingSource, run_main

from flows import feast_store
from flows.live import build_flow
from flows.operators.regime import REGIME_FEATURES, REGIMES, RegimeFeed, load_model
from flows.settings import load_settings
from tests.kit.live_flow import SYMBOLS, market
from tests.kit.repo import copy_feature_repo


def test_the_flow_stores_and_serves_the_regime_of_the_reference_symbol_s_closes(tmp_path: Path) -> None:
    # rules sampled every minute with a 10-minute trend: a 70-minute market gives about an hour of regimes
    model_file = tmp_path / "regime.json"
    model_file.write_text(json.dumps({"kind": "rules", "trend_days": 10 / 1440, "vol_days": 5 / 1440,
                                      "trend_band": 0.0005, "high_vol": 0.3, "sample_ms": 60_000}))
    settings = load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp_path / "var"),
                                  "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS),
                                  "CRYPTOSTREAM_FEAST_REPO": str(copy_feature_repo(tmp_path)),
                                  "CRYPTOSTREAM_REGIME__SOURCE": "model", "CRYPTOSTREAM_REGIME__MODEL": str(model_file)})
    batches = market(minutes=70)
    run_main(build_flow(settings, TestingSource(batches)))
    stored = pq.read_table(tmp_path / "var" / "offline" / "regime_features_1h").to_pandas()
    # the decision step's feed over the same closes (the flow's own 1m bars of BTC/USDT)
    bars = pq.read_table(tmp_path / "var" / "offline" / "bars_1m").to_pandas()
    btc = bars[(bars.symbol == SYMBOLS[0])].sort_values("ts")
    feed = RegimeFeed(SYMBOLS[0], load_model(model_file))
    want = {}
    for ts, close in zip(btc.ts, btc.close, strict=True):
        t = int(ts.value // 10**6) + 60_000
        s = feed.on_close(t, {SYMBOLS[0]: float(close)})
        if s is not None and s.ts == t:
            want[t] = s
    assert len(want) > 30 and sorted(stored.symbol.unique()) == sorted(SYMBOLS)
    assert len(stored) == len(want) * len(SYMBOLS)
    for _, r in stored.iterrows():
        s = want[int(r.ts.value // 10**6)]
        assert REGIMES[int(r.regime_code)] == s.label
        assert [r[f] for f in REGIME_FEATURES[1:]] == [s.score, *s.probs]
    # Feast's point-in-time join: at a sampled close and 30 s later, the regime of that close
    store = feast_store.open_store(settings)
    at = [(t + off, s) for t, s in sorted(want.items()) for off in (0, 30_000)]
    entity = pd.DataFrame({"symbol": [SYMBOLS[i % len(SYMBOLS)] for i in range(len(at))],
                           "event_timestamp": pd.to_datetime([t for t, _ in at], unit="ms", utc=True)})
    got = store.get_historical_features(entity, [f"regime_features_1h:{f}" for f in REGIME_FEATURES]).to_df()
    got = got.set_index(["symbol", "event_timestamp"])
    for i, (t, s) in enumerate(at):
        row = got.loc[(SYMBOLS[i % len(SYMBOLS)], pd.Timestamp(t, unit="ms", tz="UTC"))]
        assert [row[f] for f in REGIME_FEATURES] == [float(REGIMES.index(s.label)), s.score, *s.probs], t
    last = want[max(want)]
    online = store.get_online_features(
        features=[f"regime_features_1h:{f}" for f in REGIME_FEATURES], entity_rows=[{"symbol": s} for s in SYMBOLS]
    ).to_dict()
    assert online["regime_code"] == [float(REGIMES.index(last.label))] * len(SYMBOLS)
