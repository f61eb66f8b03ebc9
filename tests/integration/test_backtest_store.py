"""``python -m training.backtest --chunk N --store``: history scored in chunks, every decision record stored.

Real 5m candles of three symbols (``../shared/data``) and the e2e registry trained on
the two weeks before.  The chunked replay (:class:`flows.replay.DecisionReplay`, 64 bar
times per scoring call, the bank in history mode) must trade like the bar-by-bar
backtest (the live flow's scoring) within float rounding, and the store must hold
exactly what the run traded: every fill, one portfolio row and one prediction per
symbol per traded close, each client order id once.  Both profiles: parquet
(``local``) and TimescaleDB + Redis streams (``timescale``).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import psycopg
import pytest
import redis

from flows.settings import load_settings
from tests.kit.paper import (
    SYMBOLS,
    registry,  # noqa: F401  (fixtures)
)
from tests.kit.paper import candle_files as _files
from tests.kit.paper import decision_table as _table
from training.backfill import _files as candle_streams
from training.backtest import run_backtest

WARM = datetime(2024, 5, 30, tzinfo=timezone.utc)  # two days (576 5m bars) of warm-up: features (313 bars), models
START = datetime(2024, 6, 1, tzinfo=timezone.utc)
END = datetime(2024, 6, 4, tzinfo=timezone.utc)


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _settings(registry_root: Path, var: Path, **env: str):
    return load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(var), "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS),
                              "CRYPTOSTREAM_SCORING__REGISTRY": str(registry_root),
                              "CRYPTOSTREAM_SCORING__POLICY_FAMILY": "",
                              "CRYPTOSTREAM_SCORING__CONFIDENCE_THRESHOLD": "0",
                              "CRYPTOSTREAM_RISK__SIZING__MIN_REBALANCE_FRACTION": "0", **env})


def test_the_chunked_backtests_matrices_trade_exactly_as_its_records(shared_data, registry, tmp_path) -> None:  # noqa: F811
    """Regular bar times go to the barrier as feed matrices: fills and equity bit for bit those of the records."""
    files = _files(shared_data)
    runs = [run_backtest(_settings(registry, tmp_path / str(m)), candle_streams(files, _ms(WARM), _ms(END))[0],
                         "5m", _ms(START), chunk=64, matrices=m) for m in (False, True)]
    records, matrices = runs
    assert len(records.fills) >= 10 and len(records.times) == 3 * 288
    assert records.matrix_closes == 0 and matrices.matrix_closes >= 3 * 288  # the warm-up day's head: records
    assert matrices.fills == records.fills  # every field of every fill, floats with ==
    assert matrices.equity == records.equity and matrices.times == records.times
    assert matrices.positions == records.positions and matrices.benchmark == records.benchmark


def test_the_pipelined_backtest_trades_and_stores_exactly_as_one_process(shared_data, registry, tmp_path) -> None:  # noqa: F811
    """``processes=2`` decides in a second process: every result and every stored record ``==`` one process's."""
    files = _files(shared_data)
    one, two = (run_backtest(_settings(registry, tmp_path / str(n)), candle_streams(files, _ms(WARM), _ms(END))[0],
                             "5m", _ms(START), chunk=64, store=True, processes=n) for n in (1, 2))
    assert (one.processes, two.processes) == (1, 2) and len(one.fills) >= 10 and len(one.times) == 3 * 288
    assert two.fills == one.fills and two.equity == one.equity and two.times == one.times  # floats with ==
    assert two.positions == one.positions and two.halts == one.halts and two.regimes == one.regimes
    assert two.benchmark == one.benchmark and two.marks == one.marks and two.matrix_closes == one.matrix_closes
    assert {"send", "receive", "decisions", "cpu decision process"} <= set(two.spent)
    tables = sorted(d.name for d in (tmp_path / "1" / "decisions").iterdir())
    assert {"fills", "orders", "portfolio_state", "predictions"} <= set(tables)
    for table in tables:  # the run id hashes the settings, whose data directories differ here
        a, b = (_table(tmp_path / str(n), table).drop(columns="run_id", errors="ignore") for n in (1, 2))
        pd.testing.assert_frame_equal(b, a, check_exact=True)


