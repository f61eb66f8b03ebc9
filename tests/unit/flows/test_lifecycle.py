"""flows/lifecycle.py: no new order once a stop is asked for; process groups end with nothing left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psutil

from flows import lifecycle
from flows.execution.orders import Order
from flows.operators.decisions import STOP_RULE, DecisionStep
from flows.records import Bar, Decided, Prediction, Status
from flows.risk.engine import Rejection
from flows.settings import load_settings
from flows.wiring import build_deps
from tests.kit.processes import live_in_group, still_running

TF = 60_000
SYMBOLS = ("BTC/USDT", "ETH/USDT")


def _close(step: DecisionStep, k: int, p_up: float) -> list:
    up = 1 if p_up > 0.5 else 0
    preds = [Prediction(s, "1m", (k + 1) * TF, {}, p_up, abs(p_up - 0.5) * 2, up, float("nan"), {}, 0.0, 0.0005)
             for s in SYMBOLS]
    step.on_predictions(preds)
    return [o for s in SYMBOLS for o in step.on_bar(Bar(s, "1m", k * TF, 100.0, 101.0, 99.0, 100.5, 50.0,
                                                        5025.0, 10, 100.0, 25.0))]


def test_a_stopping_flow_decides_but_places_no_new_order(tmp_path: Path) -> None:
    settings = load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp_path), "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS)})
    stopping = [False]
    deps = replace(build_deps(settings), stopping=lambda: stopping[0])
    step = DecisionStep(SYMBOLS, TF, deps)
    running = _close(step, 0, 0.8)
    assert len([o for o in running if isinstance(o, Order)]) == 2, "two buys while running"
    stopping[0] = True
    out = _close(step, 5, 0.2)  # the signal turns: sells, were it running
    assert [o for o in out if isinstance(o, Order) and o.intent.bar_ts == 6 * TF] == []
    assert deps.broker.open_orders() == []
    held = [o for o in out if isinstance(o, Rejection)]
    assert [(r.symbol, r.rule, r.allowed) for r in held] == [(s, STOP_RULE, 0.0) for s in SYMBOLS]
    assert all(r.requested != 0.0 for r in held)
    assert len([o for o in out if isinstance(o, Decided)]) == 2 and isinstance(out[-1], Status)


def test_the_flow_wiring_stops_orders_on_the_process_stop_flag(tmp_path: Path) -> None:
    deps = build_deps(load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp_path)}))
    assert deps.stopping is lifecycle.stop_requested


def test_end_group_ends_a_child_and_what_it_started(tmp_path: Path) -> None:
    """A child in its own group starts a grandchild that ignores SIGTERM: both end (SIGKILL after the grace)."""
    pid_file = tmp_path / "grandchild"
    script = ("import signal, subprocess, sys, time\n"
              f"g = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
              f"signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
              f"open({str(pid_file)!r}, 'w').write(str(g.pid))\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], **lifecycle.child_group_kwargs())
    deadline = time.monotonic() + 30
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0), "a group of its own, not ours"
    assert os.getpgid(grandchild) == proc.pid
    assert lifecycle.end_group(proc, grace_s=5.0) == -signal.SIGTERM
    assert live_in_group(proc.pid) == []
    assert still_running([psutil.Process(grandchild)]) == [] if psutil.pid_exists(grandchild) else True


def test_the_summary_names_the_stop_and_is_written_for_the_main_job(tmp_path: Path, capsys) -> None:
    tally = lifecycle.TALLY
    tally.bar("BTC/USDT")
    tally.status("2024-01-01 00:01 equity=10,000.00")
    lifecycle.request_stop("SIGTERM")
    try:
        doc = lifecycle.write_summary(tmp_path, ("BTC/USDT",), {"log file": "x.log"})
    finally:
        lifecycle.STOP.clear()
        lifecycle._reason.clear()
    out = capsys.readouterr().out
    assert "stopped by SIGTERM" in out and "closed bars: BTC/USDT=" in out and "log file: x.log" in out
    assert doc["stopped_by"] == "SIGTERM" and doc["closes"] >= 1
    assert (tmp_path / "flow_summary.json").is_file()


def test_a_finite_stream_that_stored_nothing_ends_with_a_warning(tmp_path: Path, capsys, monkeypatch) -> None:
    """Issue 17, defect 7: a replay that ended with 0 bars exited 0 without a word."""
    monkeypatch.setattr(lifecycle, "TALLY", lifecycle.Tally())
    doc = lifecycle.write_summary(tmp_path, ("BTC/USDT",), {})
    captured = capsys.readouterr()
    assert doc["warning"] == lifecycle.EMPTY_RUN_WARNING
    assert "WARNING: the stream ended and this run stored nothing" in captured.err
    assert "WARNING:" in captured.out  # the summary's own line
    assert json.loads((tmp_path / "flow_summary.json").read_text())["warning"] == lifecycle.EMPTY_RUN_WARNING
    lifecycle.TALLY.bar("BTC/USDT")
    assert "warning" not in lifecycle.write_summary(tmp_path, ("BTC/USDT",), {})
    monkeypatch.setattr(lifecycle, "TALLY", lifecycle.Tally())
    lifecycle.request_stop("SIGTERM")  # stopped by the operator: nothing stored is no surprise
    try:
        assert "warning" not in lifecycle.write_summary(tmp_path, ("BTC/USDT",), {})
    finally:
        lifecycle.STOP.clear()
        lifecycle._reason.clear()
