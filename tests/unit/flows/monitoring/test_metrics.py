"""Prometheus metrics of the live flow: what the hooks count, and /metrics served by a running flow."""

from __future__ import annotations

import socket
from collections import Counter
from pathlib import Path

import pytest
from bytewax.testing import TestingSource, cluster_main, run_main

from flows.execution.orders import Order, OrderStatus
from flows.live import build_flow
from flows.monitoring import metrics as monitoring
from flows.monitoring.config import MonitoringConfig
from flows.monitoring.metrics import FlowMetrics, process_index, reason_class
from flows.operators.parse import parse_messages
from flows.operators.pipeline import SymbolPipeline
from flows.records import Bar, DeadLetter, FeatureRow, Fill, OrderIntent, PortfolioRow, Status
from flows.risk.engine import Rejection
from flows.settings import SettingsError, load_settings
from tests.kit.live_flow import SYMBOLS, applied_settings, apply_once, market
from tests.kit.prometheus import free_port, scrape, total


def value(m: FlowMetrics, name: str, **labels: str) -> float:
    v = m.registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


@pytest.fixture(autouse=True)
def no_metrics_left():
    monitoring.stop()
    yield
    monitoring.stop()


@pytest.fixture(scope="module")
def feast_applied(tmp_path_factory) -> Path:
    """The data directory of the module's one ``feast apply``, whose Feast state every run starts with."""
    return apply_once(tmp_path_factory.mktemp("feast"))


def with_port(tmp_path, port: int, applied: Path):
    return applied_settings(tmp_path, applied).model_copy(update={"monitoring": MonitoringConfig(metrics_port=port)})


def expected(batches) -> Counter[str]:
    """Count what the operators alone produce from ``batches``: trades, bars per symbol, dead letters by reason."""
    symbols = {s.replace("/", ""): s for s in SYMBOLS}
    pipes = {s: SymbolPipeline(s, ("1m",)) for s in SYMBOLS}
    want: Counter[str] = Counter()
    for sym, recv, msgs in batches:
        want["messages"] += len(msgs)
        trades, dead = parse_messages(msgs, symbols, recv)
        want["trades"] += len(trades)
        for d in dead:
            want["dead " + reason_class(d.reason)] += 1
        for r in pipes[sym].on_trades(trades):
            if isinstance(r, Bar):
                want["bars " + r.symbol] += 1
            elif isinstance(r, FeatureRow):
                want["bar features"] += 1
            elif isinstance(r, DeadLetter):
                want["dead " + reason_class(r.reason)] += 1
    return want


def test_a_running_flow_serves_its_counts_on_metrics(tmp_path, feast_applied) -> None:
    batches = market()
    port = free_port()
    run_main(build_flow(with_port(tmp_path, port, feast_applied), TestingSource(batches)))
    got, want = scrape(port), expected(batches)
    assert total(got, "cryptostream_messages_total") == want["messages"]
    assert total(got, "cryptostream_trades_total") == want["trades"] > 1000
    for sym in SYMBOLS:
        assert total(got, "cryptostream_bars_total", symbol=sym, timeframe="1m") == want["bars " + sym] > 80
    assert total(got, "cryptostream_feature_rows_total", table="bar_features") == want["bar features"] > 0
    assert total(got, "cryptostream_feature_rows_total", table="cross_asset_features") > 0
    assert total(got, "cryptostream_dead_letters_total", reason="malformed json") == want["dead malformed json"] > 0
    assert total(got, "cryptostream_dead_letters_total", reason="duplicate trade id") == \
        want["dead duplicate trade id"] > 0
    for stage in ("parse", "bars", "features", "cross_asset", "sink"):
        assert total(got, "cryptostream_stage_seconds_count", stage=stage) > 0, stage
    assert total(got, "cryptostream_sink_seconds_count", sink="history") > 0
    assert total(got, "cryptostream_drawdown_limit") == 0.15  # risk.limits.max_drawdown
    assert total(got, "cryptostream_last_trade_received_timestamp_seconds", symbol="BTC/USDT") > 1.6e9


def test_two_workers_count_into_one_registry(tmp_path, feast_applied) -> None:
    batches = market(minutes=60, seed=9)
    port = free_port()
    cluster_main(build_flow(with_port(tmp_path, port, feast_applied), TestingSource(batches)), [], 0,
                 worker_count_per_proc=2)
    got, want = scrape(port), expected(batches)
    assert total(got, "cryptostream_trades_total") == want["trades"]
    assert total(got, "cryptostream_bars_total") == sum(want["bars " + s] for s in SYMBOLS)


