"""training/backtest_pipeline.py: the backtest's decisions in a second process, the same as in one."""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import time
from functools import partial

import pytest

from flows.records import Bar, Close, Prediction
from flows.settings import load_settings
from training.backtest import BacktestDecisions
from training.backtest_pipeline import DecisionProcess, DecisionProcessError, pack, unpack

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
HOUR = 3_600_000
VERSIONS = {"ensemble": "v1", "lightgbm": "v2"}  # one dict shared by a scoring call's predictions


def _closes(n: int, t0: int = 0) -> list[Close]:
    """``n`` hourly closes of three symbols whose signals flip every few bars: the decision step trades them."""
    out = []
    for k in range(n):
        t = t0 + (k + 1) * HOUR
        bars, preds = [], []
        for i, s in enumerate(SYMBOLS):
            price = 100.0 * (i + 1) * (1.0 + 0.03 * math.sin(k / 3.0 + i))
            bars.append(Bar(s, "1h", t - HOUR, price, price * 1.01, price * 0.99, price, 10.0 + k, 1000.0 + k, 7 + k,
                            price, 5.0))
            p = 0.5 + 0.45 * math.sin(k / 2.0 + i)
            warm = k < 2  # the members' NaN while warming up
            preds.append(Prediction(s, "1h", t, {"lightgbm": math.nan if warm else p, "lstm": 1 - p}, p,
                                    abs(p - 0.5) * 2, int(p > 0.5), math.nan if warm else 2 * p - 1, VERSIONS,
                                    0.001 * math.cos(k + i), 0.01, 1))
        out.append(Close(t, tuple(bars), tuple(preds)))
    return out


def _settings(tmp_path):
    return load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp_path), "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS),
                              "CRYPTOSTREAM_BARS__TIMEFRAMES": "1h", "CRYPTOSTREAM_SCORING__CONFIDENCE_THRESHOLD": "0",
                              "CRYPTOSTREAM_RISK__SIZING__MIN_REBALANCE_FRACTION": "0"})


def test_packed_closes_come_back_equal_field_for_field_and_type_for_type() -> None:
    closes = _closes(6)
    closes.append(Close(7 * HOUR, closes[0].bars[:2], ()))  # a close with a symbol missing and no predictions
    got = unpack(pack(closes))
    assert repr(got) == repr(closes)  # repr: exact for floats, and NaN equals NaN
    for a, b in zip(got, closes, strict=True):
        assert type(a) is Close and type(a.bars) is tuple and type(a.predictions) is tuple
        assert all(type(x) is type(y) is Bar for x, y in zip(a.bars, b.bars, strict=True))
        assert all(type(x) is type(y) is Prediction for x, y in zip(a.predictions, b.predictions, strict=True))
    assert got[3] == closes[3]  # without NaN, plain ==
    assert unpack(pack([])) == []
    held = [b for c in closes[:6] for b in reversed(c.bars)]  # the bars both processes hold: they cross as positions
    where = {id(b): i for i, b in enumerate(held)}
    packed = pack(closes[:6], where)
    assert packed[2] == ("at", [where[id(b)] for c in closes[:6] for b in c.bars])
    assert repr(unpack(packed, held)) == repr(closes[:6])
    copies = closes[0]._replace(bars=tuple(Bar(*b) for b in closes[0].bars))  # equal bars, other objects
    assert pack(closes[1:3] + [copies], where)[2][0] == "fields"  # then every bar goes by its fields


def _run(side, chunks: list[list[Close]]):
    first_open: dict[str, float] = {}
    for closes in chunks:
        for b in (b for c in closes for b in c.bars):
            first_open.setdefault(b.symbol, b.open)
        side.take(closes, first_open)
    return side.finish()


def test_the_decision_process_decides_exactly_as_this_process(tmp_path) -> None:
    closes = _closes(120)
    chunks = [closes[i:i + 16] for i in range(0, len(closes), 16)]
    build = partial(BacktestDecisions, _settings(tmp_path), "1h", 10 * HOUR, False, time.perf_counter)
    here = _run(build(), chunks)
    remote = DecisionProcess(build, bars=[b for c in closes[:64] for b in c.bars])  # 4 chunks by position, 4 not
    there = _run(remote, chunks)
    assert len(here.fills) >= 4 and len(here.times) == 110  # the first ten closes only warm up
    assert there.fills == here.fills and there.equity == here.equity and there.times == here.times
    assert there.positions == here.positions and there.halts == here.halts and there.regimes == here.regimes
    assert there.benchmark == here.benchmark and there.marks == here.marks and there.run_id == here.run_id
    assert set(remote.spent) >= {"send", "wait", "receive", "idle", "cpu decision process"}
    assert not remote._process.is_alive() and remote._process.exitcode == 0


def test_an_error_in_the_decision_process_comes_back_with_its_traceback(tmp_path) -> None:
    remote = DecisionProcess(partial(BacktestDecisions, _settings(tmp_path), "1h", None, False, time.perf_counter))
    bad = [c._replace(predictions=tuple(p._replace(symbol="NOPE/USDT") for p in c.predictions)) for c in _closes(3)]
    with pytest.raises(DecisionProcessError, match=r"(?s)decision process failed:.*Traceback.*KeyError: 'NOPE/USDT'"):
        for _ in range(1000):  # the child fails on the first chunk; a later send or the end reports it
            remote.take(bad, {})
        remote.finish()
    assert not remote._process.is_alive()
    assert multiprocessing.active_children() == []


def test_a_decision_process_that_dies_is_reported_and_one_left_running_is_killed(tmp_path) -> None:
    build = partial(BacktestDecisions, _settings(tmp_path), "1h", None, False, time.perf_counter)
    remote = DecisionProcess(build)
    remote.take(_closes(3), {})
    pid = remote._process.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(DecisionProcessError, match="exit code -9"):
        remote.finish()
    running = DecisionProcess(build)  # this side fails before the end: run_backtest's finally closes it
    running.close()
    assert running._process.exitcode is not None and multiprocessing.active_children() == []
