"""Implausible trade times: refused with a reason, never a MemoryError or a blank day (issue 17, defect 1)."""

from __future__ import annotations

import pickle

import orjson
import pytest

from flows.operators.parse import parse_messages
from flows.operators.pipeline import SymbolPipeline
from flows.operators.trade_time import TradeTimeGuard
from flows.records import Bar, DeadLetter, Trade
from flows.settings import SettingsError, load_settings

SYMBOLS = {"BTCUSDT": "BTC/USDT"}
T0 = 1_723_161_300_000  # 2024-08-09T00:55Z
M = 60_000
DAY = 86_400_000


def _msg(tid: int, ts: int, price: float = 60_000.0) -> bytes:
    return (f'{{"e":"trade","E":{ts},"s":"BTCUSDT","t":{tid},"p":"{price:.2f}","q":"0.01","T":{ts},'
            f'"m":false,"M":true}}').encode()


def _tape(minutes: int, start: int = T0, first_id: int = 1) -> list[Trade]:
    """Four trades a minute, ids consecutive."""
    return [Trade("BTC/USDT", first_id + i, start + i * 15_000, 60_000.0 + i, 0.01, i % 2 == 0)
            for i in range(minutes * 4)]


def _run(pipe: SymbolPipeline, trades: list[Trade], batch: int = 7) -> tuple[list[Bar], list[DeadLetter]]:
    bars: list[Bar] = []
    dead: list[DeadLetter] = []
    for i in range(0, len(trades), batch):
        for r in pipe.on_trades(trades[i:i + batch]):
            if isinstance(r, Bar):
                bars.append(r)
            elif isinstance(r, DeadLetter):
                dead.append(r)
    return bars, dead


