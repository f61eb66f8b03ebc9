"""Parsing Binance trade messages: good trades through, every bad one refused with its reason."""

from __future__ import annotations

import orjson
import pytest

from flows.operators.parse import parse_messages

SYMBOLS = {"BTCUSDT": "BTC/USDT", "ETHUSDT": "ETH/USDT"}
GOOD = {"e": "trade", "E": 1723161255343, "s": "BTCUSDT", "t": 3735683259, "p": "61837.63000000",
        "q": "0.02000000", "T": 1723161255342, "m": True, "M": True}
RECEIVED = GOOD["T"] + 5  # the host clock when the batch arrived (trade times far from it are refused)


def _msg(**changes) -> bytes:
    doc = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in doc.items() if v is not ...})


def test_raw_and_combined_stream_forms_parse() -> None:
    combined = orjson.dumps({"stream": "btcusdt@trade", "data": GOOD})
    trades, dead = parse_messages([_msg(), combined], SYMBOLS, RECEIVED)
    assert dead == []
    assert len(trades) == 2
    t = trades[0]
    assert (t.symbol, t.trade_id, t.ts, t.price, t.qty, t.buyer_is_maker) == (
        "BTC/USDT", 3735683259, 1723161255342, 61837.63, 0.02, True)


def test_subscription_ack_is_not_a_dead_letter() -> None:
    trades, dead = parse_messages([b'{"result":null,"id":1}'], SYMBOLS, 0)
    assert trades == [] and dead == []


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"e":"trade","s":"BTCUSDT"', "malformed json"),
        (b"[1,2]", "not a json object"),
        (_msg(e="bookTicker"), "not a trade event"),
        (_msg(p=...), "missing fields: p"),
        (_msg(q=..., T=...), "missing fields: q,T"),
        (_msg(s="DOGEUSDT"), "unknown symbol"),
        (_msg(p="NaN"), "bad price"),
        (_msg(p="inf"), "bad price"),
        (_msg(p="0"), "bad price"),
        (_msg(p="-5.0"), "bad price"),
        (_msg(q="0.0"), "bad quantity"),
        (_msg(q="nan"), "bad quantity"),
        (_msg(p="abc"), "bad price"),
        (_msg(T=0), "bad trade time"),
    ],
)
def test_bad_messages_become_dead_letters_with_reason(raw: bytes, reason: str) -> None:
    trades, dead = parse_messages([raw, _msg()], SYMBOLS, RECEIVED)
    assert len(trades) == 1, "a bad message must not stop the good one after it"
    assert len(dead) == 1
    assert dead[0].reason.startswith(reason)
    assert dead[0].ts == RECEIVED
    assert dead[0].payload == raw.decode()
