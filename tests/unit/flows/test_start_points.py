"""Start points: recorded once, atomically, beside the recovery snapshots (issue 17, defect 7)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from flows.sources.binance_ws import WsPartition, first_trade
from flows.start_points import FOLDER, StartPoint, StartPoints


def _trade(tid: int, t_ms: int) -> bytes:
    return orjson.dumps({"e": "trade", "E": t_ms, "s": "BTCUSDT", "t": tid, "p": "1.0", "q": "1.0", "T": t_ms,
                         "m": False, "M": True})


def test_a_start_point_is_recorded_once_and_read_back(tmp_path: Path) -> None:
    points = StartPoints(tmp_path)
    assert points.get("BTC/USDT") is None
    assert points.record(StartPoint("BTC/USDT", 42, 1_700_000_000_000))
    assert not points.record(StartPoint("BTC/USDT", 99, 1_700_000_100_000))  # the first start stays
    assert StartPoints(tmp_path).get("BTC/USDT") == StartPoint("BTC/USDT", 42, 1_700_000_000_000)
    assert [p.name for p in (tmp_path / FOLDER).iterdir()] == ["BTC_USDT.json"]  # no temporary file left
    assert StartPoints(None).get("BTC/USDT") is None and not StartPoints(None).record(StartPoint("BTC/USDT", 1, 1))


def test_an_unreadable_start_point_is_named(tmp_path: Path) -> None:
    (tmp_path / FOLDER).mkdir()
    (tmp_path / FOLDER / "BTC_USDT.json").write_text('{"symbol": "BTC/USDT", "first_id": ')
    with pytest.raises(ValueError, match="BTC_USDT.json: unreadable.*delete the file"):
        StartPoints(tmp_path).get("BTC/USDT")


def test_the_partition_records_its_first_trade_and_a_restart_without_snapshot_resumes_there(tmp_path: Path) -> None:
    assert first_trade([b"{}", _trade(8, 2_000), _trade(7, 1_000)]) == (7, 1_000)
    points = StartPoints(tmp_path)
    part = WsPartition("BTC/USDT", "ws://127.0.0.1:9", None, None, start_points=points)
    try:
        part._buf.extend([_trade(7, 1_000), _trade(8, 2_000)])
        assert part.next_batch()[0][2][0] == _trade(7, 1_000)
    finally:
        part.close()
    assert points.get("BTC/USDT") == StartPoint("BTC/USDT", 7, 1_000)
    again = WsPartition("BTC/USDT", "ws://127.0.0.1:9", None, None, start_points=points)  # no snapshot
    snapped = WsPartition("BTC/USDT", "ws://127.0.0.1:9", None, None, last_id=50, start_points=points)
    try:
        assert again.last_id == 6 and again._since_hint == 1_000  # fills from trade 7, at its time
        assert snapped.last_id == 50  # a snapshot wins
    finally:
        again.close()
        snapped.close()
