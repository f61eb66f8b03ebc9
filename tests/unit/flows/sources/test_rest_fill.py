"""Bars rebuilt from aggregated trades equal the bars of the single trades (flows/sources/rest_fill.py).

An aggregate has one price, one time and one taker side; :func:`expand` splits its
quantity back over its trade ids in whole steps of 1e-8, and the bar builder sums
volumes exactly, so every bar and feature equals the clean stream's bit for bit, also
when a gap starts or ends inside an aggregate.
"""

from __future__ import annotations

import random

import pytest

from flows.operators.parse import parse_messages
from flows.operators.pipeline import SymbolPipeline
from flows.records import Bar, FeatureRow, Trade
from flows.sources.rest_fill import (
    AggTrade,
    expand,
    known_quantities,
    trade_message,
    units_of,
    units_text,
)

SYMBOLS = {"BTCUSDT": "BTC/USDT"}
T0 = 1_723_161_600_000
RECEIVED = T0 + 10 * 86_400_000


def market(n_aggs: int = 9000, seed: int = 4) -> tuple[list[bytes], list[AggTrade]]:
    """Single-trade messages and their aggregates: runs of 1-12 fills of one taker order (one time, price, side)."""
    rng = random.Random(seed)
    msgs, aggs = [], []
    tid, ts, price = 1_000_000, T0, 61_000.0
    for a in range(n_aggs):
        ts += rng.choice((0, 0, 1, 3, 900, 2500, 15_000))  # ~390 minutes: past the features' warm-up
        price = round(price * (1 + rng.gauss(0, 2e-4)), 2)
        maker = rng.random() < 0.5
        lots = [rng.choice((1, 7, 100, 12_345, 2_000_000, 99_999_999)) for _ in range(rng.choice((1, 1, 1, 2, 3, 12)))]
        p = f"{price:.8f}"
        for k, lot in enumerate(lots):
            msgs.append(trade_message("BTCUSDT", tid + k, ts, p, units_text(lot), maker))
        aggs.append(AggTrade(50_000 + a, p, units_text(sum(lots)), tid, tid + len(lots) - 1, ts, maker))
        tid += len(lots)
    return msgs, aggs


def run(msgs: list[bytes], batch: int = 500) -> tuple[list[Bar], list[FeatureRow]]:
    pipe = SymbolPipeline("BTC/USDT", ("1m",))
    out = []
    for i in range(0, len(msgs), batch):
        trades, dead = parse_messages(msgs[i:i + batch], SYMBOLS, RECEIVED)
        assert dead == []
        out += pipe.on_trades(trades)
    bars = [r for r in out if isinstance(r, Bar)]
    return bars, [r for r in out if isinstance(r, FeatureRow)]


@pytest.fixture(scope="module")
def clean():
    msgs, aggs = market()
    bars, feats = run(msgs)
    assert len(bars) > 80 and len(feats) > 20 and len(aggs) < len(msgs)
    return msgs, aggs, bars, feats


def test_aggregates_alone_give_the_bars_and_features_of_the_single_trades(clean) -> None:
    msgs, aggs, bars, feats = clean
    rebuilt, inexact = expand(aggs, {}, aggs[0].first_id, "BTCUSDT")
    assert inexact == [] and len(rebuilt) == len(msgs)
    assert [orjson_id(m) for m in rebuilt] == [orjson_id(m) for m in msgs]
    assert run(rebuilt) == (bars, feats)  # exact: volumes, quote volume, vwap, taker buy, counts, features


def test_a_float_sum_of_the_aggregates_would_not_be_exact(clean) -> None:
    # Why the bar builder sums in integer steps: summing floats, grouping changes the last bits.
    msgs, aggs, _, _ = clean
    singles = [float(orjson_q(m)) for m in msgs]
    grouped = [float(a.qty) for a in aggs]
    assert sum(singles) != sum(grouped)
    assert sum(map(units_of, singles)) == sum(map(units_of, grouped))


@pytest.mark.parametrize("seed", range(6))
def test_a_gap_that_starts_and_ends_inside_aggregates_is_filled_exactly(clean, seed) -> None:
    msgs, aggs, bars, feats = clean
    rng = random.Random(seed)
    multi = [a for a in aggs if a.last_id - a.first_id >= 2]
    lo_agg, hi_agg = sorted(rng.sample(multi, 2), key=lambda a: a.first_id)
    start, until = lo_agg.first_id + 1, hi_agg.first_id + 1  # the gap cuts both aggregates
    base = msgs[0] and orjson_id(msgs[0])
    before, after = msgs[:start - base], msgs[until - base:]
    # the source: what it handed over just before the gap, and the aggregates from the gap's start on
    known = known_quantities(before[-256:])
    needed = [a for a in aggs if a.last_id >= start and a.first_id < until]
    filled, inexact = expand(needed, known, start, "BTCUSDT")
    assert inexact == []
    # the fill also carries the rest of the aggregate that holds until - 1 (the websocket's copies are duplicates)
    assert {orjson_id(m) for m in filled} == set(range(start, hi_agg.last_id + 1))
    got_bars, got_feats = run(before + filled + after)
    assert got_bars == bars and got_feats == feats


def test_a_gap_after_a_restart_without_the_trades_before_it_is_flagged_inexact(clean) -> None:
    _, aggs, _, _ = clean
    agg = next(a for a in aggs if a.last_id - a.first_id >= 2)
    filled, inexact = expand([agg], {}, agg.first_id + 1, "BTCUSDT")
    assert inexact == [agg.agg_id] and len(filled) == agg.last_id - agg.first_id


def test_missing_trades_share_the_rest_in_whole_steps() -> None:
    agg = AggTrade(7, "100.00000000", "0.00000010", 10, 13, T0, False)
    filled, inexact = expand([agg], {10: 4}, 10, "BTCUSDT")  # trade 10 (4 steps) arrived; 11..13 share 6
    trades, dead = parse_messages(filled, SYMBOLS, RECEIVED)
    assert dead == [] and inexact == []
    assert [(t.trade_id, units_of(t.qty), t.price, t.ts, t.buyer_is_maker) for t in trades] == [
        (11, 2, 100.0, T0, False), (12, 2, 100.0, T0, False), (13, 2, 100.0, T0, False)]
    assert isinstance(trades[0], Trade)


def orjson_id(msg: bytes) -> int:
    import orjson

    return int(orjson.loads(msg)["t"])


def orjson_q(msg: bytes) -> str:
    import orjson

    return str(orjson.loads(msg)["q"])
