"""The REST gap fill reads its replies as untrusted input (flows/sources/rest_fill.py, issue 17).

A row the fill cannot use becomes a dead letter with its reason, through the flow's one
parser (the fill hands it on as a ``restRefused`` message); a reply that is not a list, or a
ccxt error, ends that fill as failed with a warning and such a dead letter; the fill never
raises.  Before, ``int(r["a"])`` and friends raised inside the source and stopped the flow,
and ``bool("false")`` flipped a taker side.

The property test feeds arbitrary replies (wrong types, missing fields, huge, negative,
NaN and infinite numbers, strings, nested junk, error objects) to both fills, public
``aggTrades`` and keyed ``historicalTrades``, through a scripted exchange: the replies
themselves are the input under test, which the replay exchange cannot serve.
``CRYPTOSTREAM_FUZZ_EXAMPLES`` sets the number of examples (2,000 by default, about 10 s);
the chaos suite's row runs it with more (``python -m tests.chaos``).
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
from decimal import Decimal
from typing import Any

import ccxt
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.operators.parse import MAX_TRADE_ID, PRICE_RANGE, QTY_RANGE, parse_messages
from flows.operators.trade_time import DEFAULT_TRADE_TIME
from flows.records import DeadLetter, Trade
from flows.sources.id_gaps import IdGapRepair
from flows.sources.rest_fill import MAX_AGG_TRADES, FillRetry, TradeFiller

SYMBOLS = {"BTCUSDT": "BTC/USDT"}
T0 = 1_723_161_255_342
RECEIVED = T0 + 5
FIRST = 1_000_000  # the first missing trade id of every fill below
DECIMAL = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")
EXAMPLES = int(os.environ.get("CRYPTOSTREAM_FUZZ_EXAMPLES", "2000"))
REFUSED = "refused REST reply: "
ONCE = FillRetry(attempts=1)  # the fuzzed replies' transient errors end the fill at once (retries: test_rest_fill_retry)


class ScriptedExchange:
    """Answers each REST call with the next scripted reply (an empty list once they run out)."""

    def __init__(self, replies: list[Any]) -> None:
        self.replies = list(replies)
        self.consumed: list[Any] = []

    def _next(self, params: dict[str, Any]) -> Any:
        reply = self.replies.pop(0) if self.replies else []
        self.consumed.append(reply)
        if isinstance(reply, ccxt.BaseError):
            raise reply
        return reply

    publicGetAggTrades = _next  # noqa: N815 (ccxt's names)
    publicGetHistoricalTrades = _next  # noqa: N815


def parse(msgs: list[bytes]) -> tuple[list[Trade], list[DeadLetter]]:
    return parse_messages(msgs, SYMBOLS, RECEIVED, source="binance.rest")


def agg(agg_id: int, first: int, n: int = 1, **changes: Any) -> dict[str, Any]:
    return {"a": agg_id, "p": "61837.63000000", "q": f"{n}.00000000", "f": first, "l": first + n - 1, "T": T0,
            "m": True,
            **changes}


def hist(trade_id: int, **changes: Any) -> dict[str, Any]:
    return {"id": trade_id, "price": "61837.63000000", "qty": "0.02000000", "quoteQty": "1236.75", "time": T0,
            "isBuyerMaker": False, "isBestMatch": True, **changes}


@pytest.mark.parametrize(("row", "reason"), [
    (agg(7, FIRST, a="7"), "aggTrades: bad a: '7'"),
    (agg(7, FIRST, f=None), "aggTrades: bad f: None"),
    (agg(7, FIRST, T=float(T0)), "aggTrades: bad T"),
    (agg(7, FIRST, m="false"), "aggTrades: bad buyer-is-maker flag m: 'false'"),  # bool("false") was True
    (agg(7, FIRST, q=float("nan")), "aggTrades: bad quantity: nan"),
    (agg(7, FIRST, q="1e308"), "aggTrades: bad quantity"),
    (agg(7, FIRST, p=61837.63), "aggTrades: bad price"),
    (agg(7, FIRST, l=FIRST + 10**12), "aggTrades: bad trade ids f..l"),  # would expand to 10**12 trades
    (agg(7, FIRST, l=FIRST - 1), "aggTrades: bad trade ids f..l"),
    (agg(7, FIRST, 3, q="0.00000002"), "aggTrades: bad quantity: '0.00000002' (less than a step"),
    ({"a": 7}, "aggTrades: missing fields: p,q,f,l,T,m"),
    ([7, "x"], "aggTrades: not a JSON object: list"),
])
def test_a_bad_aggregate_is_a_dead_letter_and_the_good_one_after_it_is_filled(row, reason) -> None:
    ex = ScriptedExchange([[row, agg(8, FIRST + 1)]])
    filler = TradeFiller(None, None, exchange=ex)
    trades, dead = parse(filler.trades_between("BTCUSDT", FIRST, T0 - 1000, T0, known={}))
    assert [t.trade_id for t in trades] == [FIRST + 1]
    (d,) = dead
    assert d.reason.startswith(REFUSED + reason), d.reason
    assert d.source == "binance.rest" and d.symbol == "BTC/USDT"
    assert filler.refused == 1


@pytest.mark.parametrize(("row", "reason"), [
    (hist(FIRST, id="1000000"), "refused REST reply: historicalTrades: bad id: '1000000'"),
    (hist(FIRST, id=2**64), "refused REST reply: historicalTrades: bad id"),
    ({"price": "1"}, "refused REST reply: historicalTrades: missing fields: id,qty,time,isBuyerMaker"),
    (hist(FIRST, isBuyerMaker="false"), "bad buyer-is-maker flag m: 'false'"),  # the parser's own reason
    (hist(FIRST, price=True), "bad price: True"),
    (hist(FIRST, qty=float("inf")), "bad quantity: None"),  # JSON has no inf: it travels as null
    (hist(FIRST, time=T0 * 1000), "implausible trade time"),
    (hist(FIRST, time=2**70), "refused REST reply: historicalTrades: a value JSON cannot carry"),
])
def test_a_bad_historical_trade_is_a_dead_letter_and_the_good_one_after_it_is_filled(row, reason) -> None:
    ex = ScriptedExchange([[row, hist(FIRST + 1)]])
    trades, dead = parse(TradeFiller(None, None, api_key="k", exchange=ex).trades_from("BTCUSDT", FIRST, None))
    assert [t.trade_id for t in trades] == [FIRST + 1]
    (d,) = dead
    assert d.reason.startswith(reason), d.reason


@pytest.mark.parametrize("reply", [
    {"code": -1121, "msg": "Invalid symbol."},
    "<html>502 Bad Gateway</html>",
    None,
    ccxt.BadSymbol('binance {"code":-1121,"msg":"Invalid symbol."}'),  # not transient: no retry
])
@pytest.mark.parametrize("key", [None, "k"])
def test_a_reply_that_is_not_a_list_fails_the_fill_with_a_warning_and_a_dead_letter(reply, key, caplog) -> None:
    # aggTrades: the aggregate holding FIRST is found, then its page fails; historicalTrades: the first page fails
    script = [[agg(5, FIRST)], reply, [agg(6, FIRST + 1)]] if key is None else [reply, [hist(FIRST)]]
    ex = ScriptedExchange(script)
    filler = TradeFiller(None, None, api_key=key, exchange=ex)
    with caplog.at_level(logging.WARNING, logger="flows.sources.rest_fill"):
        msgs = filler.trades_from("BTCUSDT", FIRST, None, since_ms=T0 - 1000)
    trades, dead = parse(msgs)
    (d,) = dead
    assert d.reason.startswith(REFUSED) and ("not a list" in d.reason or "request failed" in d.reason), d.reason
    assert trades == [] and filler.failed == 1
    assert ex.consumed == script[:len(script) - 1], "the fill stops at the failed reply"
    assert "REST gap fill failed" in caplog.text


def test_a_failed_reply_leaves_the_hole_to_the_unfilled_ids_dead_letter() -> None:
    ex = ScriptedExchange([{"code": -1003, "msg": "Too many requests"}])
    repair = IdGapRepair("BTC/USDT")
    first = Trade("BTC/USDT", FIRST - 1, T0 - 100, 61837.63, 0.02, True)
    last = Trade("BTC/USDT", FIRST + 2, T0, 61837.63, 0.02, True)
    repair.repair([first], TradeFiller(None, None, exchange=ex), parse)
    out, dead = repair.repair([last], TradeFiller(None, None, exchange=ex), parse)
    assert out == [last]
    assert [d.reason.split(":")[0] for d in dead] == ["refused REST reply", "unfilled trade ids"]


# ---------------------------------------------------------------------------------------------------------------
# Arbitrary replies

_ODD = [None, True, False, -1, 0, 1.5, float("nan"), float("inf"), -float("inf"), 2**63, 2**64, -(2**63), 2**70,
        1e308, "", " ", "7", "1e3", "nan", "inf", "-5", "1_000", "\uff11", "false", "true", "0.0", "9" * 400,
        "0." + "0" * 330 + "1", [], {}, [1, 2], {"a": 1}, "\x00", "\ud800", " 5", "5 ", "+5", "0x10", T0 * 1000,
        float(T0), str(T0), -T0, 1]


def _junk(rng: random.Random, depth: int = 0) -> Any:
    """Return a nested JSON-like value (with the NaN, infinities and big integers a Python decoder gives)."""
    k = rng.randrange(8 if depth < 2 else 5)
    if k == 0:
        return rng.choice(_ODD)
    if k == 1:
        return rng.randrange(-2**70, 2**70)
    if k == 2:
        return rng.uniform(-1e300, 1e300) if rng.random() < 0.5 else rng.random()
    if k == 3:
        return "".join(chr(rng.randrange(32, 0x3000)) for _ in range(rng.randrange(8)))
    if k == 4:
        return rng.choice([None, True, False])
    if k in (5, 6):
        return [_junk(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice("apqflTmx"): _junk(rng, depth + 1) for _ in range(rng.randrange(4))}


def _decimal(rng: random.Random) -> str:
    return f"{rng.uniform(1e-8, 1e7):.8f}" if rng.random() < 0.9 else rng.choice(["1", "0.00000001", ".5", "5.", "12"])


def _row(rng: random.Random, valid: dict[str, Any]) -> Any:
    """Return a row: each field valid, odd, junk or (now and then) missing; now and then not a row at all."""
    if rng.random() < 0.04:
        return _junk(rng)
    out = {}
    for key, value in valid.items():
        k = rng.random()
        if k < 0.025:
            continue
        out[key] = value if k < 0.8 else rng.choice(_ODD) if k < 0.93 else _junk(rng)
    return out


def _agg_row(rng: random.Random) -> Any:
    f = rng.randrange(FIRST - 5, FIRST + 40)
    return _row(rng, {"a": rng.randrange(10**6), "p": _decimal(rng), "q": _decimal(rng), "f": f,
                      "l": f + rng.randrange(5), "T": T0 + rng.randrange(-600_000, 50_000), "m": rng.random() < 0.5})


def _hist_row(rng: random.Random) -> Any:
    return _row(rng, {"id": rng.randrange(FIRST, FIRST + 50), "price": _decimal(rng), "qty": _decimal(rng),
                      "quoteQty": _decimal(rng), "time": T0 + rng.randrange(-600_000, 50_000),
                      "isBuyerMaker": rng.random() < 0.5, "isBestMatch": True})


def _replies(seed: int, row: Any) -> list[Any]:
    """Return 1-5 replies: mostly lists of 0-8 rows, else junk that is not a list or a ccxt error."""
    rng = random.Random(seed)
    out: list[Any] = []
    for _ in range(rng.randrange(1, 6)):
        k = rng.random()
        if k < 0.8:
            out.append([row(rng) for _ in range(rng.randrange(9))])
        elif k < 0.95:
            junk = _junk(rng)
            out.append(junk if type(junk) is not list else {"code": -1003, "msg": junk})
        else:
            out.append(ccxt.NetworkError("timed out"))
    return out


def _int_ok(v: Any) -> bool:
    return type(v) is int and 0 <= v <= MAX_TRADE_ID


def _decimal_ok(v: Any, bounds: tuple[float, float]) -> bool:
    return type(v) is str and DECIMAL.fullmatch(v) is not None and bounds[0] <= float(v) <= bounds[1]


def _agg_ok(r: Any) -> bool:
    """Binance's aggTrades schema, written out independently of the fill."""
    return (type(r) is dict and all(_int_ok(r.get(k)) for k in "aflT") and r["f"] <= r["l"] < r["f"] + MAX_AGG_TRADES
            and type(r.get("m")) is bool and _decimal_ok(r.get("p"), PRICE_RANGE) and _decimal_ok(r.get("q"), QTY_RANGE)
            and Decimal(r["q"]) * 10**8 >= r["l"] - r["f"] + 1)  # a step of 1e-8 at least for each trade


