"""The replay exchange's ``GET /api/v3/aggTrades`` behaves as Binance's, read through ccxt.

Consecutive trades of one time, price and taker side are one aggregate with the exact
summed quantity; aggregate ids are their own sequence; ``fromId`` is an aggregate id,
``startTime``/``endTime`` are inclusive (a window of at most an hour), ``limit`` is 500 by
default and at most 1000; each request weighs 4 (``X-MBX-USED-WEIGHT-1M``).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import ccxt
import numpy as np
import pytest

from flows.exchange.binance import make_binance
from flows.operators.parse import parse_messages
from flows.operators.pipeline import SymbolPipeline
from flows.records import Bar
from flows.sources.id_gaps import IdGapRepair
from flows.sources.rest_fill import TradeFiller, known_quantities
from infra.replay_exchange.server import running_replay

SYMBOLS = {"BTCUSDT": "BTC/USDT"}


@pytest.fixture(scope="module")
def replay(shared_data: Path):
    with running_replay([shared_data / "binance-ws-2024-08-08"], rest_horizon="all") as ex:
        yield ex


def all_aggregates(b) -> list[dict]:
    rows, a = [], 0
    while True:
        page = b.publicGetAggTrades({"symbol": "BTCUSDT", "fromId": a, "limit": 1000})
        rows += page
        if len(page) < 1000:
            return rows
        a = int(page[-1]["a"]) + 1


def test_aggregates_group_one_time_price_and_side_with_exact_sums(replay) -> None:
    b = make_binance(replay.http_url, enableRateLimit=False)
    tape = replay.data.tapes["BTCUSDT"]
    rows = all_aggregates(b)
    assert [int(r["a"]) for r in rows] == list(range(int(rows[0]["a"]), int(rows[0]["a"]) + len(rows)))
    assert int(rows[0]["f"]) == tape.ids[0] and int(rows[-1]["l"]) == tape.ids[-1]
    assert all(int(r["f"]) == int(p["l"]) + 1 for p, r in zip(rows, rows[1:], strict=False))  # every trade, once
    assert sum(int(r["l"]) - int(r["f"]) > 0 for r in rows) > 3000  # real data: many multi-trade aggregates
    index = {int(i): k for k, i in enumerate(tape.ids)}
    for r in rows[:3000]:
        lo, hi = index[int(r["f"])], index[int(r["l"])] + 1
        assert set(tape.ts[lo:hi]) == {int(r["T"])} and set(tape.buyer_maker[lo:hi]) == {r["m"]}
        assert set(tape.price[lo:hi]) == {float(r["p"])}
        assert Decimal(r["q"]) == sum(Decimal(tape.qty_str(q)) for q in tape.qty[lo:hi])
    # neighbours differ in time, price or side (else they would be one aggregate)
    assert all((p["T"], p["p"], p["m"]) != (r["T"], r["p"], r["m"]) for p, r in zip(rows, rows[1:], strict=False))


def test_from_id_times_limits_and_errors(replay) -> None:
    b = make_binance(replay.http_url, enableRateLimit=False)
    rows = all_aggregates(b)
    a0 = int(rows[0]["a"])
    assert b.publicGetAggTrades({"symbol": "BTCUSDT", "fromId": a0 + 10, "limit": 3}) == rows[10:13]
    assert len(b.publicGetAggTrades({"symbol": "BTCUSDT", "fromId": a0})) == 500
    assert len(b.publicGetAggTrades({"symbol": "BTCUSDT", "fromId": a0, "limit": 5000})) == 1000
    t = int(rows[100]["T"])
    window = b.publicGetAggTrades({"symbol": "BTCUSDT", "startTime": t, "endTime": t + 2000, "limit": 1000})
    assert window == [r for r in rows if t <= int(r["T"]) <= t + 2000]  # both ends inclusive
    assert b.publicGetAggTrades({"symbol": "BTCUSDT", "limit": 2}) == rows[-2:]  # the most recent
    with pytest.raises(ccxt.BadRequest, match="-1128"):
        b.publicGetAggTrades({"symbol": "BTCUSDT", "fromId": a0, "startTime": t})
    with pytest.raises(ccxt.BadRequest, match="-1127"):
        b.publicGetAggTrades({"symbol": "BTCUSDT", "startTime": t, "endTime": t + 3_600_001})
    trades = b.fetch_trades("BTC/USDT", since=t, limit=5)  # ccxt's default method: aggTrades
    assert [int(x["id"]) for x in trades] == [int(r["a"]) for r in rows if int(r["T"]) >= t][:5]
    b.publicGetAggTrades({"symbol": "BTCUSDT", "limit": 1})
    used = int(b.last_response_headers["X-MBX-USED-WEIGHT-1M"])
    b.publicGetAggTrades({"symbol": "BTCUSDT", "limit": 1})
    assert int(b.last_response_headers["X-MBX-USED-WEIGHT-1M"]) in (used + 4, 4)  # 4 unless a minute turned


def _bars(msgs) -> list[Bar]:
    trades, dead = parse_messages(msgs, SYMBOLS, 1_800_000_000_000)
    assert dead == []
    return [r for r in SymbolPipeline("BTC/USDT", ("1m",)).on_trades(trades) if isinstance(r, Bar)]


def test_the_public_fill_through_ccxt_gives_the_clean_bars(replay) -> None:
    tape = replay.data.tapes["BTCUSDT"]
    idx = np.flatnonzero(np.diff(tape.ts) == 0)  # trades sharing a time with the next: inside aggregates
    start_k, until_k = int(idx[500]) + 1, int(idx[-500]) + 1
    clean = tape.payloads(np.arange(len(tape)), combined=False)
    filler = TradeFiller(replay.http_url, None)  # no key: aggTrades
    known = known_quantities(clean[max(start_k - 256, 0):start_k])
    filled = filler.trades_from("BTCUSDT", int(tape.ids[start_k]), int(tape.ids[until_k]), known,
                                since_ms=int(tape.ts[start_k - 1]))
    assert filler.inexact == 0 and filler.method == "aggTrades"
    assert _bars(clean[:start_k] + filled + clean[until_k:]) == _bars(clean)
    # after a restart (nothing remembered, no time): found by bisecting the aggregate ids
    again = TradeFiller(replay.http_url, None)
    restarted = again.trades_from("BTCUSDT", int(tape.ids[start_k]), int(tape.ids[until_k]))
    assert restarted[-50:] == filled[-50:]
    assert again.calls < 50  # ~31 to bisect ids of 1.9e9, one a page of 1,000 aggregates


def test_holes_of_corrupted_trades_are_refetched_and_give_the_clean_bars(replay) -> None:
    tape = replay.data.tapes["BTCUSDT"]
    clean = tape.payloads(np.arange(len(tape)), combined=False)
    rng = np.random.default_rng(3)
    lost = set(rng.choice(len(clean), size=len(clean) // 50, replace=False).tolist()) - {0}  # 2%
    step = IdGapRepair("BTC/USDT")
    filler = TradeFiller(replay.http_url, None)
    parse = lambda msgs: parse_messages(msgs, SYMBOLS, 1_800_000_000_000)  # noqa: E731
    pipe = SymbolPipeline("BTC/USDT", ("1m",))
    bars = []
    for i in range(0, len(clean), 700):
        trades, _ = parse([m for k, m in enumerate(clean[i:i + 700], start=i) if k not in lost])
        repaired, dead = step.repair(trades, filler, parse)
        assert dead == []
        bars += [r for r in pipe.on_trades(repaired) if isinstance(r, Bar)]
    assert step.filled >= len(lost) and filler.inexact == 0
    assert bars == _bars(clean)