def test_the_command_with_two_processes_writes_the_same_files_as_with_one(shared_data, registry, tmp_path,  # noqa: F811
                                                                          monkeypatch) -> None:
    """``python -m training.backtest --chunk 64 --processes 2``: equity, fills, positions and summary as ``--processes 1``."""
    from training.backtest import main

    env = {"CRYPTOSTREAM_DATA_DIR": str(tmp_path / "var"), "CRYPTOSTREAM_SCORING__POLICY_FAMILY": "",
           "CRYPTOSTREAM_SCORING__CONFIDENCE_THRESHOLD": "0", "CRYPTOSTREAM_RISK__SIZING__MIN_REBALANCE_FRACTION": "0"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    args = [*map(str, _files(shared_data)), "--start", START.isoformat(), "--end", END.isoformat(), "--registry",
            str(registry), "--chunk", "64", "--no-tearsheet"]
    for n in (1, 2):
        assert main([*args, "--processes", str(n), "--out", str(tmp_path / str(n))]) == 0
    fills = (tmp_path / "1" / "fills.csv").read_text()
    assert fills.count("\n") >= 11  # a header and at least ten fills
    for name in ("equity.csv", "fills.csv", "positions.csv", "summary.json"):
        assert (tmp_path / "2" / name).read_text() == (tmp_path / "1" / name).read_text(), name


def _stored(profile: str, var: Path, dsn: str | None, table: str) -> pd.DataFrame:
    if profile == "local":
        return _table(var, table)
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(f"SELECT * FROM {table}")  # noqa: S608  (fixed table names)
        return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])


@pytest.mark.parametrize("profile", ["local", "timescale"])
def test_a_chunked_backtest_trades_like_bar_by_bar_and_stores_what_it_traded(
        profile, shared_data, registry, request, tmp_path) -> None:  # noqa: F811
    files = _files(shared_data)
    env, dsn = {}, None
    if profile == "timescale":
        dsn = request.getfixturevalue("migrated_dsn")
        url = request.getfixturevalue("redis_url").rsplit("/", 1)[0] + "/11"
        redis.Redis.from_url(url).flushdb()
        env = {"CRYPTOSTREAM_PROFILE": "timescale", "TIMESCALE_DSN": dsn, "REDIS_URL": url}

    exact = run_backtest(_settings(registry, tmp_path / "exact"), candle_streams(files, _ms(WARM), _ms(END))[0],
                         "5m", _ms(START), processes=2)
    assert exact.processes == 1  # bar by bar (chunk 1) stays in one process whatever ``processes`` says
    var = tmp_path / "var"
    chunked = run_backtest(_settings(registry, var, **env), candle_streams(files, _ms(WARM), _ms(END))[0],
                           "5m", _ms(START), chunk=64, store=True)

    closes = len(chunked.times)
    assert closes == len(exact.times) == 3 * 288 and chunked.times == exact.times
    assert len(chunked.fills) >= 10
    assert [(f.client_order_id, f.symbol, f.side) for f in chunked.fills] == \
        [(f.client_order_id, f.symbol, f.side) for f in exact.fills]
    for a, b in zip(chunked.fills, exact.fills, strict=True):
        assert (a.qty, a.price, a.fee) == pytest.approx((b.qty, b.price, b.fee), rel=1e-9)
    assert chunked.equity == pytest.approx(exact.equity, rel=1e-9)

    fills = _stored(profile, var, dsn, "fills")
    assert sorted(fills.client_order_id) == sorted(f.client_order_id for f in chunked.fills)
    assert sorted(fills.qty) == pytest.approx(sorted(f.qty for f in chunked.fills), rel=1e-12)
    port = _stored(profile, var, dsn, "portfolio_state").sort_values("ts")
    assert len(port) == closes
    assert set(port.run_id) == set(fills.run_id) == {chunked.run_id}  # the run id the CLI prints
    assert port.equity.tolist() == pytest.approx(chunked.equity, rel=1e-12)
    preds = _stored(profile, var, dsn, "predictions")
    assert len(preds) == len(SYMBOLS) * closes
    assert not preds.duplicated(["symbol", "ts"]).any()
    orders = _stored(profile, var, dsn, "orders")
    assert orders.client_order_id.is_unique
    assert set(fills.client_order_id) <= set(orders.client_order_id)
    if profile == "timescale":  # every record also published on the Redis streams
        r = redis.Redis.from_url(env["REDIS_URL"])
        assert r.xlen("cryptostream:predictions") == len(preds)
        assert r.xlen("cryptostream:fills") == len(fills)
