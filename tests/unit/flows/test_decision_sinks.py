"""Decision sinks, local profile: parquet per table and day, replays rewrite the same rows."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from flows.settings import load_settings
from flows.sinks.decisions import DecisionSink
from tests.integration.test_decision_store import records


def test_parquet_rows_per_table_and_replay_is_idempotent(tmp_path) -> None:
    settings = load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp_path)})
    part = DecisionSink(settings).build("decisions", 0, 1)
    part.write_batch(records())
    part.write_batch(records())
    preds = pq.read_table(next((tmp_path / "decisions" / "predictions").glob("*.parquet"))).to_pylist()
    port = pq.read_table(next((tmp_path / "decisions" / "portfolio_state").glob("*.parquet"))).to_pylist()
    assert sorted(p["symbol"] for p in preds) == ["BTC/USDT", "ETH/USDT"]
    assert json.loads(preds[0]["payload"])["rl_target"] == 0.25
    assert len(port) == 1 and json.loads(port[0]["positions"]) == {"BTC/USDT": 0.015}
    assert port[0]["run_id"] == settings.run_id()