@pytest.mark.parametrize(("ts", "why"), [
    (T0 * 1000, "ahead of the receive clock"),  # microseconds
    (2**64, "bad trade time"),  # JSON reads it as a float: not an integer of ms
    (2**63 - 1, "ahead of the receive clock"),
    (T0 + DAY, "ahead of the receive clock"),
    (1, "before trade_time.min_trade_time"),
    (T0 // 1000, "before trade_time.min_trade_time"),  # seconds
])
def test_parser_refuses_trade_times_far_from_the_receive_clock(ts: int, why: str) -> None:
    trades, dead = parse_messages([_msg(7, ts), _msg(8, T0)], SYMBOLS, T0 + 5)
    assert [t.trade_id for t in trades] == [8]
    (d,) = dead
    assert d.reason.startswith(("implausible trade time", "bad trade time")) and why in d.reason, d.reason
    assert d.ts == T0 + 5  # stamped with the receive time, not the bad one


def test_parser_accepts_a_small_clock_skew_and_old_trades() -> None:
    trades, dead = parse_messages([_msg(1, T0 + 30_000), _msg(2, T0 - 3 * DAY)], SYMBOLS, T0)
    assert dead == [] and len(trades) == 2


def test_one_trade_a_day_ahead_is_a_dead_letter_and_the_day_is_not_blanked() -> None:
    tape = _tape(30)
    clean, clean_dead = _run(SymbolPipeline("BTC/USDT", ("1m",)), tape)
    bad = [*tape[:40], Trade("BTC/USDT", 41, T0 + DAY, 60_000.0, 0.01, False),
           *(t._replace(trade_id=t.trade_id + 1) for t in tape[40:])]
    bars, dead = _run(SymbolPipeline("BTC/USDT", ("1m",)), bad)
    assert clean_dead == []
    assert len(bars) == len(clean) == 29  # not 1,436 flat bars
    assert [(b.ts, b.close, b.volume) for b in bars] == [(b.ts, b.close, b.volume) for b in clean]
    (d,) = dead  # the bad trade, and no real trade sent away as late
    assert d.reason.startswith("implausible trade time") and d.ts == T0 + DAY


def test_a_jump_confirmed_by_later_trades_is_real_and_fills_its_empty_bars() -> None:
    before, after = _tape(10), _tape(10, start=T0 + 10 * M + 2 * 3_600_000, first_id=41)
    bars, dead = _run(SymbolPipeline("BTC/USDT", ("1m",)), [*before, *after])
    assert dead == []
    assert [b.ts for b in bars] == list(range(T0, T0 + 10 * M + 2 * 3_600_000 + 9 * M, M))
    assert sum(b.trade_count for b in bars) == 20 * 4 - 4  # all but the last open bar's


def test_a_sparse_symbol_trading_less_often_than_max_jump_loses_nothing() -> None:
    sparse = [Trade("BTC/USDT", i, T0 + i * 20 * M, 100.0 + i, 1.0, False) for i in range(12)]  # every 20 min
    pipe = SymbolPipeline("BTC/USDT", ("1m",))
    bars, dead = _run(pipe, sparse, batch=1)
    assert dead == []
    # Trades go on in threes (confirm_trades): 9 in closed bars, one in the open bar, two still held.
    assert sum(b.trade_count for b in bars) == 9 and [t.trade_id for t in pipe.guard.held] == [10, 11]


def test_a_trade_far_ahead_of_a_real_jump_is_refuted_and_the_jump_kept() -> None:
    tape = _tape(5)
    after = _tape(5, start=T0 + 5 * M + 3_600_000, first_id=21)
    bad = Trade("BTC/USDT", 20, T0 + DAY, 1.0, 1.0, False)
    bars, dead = _run(SymbolPipeline("BTC/USDT", ("1m",)), [*tape, bad, *after], batch=1)
    assert [d.ts for d in dead] == [T0 + DAY]
    assert bars[-1].ts == T0 + 5 * M + 3_600_000 + 3 * M and len(bars) == 5 + 60 + 4


def test_empty_bars_one_trade_closes_are_capped_and_the_gap_is_reported() -> None:
    pipe = SymbolPipeline("BTC/USDT", ("1m",), max_empty_bars=100, confirm_trades=1)
    far = T0 + 30 * DAY
    bars, dead = _run(pipe, [*_tape(2), Trade("BTC/USDT", 9, far, 1.0, 1.0, False),
                             Trade("BTC/USDT", 10, far + M, 1.0, 1.0, False)])
    assert [b.trade_count for b in bars] == [4, 4] + [0] * 100 + [1]
    (d,) = dead
    assert d.reason.startswith("unfilled gap: ") and "bars.max_empty_bars=100" in d.reason
    assert d.ts == T0 + 102 * M


def test_a_microsecond_trade_reaching_the_pipeline_is_held_not_a_memory_error() -> None:
    bars, dead = _run(SymbolPipeline("BTC/USDT", ("1m",)),
                      [*_tape(2), Trade("BTC/USDT", 9, T0 * 1000, 1.0, 1.0, False), *_tape(2, T0 + 2 * M, 10)])
    assert len(bars) == 3 and [d.ts for d in dead] == [T0 * 1000]


def test_guard_state_survives_a_snapshot() -> None:
    a = TradeTimeGuard(max_jump_ms=60_000, confirm_trades=3)
    a.check([Trade("X", 1, T0, 1.0, 1.0, False), Trade("X", 2, T0 + DAY, 1.0, 1.0, False)])
    b = TradeTimeGuard(60_000, 3, state=orjson.loads(orjson.dumps(a.snapshot())))
    rest = [Trade("X", 3, T0 + DAY + 1, 1.0, 1.0, False), Trade("X", 4, T0 + DAY + 2, 1.0, 1.0, False)]
    assert a.check(rest) == b.check(rest)
    assert [t.trade_id for t in b.check([])[0]] == [] and b.held == [] and b.last_ts == T0 + DAY + 2


def test_pipeline_snapshot_keeps_held_trades_and_the_guard_settings() -> None:
    pipe = SymbolPipeline("BTC/USDT", ("1m",), max_empty_bars=5, max_jump_ms=120_000, confirm_trades=2)
    pipe.on_trades([*_tape(1), Trade("BTC/USDT", 5, T0 + DAY, 1.0, 1.0, False)])
    again = SymbolPipeline.from_snapshot(pickle.loads(pickle.dumps(pipe.snapshot())))  # as Bytewax keeps it
    assert (again.max_empty_bars, again.guard.max_jump_ms, again.guard.confirm_trades) == (5, 120_000, 2)
    assert again.guard.held == pipe.guard.held != []


@pytest.mark.parametrize(("env", "field"), [
    ({"CRYPTOSTREAM_TRADE_TIME__MAX_AHEAD_MS": "-1"}, "trade_time.max_ahead_ms"),
    ({"CRYPTOSTREAM_TRADE_TIME__CONFIRM_TRADES": "0"}, "trade_time.confirm_trades"),
    ({"CRYPTOSTREAM_TRADE_TIME__MIN_TRADE_TIME": "2010-01-01T00:00:00"}, "trade_time.min_trade_time"),
    ({"CRYPTOSTREAM_BARS__MAX_EMPTY_BARS": "-5"}, "bars.max_empty_bars"),
])
def test_bad_tolerances_stop_at_start_naming_the_field(env: dict[str, str], field: str) -> None:
    with pytest.raises(SettingsError, match=field.replace(".", r"\.")):
        load_settings(env=env)


@pytest.mark.parametrize("late", ["duplicate", "reordered"])
def test_an_old_trade_arriving_late_does_not_refute_a_held_real_jump(late: str) -> None:
    # The chaos storm of every fault at once: after a real hole in the recording, the first trades
    # were held; a late copy of a trade from before the hole (a duplicate, a reordered or a REST-refetched
    # message) then refuted them as "implausible trade time: ... 23,759 s after the symbol's latest trade".
    before, after = _tape(5), _tape(5, start=T0 + 5 * M + 23_759_000, first_id=21)
    old = before[-1] if late == "duplicate" else before[-2]
    stream = [*before[:-2], *([before[-2], before[-1]] if late == "duplicate" else [before[-1]]), after[0], after[1],
              old, *after[2:]]
    bars, dead = _run(SymbolPipeline("BTC/USDT", ("1m",)), stream, batch=1)
    clean, _ = _run(SymbolPipeline("BTC/USDT", ("1m",)), [*before, *after], batch=1)
    assert not [d for d in dead if d.reason.startswith("implausible")], dead
    assert [(b.ts, b.trade_count, b.volume) for b in bars] == [(b.ts, b.trade_count, b.volume) for b in clean]


def test_a_later_trade_near_the_latest_still_refutes_a_held_outlier_of_a_lower_id() -> None:
    guard = TradeTimeGuard()
    guard.check(_tape(1))
    outlier = Trade("BTC/USDT", 5, T0 + DAY, 1.0, 1.0, False)
    late_old = Trade("BTC/USDT", 3, T0 + 30_000, 60_002.0, 0.01, True)  # older than the outlier: no verdict
    ok, dead = guard.check([outlier, late_old])
    assert ok == [late_old] and dead == [] and guard.held == [outlier]
    ok, dead = guard.check([Trade("BTC/USDT", 6, T0 + 60_000, 60_000.0, 0.01, False)])
    assert [d.ts for d in dead] == [T0 + DAY] and guard.held == []
