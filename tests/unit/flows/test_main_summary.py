"""The main job's summary: online features an earlier run wrote are marked stale (issue 18, item 8)."""

from __future__ import annotations

from flows.main import _online_line


def _rows(ts: int, rsi: float | None = 55.0) -> dict[str, list]:
    return {"symbol": ["BTC/USDT"], "ret_1": [0.001], "rsi_14": [rsi], "rv_15": [0.002],
            "ret_1__ts": [ts], "rsi_14__ts": [ts], "rv_15__ts": [ts]}


def test_features_this_run_wrote_are_shown_plainly() -> None:
    assert _online_line(_rows(1_704_070_000), 0, _rows(1_704_000_000)) == "ret_1=0.001 rsi_14=55 rv_15=0.002"


def test_features_left_by_an_earlier_run_are_stale() -> None:
    line = _online_line(_rows(1_704_000_000), 0, _rows(1_704_000_000))
    assert line.startswith("ret_1=0.001") and "stale: bar of 2023-12-31 05:20 UTC from an earlier run" in line


def test_cold_features() -> None:
    assert _online_line(_rows(0, rsi=None), 0, None).startswith("not warm yet")