def test_port_zero_serves_nothing_and_adds_no_hooks(tmp_path, feast_applied) -> None:
    settings = applied_settings(tmp_path, feast_applied)
    assert settings.monitoring.metrics_port == 0
    run_main(build_flow(settings, TestingSource(market(minutes=5))))
    assert monitoring.current() is None


def test_a_busy_port_stops_the_flow_naming_the_setting(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(OSError, match="monitoring.metrics_port"):
            monitoring.start(MonitoringConfig(metrics_port=s.getsockname()[1]))


def test_decision_records_become_orders_fills_rejections_and_portfolio_gauges() -> None:
    m = FlowMetrics()
    intent = OrderIntent("cs", "BTC/USDT", "buy", 0.1, "market", None, None, 0, "entry", "")
    out = [Fill("t1", "c1", 1, "BTC/USDT", "buy", 0.1, 60_000.0, 0.6, "USDT", "taker"),
           Rejection("BTC/USDT", 1, "max_position", "cut", 0.2, 0.1),
           Rejection("BTC/USDT", 1, "max_position", "cut", 0.2, 0.1),
           Order("c1", intent, OrderStatus.NEW), Order("c1", intent, OrderStatus.FILLED),
           PortfolioRow(1, {"equity": 9_500.0, "drawdown": 0.05, "gross_exposure": 6_000.0, "net_exposure": 6_000.0,
                            "leverage": 0.63}),
           Status(1, 9_500.0, 0.05, 1, (), (), (("max_drawdown", "halted"),))]
    m.on_decisions(out, 0.001)
    assert value(m, "cryptostream_fills_total", symbol="BTC/USDT", side="buy") == 1
    assert value(m, "cryptostream_rejections_total", rule="max_position") == 2
    assert value(m, "cryptostream_orders_total", status="NEW") == 1
    assert value(m, "cryptostream_orders_total", status="FILLED") == 1
    assert value(m, "cryptostream_equity") == 9_500.0 and value(m, "cryptostream_drawdown") == 0.05
    assert value(m, "cryptostream_gross_exposure") == 6_000.0
    assert value(m, "cryptostream_halt", rule="max_drawdown", phase="halted") == 1
    m.on_decisions([Status(2, 9_600.0, 0.04, 1, (), ())], 0.001)  # the halt was released
    assert value(m, "cryptostream_halt", rule="max_drawdown", phase="halted") == 0
    assert value(m, "cryptostream_stage_seconds_count", stage="decision") == 2


def test_model_versions_and_kill_switch() -> None:
    m = FlowMetrics()
    m.on_models({"ensemble": "v3", "lightgbm": "v2"})
    m.on_models({"ensemble": "v4", "lightgbm": "v2"})  # a swap
    assert value(m, "cryptostream_model_version_info", family="ensemble", version="v4") == 1
    assert value(m, "cryptostream_model_version_info", family="ensemble", version="v3") == 0
    m.on_kill_switch(True)
    assert value(m, "cryptostream_kill_switch_engaged") == 1


def test_dead_letter_reasons_lose_their_details_and_stay_few() -> None:
    assert reason_class("bad price: '-1' (outside [0, 1e9])") == "bad price"
    m = FlowMetrics()
    m.on_dead_letters([DeadLetter("ws", None, 0, f"odd {i}: x", "") for i in range(100)])
    assert value(m, "cryptostream_dead_letters_total", source="ws", reason="odd 0") == 1
    assert value(m, "cryptostream_dead_letters_total", source="ws", reason="other") == 100 - monitoring.MAX_REASONS


def test_process_index_comes_from_bytewax_arguments() -> None:
    assert process_index(["bytewax.run", "flows.live"], {}) == 0
    assert process_index(["bytewax.run", "flows.live", "-i", "2", "-a", "x"], {}) == 2
    assert process_index(["x", "--process-id=3"], {}) == 3
    assert process_index(["x"], {"BYTEWAX_PROCESS_ID": "1"}) == 1


def test_settings_bind_only_loopback_and_keep_the_run_id() -> None:
    base = load_settings(env={})
    on = load_settings(env={"CRYPTOSTREAM_MONITORING__METRICS_PORT": "9464"})
    assert on.monitoring.metrics_port == 9464
    assert on.run_id() == base.run_id(), "serving metrics does not change what a run computes"
    with pytest.raises(SettingsError, match="monitoring.metrics_host"):
        load_settings(env={"CRYPTOSTREAM_MONITORING__METRICS_HOST": "0.0.0.0"})
