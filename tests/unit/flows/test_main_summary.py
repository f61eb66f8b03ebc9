"""The main job's summary: online features an earlier run wrote are marked stale (issue 18, item 8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.main import _online_line, trading_lines
from flows.settings import load_settings
from flows.stores import open_stores
from tests.kit.dashboard_store import fill_store


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


def test_trading_lines_report_the_runs_fills_fees_and_pnl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYPTOSTREAM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CRYPTOSTREAM_PROFILE", "local")
    settings = load_settings(None, symbols="BTC/USDT,ETH/USDT")
    stores = open_stores(settings)
    fill_store(stores, ["BTC/USDT", "ETH/USDT"], 300, run_id="demo-run")
    fills = stores.decision_reader().table("fills")
    state = stores.monitor_reader().latest_state("demo-run")
    assert state is not None and len(fills) > 10
    head, *per_symbol = trading_lines(settings, "demo-run")
    pnl = state["realized_pnl"] + state["unrealized_pnl"]
    assert head.startswith(f"  trading: P&L {pnl:+,.2f} (fees {fills.fee.sum():,.2f} included)")
    assert f"fills {len(fills)}," in head and f"equity {state['equity']:,.2f}" in head
    assert [line.split()[0] for line in per_symbol] == ["BTC/USDT", "ETH/USDT"]
    btc = fills[fills.symbol == "BTC/USDT"]
    assert f"fills {len(btc)}, bought {(btc.qty * btc.price)[btc.side == 'buy'].sum():,.0f}" in per_symbol[0]
    assert trading_lines(settings, "another-run")[0].startswith("  trading: no portfolio rows stored for this run")
