"""The dashboard's SQL reads (flows/stores/timescale_monitor.py) give what the parquet reads give on the same records.

One seeded store is written through both profiles' writers (a scratch TimescaleDB database
and a parquet directory); every bounded read must agree (the parquet side is checked
against full reads in tests/unit/flows/test_monitor_readers.py).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from flows.settings import load_settings
from flows.stores import open_stores
from tests.kit.dashboard_store import fill_store

SYMBOLS = ("BTC/USDT", "ETH/USDT")


def _same(a: pd.DataFrame, b: pd.DataFrame, columns: list[str]) -> None:
    pd.testing.assert_frame_equal(a[columns].reset_index(drop=True), b[columns].reset_index(drop=True),
                                  check_dtype=False, check_exact=False, rtol=1e-12)


def test_timescale_reads_equal_parquet_reads(migrated_dsn: str, redis_url: str, tmp_path: Path) -> None:
    env = {"CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS), "CRYPTOSTREAM_DATA_DIR": str(tmp_path / "var")}
    local = open_stores(load_settings(env=env))
    ts = open_stores(load_settings(env={**env, "CRYPTOSTREAM_PROFILE": "timescale", "TIMESCALE_DSN": migrated_dsn,
                                        "REDIS_URL": redis_url}))
    for st in (local, ts):
        fill_store(st, SYMBOLS, 2000, run_id="r1", decide_every=3)
        fill_store(st, SYMBOLS, 100, run_id="r0", decide_every=3)
    a, b = local.monitor_reader(), ts.monitor_reader()
    _same(a.runs(), b.runs(), ["run_id", "first", "last"])
    _same(a.daily("r1"), b.daily("r1"), ["day", "first", "last"])
    _same(a.symbol_flows("r1"), b.symbol_flows("r1"), ["symbol", "fills", "bought", "sold", "fees", "net_qty"])
    _same(a.fills("r1", 40, "1m"), b.fills("r1", 40, "1m"), ["fill_id", "ts", "price", "decided", "decision_price"])
    _same(a.orders("r1", 40), b.orders("r1", 40), ["client_order_id", "ts", "status"])
    _same(a.predictions("r1", 40), b.predictions("r1", 40), ["symbol", "ts", "prob_up", "confidence"])
    _same(a.risk_events("r1", 40), b.risk_events("r1", 40), ["symbol", "ts", "rule", "reason"])
    _same(a.risk_counts("r1"), b.risk_counts("r1"), ["rule", "events", "last"])
    _same(a.freshness(SYMBOLS, ("1m",)), b.freshness(SYMBOLS, ("1m",)), ["group", "timeframe", "symbol", "last"])
    la, lb = a.latest_state("r1"), b.latest_state("r1")
    assert la is not None and lb is not None
    assert (la["ts"], la["equity"], la["positions"]) == (lb["ts"], lb["equity"], pytest.approx(lb["positions"]))
    # curves: both keep the last row of about 100 buckets; the bucket edges differ, the ends do not
    ca, cb = a.equity("r1", 100), b.equity("r1", 100)
    assert abs(len(ca) - len(cb)) <= 2 and len(cb) <= 101
    assert ca.equity.iloc[-1] == cb.equity.iloc[-1] and ca.drawdown.max() == cb.drawdown.max()
