"""Decision sinks, local profile: parquet per table and day, replays rewrite the same rows; batches appended in
time order give the rows one merge would."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from flows.execution.orders import Order, OrderStatus, client_order_id
from flows.records import OrderIntent, Prediction
from flows.settings import load_settings
from flows.sinks.decisions import DecisionSink
from tests.kit.decision_records import TS, records


def test_parquet_rows_per_table_and_replay_is_idempotent(tmp_path) -> None:
    settings = load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp_path)})
    part = DecisionSink(settings).open()
    part.write_batch(records())
    part.write_batch(records())
    preds = pq.read_table(next((tmp_path / "decisions" / "predictions").glob("*.parquet"))).to_pylist()
    port = pq.read_table(next((tmp_path / "decisions" / "portfolio_state").glob("*.parquet"))).to_pylist()
    assert sorted(p["symbol"] for p in preds) == ["BTC/USDT", "ETH/USDT"]
    assert json.loads(preds[0]["payload"])["rl_target"] == 0.25
    assert len(port) == 1 and json.loads(port[0]["positions"]) == {"BTC/USDT": 0.015}
    assert port[0]["run_id"] == settings.run_id()


def _pred(sym: str, k: int, p: float) -> Prediction:
    return Prediction(sym, "1m", TS + k * 60_000, {"lightgbm": p}, p, abs(p - 0.5) * 2, 1, float("nan"),
                      {"ensemble": "v1"}, 0.0, 0.01)


def _order(k: int, status: OrderStatus, updated: int) -> Order:
    intent = OrderIntent("cs", "BTC/USDT", "buy", 0.1, "market", None, None, TS + k * 60_000, "entry", "test")
    return Order(client_order_id("cs", "BTC/USDT", intent.bar_ts, "entry"), intent, status, updated_ts=updated)


def _rows(root: Path, table: str) -> list[dict]:  # without run_id (it hashes the data directory)
    rows = pq.read_table(root / "decisions" / table / "2024-06-03.parquet").to_pylist()
    return [{k: v for k, v in r.items() if k != "run_id"} for r in rows]


def test_batches_in_time_order_replays_and_outside_rewrites_give_the_merged_rows(tmp_path: Path) -> None:
    a = [_pred("BTC/USDT", 0, 0.6), _pred("ETH/USDT", 0, 0.4), _order(0, OrderStatus.NEW, TS)]
    b = [_pred("BTC/USDT", 1, 0.7), _pred("BTC/USDT", 1, 0.71), _order(0, OrderStatus.FILLED, TS + 60_000)]
    c = [_pred("ETH/USDT", 2, 0.3)]
    settings = load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp_path / "live")})
    part = DecisionSink(settings).open()
    for batch in (a, b, a[:2], c):  # later bar times (appended), an update of an older order, a replay
        part.write_batch(batch)
    one = DecisionSink(load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp_path / "one")})).open()
    one.write_batch([*a, *b, *a[:2], *c])  # everything merged at once
    for table in ("predictions", "orders"):
        assert _rows(tmp_path / "live", table) == _rows(tmp_path / "one", table)
    preds = _rows(tmp_path / "live", "predictions")
    assert [(p["symbol"], p["prob_up"]) for p in preds] == [("BTC/USDT", 0.6), ("ETH/USDT", 0.4),
                                                           ("BTC/USDT", 0.71), ("ETH/USDT", 0.3)]
    assert [o["status"] for o in _rows(tmp_path / "live", "orders")] == ["FILLED"]
    path = tmp_path / "live" / "decisions" / "predictions" / "2024-06-03.parquet"
    pq.write_table(pq.read_table(path).slice(0, 1), path)  # rewritten by someone else: read back, not cached
    part.write_batch([_pred("SOL/USDT", 3, 0.5)])
    assert [p["symbol"] for p in _rows(tmp_path / "live", "predictions")] == ["BTC/USDT", "SOL/USDT"]