def _time_ok(ts: Any) -> bool:
    return type(ts) is int and DEFAULT_TRADE_TIME.min_ts <= ts <= RECEIVED + DEFAULT_TRADE_TIME.max_ahead_ms


def _hist_ok(r: Any) -> bool:
    return (type(r) is dict and _int_ok(r.get("id")) and _time_ok(r.get("time")) and type(r.get("isBuyerMaker")) is bool
            and _decimal_ok(r.get("price"), PRICE_RANGE) and _decimal_ok(r.get("qty"), QTY_RANGE))


def _conforming(t: Trade) -> bool:
    return (t.symbol == "BTC/USDT" and _int_ok(t.trade_id) and _time_ok(t.ts) and type(t.buyer_is_maker) is bool
            and all(math.isfinite(v) for v in (t.price, t.qty, t.price * t.qty))
            and PRICE_RANGE[0] <= t.price <= PRICE_RANGE[1] and QTY_RANGE[0] <= t.qty <= QTY_RANGE[1])


def _failed_replies(consumed: list[Any]) -> int:
    return sum(type(r) is not list for r in consumed)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.integers(0, 2**32), st.sampled_from(["between", "from", "from_since", "from_until"]))
def test_fuzzed_aggtrades_replies_never_crash_and_every_refused_row_is_a_dead_letter(seed: int, how: str) -> None:
    ex = ScriptedExchange(_replies(seed, _agg_row))  # a seeded generator: far faster than hypothesis' draws
    filler = TradeFiller(None, None, exchange=ex, retry=ONCE)
    if how == "between":
        msgs = filler.trades_between("BTCUSDT", FIRST, T0 - 600_000, T0 + 50_000, known={})
    else:
        msgs = filler.trades_from("BTCUSDT", FIRST, FIRST + 30 if how == "from_until" else None,
                                  since_ms=T0 - 600_000 if how == "from_since" else None)
    trades, dead = parse(msgs)
    rows = [r for reply in ex.consumed if type(reply) is list for r in reply]
    refused = [d for d in dead if d.reason.startswith(REFUSED)]
    assert len(refused) == sum(not _agg_ok(r) for r in rows) + _failed_replies(ex.consumed)
    assert filler.failed <= 1, "a failed reply ends the fill"
    good = [r for r in rows if _agg_ok(r)]
    for t in trades:
        assert _conforming(t), t
        assert any(r["f"] <= t.trade_id <= r["l"] and (float(r["p"]), r["T"], r["m"]) == (t.price, t.ts, t.buyer_is_maker)
                   for r in good), t  # every trade comes from a good aggregate
    # the parser refuses only what the row check cannot know: the time against the receive clock and its floor
    assert all(d.reason.startswith(("implausible trade time", "bad trade time", REFUSED)) for d in dead), dead


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.integers(0, 2**32))
def test_fuzzed_historical_replies_never_crash_and_every_refused_row_is_a_dead_letter(seed: int) -> None:
    ex = ScriptedExchange(_replies(seed, _hist_row))
    trades, dead = parse(TradeFiller(None, None, api_key="k", exchange=ex, retry=ONCE).trades_from("BTCUSDT", FIRST,
                                                                                                  None))
    rows = [r for reply in ex.consumed if type(reply) is list for r in reply]
    good = [r for r in rows if _hist_ok(r)]
    assert len(dead) == len(rows) - len(good) + _failed_replies(ex.consumed)
    assert [(t.trade_id, t.ts, t.price, t.qty, t.buyer_is_maker) for t in trades] == [
        (r["id"], r["time"], float(r["price"]), float(r["qty"]), r["isBuyerMaker"]) for r in good]
    assert all(_conforming(t) for t in trades)
    assert all(orjson.loads(d.payload) for d in dead)  # every dead letter keeps its input
