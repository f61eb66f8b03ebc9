"""The dashboard's bounded reads of the local profile agree with the full reads of the same store.

``flows/stores/parquet_monitor.py`` aggregates and limits with pyarrow; each figure is
checked against the whole table read by the profile's ``DecisionReader`` / ``HistoryReader``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from flows.settings import load_settings
from flows.stores import Stores, open_stores
from tests.kit.dashboard_store import START, fill_store

SYMBOLS = ("BTC/USDT", "ETH/USDT")
BARS = 2000  # two UTC days: files of two days are read


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Stores:
    data = tmp_path_factory.mktemp("monitor") / "var"
    st = open_stores(load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(data), "CRYPTOSTREAM_SYMBOLS": "BTC/USDT,ETH/USDT"}))
    fill_store(st, SYMBOLS, BARS, run_id="r1", decide_every=3)
    fill_store(st, SYMBOLS, 100, run_id="r0", decide_every=3)
    return st


def test_runs_span_each_runs_portfolio_rows_also_where_a_file_holds_two_runs(stores: Stores) -> None:
    runs = stores.monitor_reader().runs().set_index("run_id")
    full = stores.decision_reader().table("portfolio_state")
    for run in ("r1", "r0"):  # r0's rows share r1's first day file: that file's statistics span two runs
        assert runs.at[run, "first"] == full[full.run_id == run].ts.min()
        assert runs.at[run, "last"] == full[full.run_id == run].ts.max()
    assert list(runs.index) == ["r1", "r0"]  # the latest run first


def test_equity_keeps_each_buckets_last_row_and_its_largest_drawdown(stores: Stores) -> None:
    curve = stores.monitor_reader().equity("r1", 100)
    full = stores.decision_reader().table("portfolio_state").query("run_id == 'r1'")
    assert 90 <= len(curve) <= 100
    assert curve.ts.is_monotonic_increasing
    assert curve.equity.iloc[-1] == full.equity.iloc[-1]
    assert curve.drawdown.max() == full.drawdown.max()
    assert set(curve.ts) <= set(full.ts)


def test_daily_first_and_last_are_the_days_first_and_last_equity(stores: Stores) -> None:
    daily = stores.monitor_reader().daily("r1")
    full = stores.decision_reader().table("portfolio_state").query("run_id == 'r1'")
    by_day = full.groupby(full.ts.dt.floor("D")).equity.agg(["first", "last"])
    assert daily["first"].tolist() == by_day["first"].tolist()
    assert daily["last"].tolist() == by_day["last"].tolist()


def test_latest_state_is_the_runs_last_row_with_json_decoded(stores: Stores) -> None:
    latest = stores.monitor_reader().latest_state("r1")
    full = stores.decision_reader().table("portfolio_state").query("run_id == 'r1'")
    assert latest is not None and latest["ts"] == full.ts.iloc[-1] and latest["equity"] == full.equity.iloc[-1]
    assert isinstance(latest["positions"], dict) and set(latest["state"]) == {"prices", "qty"}
    assert stores.monitor_reader().latest_state("no-such-run") is None


def test_symbol_flows_sum_the_runs_fills(stores: Stores) -> None:
    got = stores.monitor_reader().symbol_flows("r1").set_index("symbol")
    fills = stores.decision_reader().table("fills").query("run_id == 'r1'")
    for sym, f in fills.groupby("symbol"):
        buy = f.side == "buy"
        assert got.at[sym, "fills"] == len(f)
        assert got.at[sym, "bought"] == pytest.approx((f.qty * f.price)[buy].sum())
        assert got.at[sym, "sold"] == pytest.approx((f.qty * f.price)[~buy].sum())
        assert got.at[sym, "net_qty"] == pytest.approx(f.qty[buy].sum() - f.qty[~buy].sum())


def test_fills_carry_the_close_of_the_bar_decided_on(stores: Stores) -> None:
    fills = stores.monitor_reader().fills("r1", 50, "1m")
    assert len(fills) == 50
    bars = stores.history_reader().bars(SYMBOLS, "1m", pd.Timestamp(START), pd.Timestamp(START) + pd.Timedelta(days=3),
                                        ["symbol", "ts", "close"]).set_index(["symbol", "ts"])
    orders = stores.decision_reader().table("orders").set_index("client_order_id")
    for f in fills.itertuples():
        assert f.decided == orders.loc[f.client_order_id, "ts"]
        assert f.decision_price == bars.at[(f.symbol, f.decided - timedelta(minutes=1)), "close"]
    assert fills.ts.iloc[-1] == stores.decision_reader().table("fills").query("run_id == 'r1'").ts.max()


@pytest.mark.parametrize("table", ["orders", "predictions", "risk_events"])
def test_recent_rows_are_the_runs_last_rows(stores: Stores, table: str) -> None:
    got = getattr(stores.monitor_reader(), table)("r1", 30)
    full = stores.decision_reader().table(table).query("run_id == 'r1'")
    assert len(got) == 30
    assert got.ts.tolist() == full.ts.iloc[-30:].tolist()


def test_risk_counts_count_the_runs_events_per_rule(stores: Stores) -> None:
    got = stores.monitor_reader().risk_counts("r1").set_index("rule")["events"]
    full = stores.decision_reader().table("risk_events").query("run_id == 'r1'")
    assert got.to_dict() == full.rule.value_counts().to_dict()


def test_freshness_is_the_newest_stored_time_per_group_and_symbol(stores: Stores) -> None:
    fresh = stores.monitor_reader().freshness(("BTC/USDT", "ETH/USDT", "XRP/USDT"), ("1m",))
    got = fresh.set_index(["group", "symbol"])["last"]
    newest_bar = pd.Timestamp(START) + pd.Timedelta(minutes=BARS - 1)
    assert got[("bars", "BTC/USDT")] == newest_bar
    assert got[("bar_features", "ETH/USDT")] == newest_bar + pd.Timedelta(minutes=1)  # known at the close
    assert pd.isna(got[("bars", "XRP/USDT")]) and pd.isna(got[("cross_asset_features", "BTC/USDT")])


def test_the_change_feed_moves_on_a_write_and_shows_the_newest_rows_first(stores: Stores, tmp_path: Path) -> None:
    feed = stores.change_feed()
    before = feed.token()
    assert feed.token() == before
    fill_store(stores, SYMBOLS, 10, run_id="r2", decide_every=1)
    assert feed.token() != before
    recent = feed.recent("portfolio_state", 3)
    assert [r["ts"] for r in recent] == sorted((r["ts"] for r in recent), reverse=True)
