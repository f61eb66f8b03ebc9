"""The parser takes only Binance's trade schema, and nothing it takes makes a non-finite value (issue 17, defect 4).

The property test draws batches of trade messages whose fields are either valid or
any JSON value (strings that Python's ``float`` or ``int`` would take, booleans,
huge and negative numbers, nested values), plus byte-level mutations of good
messages.  ``CRYPTOSTREAM_FUZZ_EXAMPLES`` sets the number of batches: 2,000 by
default (CI: 2,000 batches of 50 fast-generated messages and 500 drawn batches, about
100,000 messages); the long form is
``CRYPTOSTREAM_FUZZ_EXAMPLES=20000 pytest tests/unit/flows/test_parse_schema.py -k fuzzed``
(about a million messages).
"""

from __future__ import annotations

import json
import math
import os
import random
import re

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.operators.bars import BarBuilder
from flows.operators.features import WARMUP
from flows.operators.parse import MAX_TRADE_ID, PRICE_RANGE, QTY_RANGE, parse_messages
from flows.operators.pipeline import SymbolPipeline
from flows.operators.trade_time import DEFAULT_TRADE_TIME
from flows.records import Bar, FeatureRow

SYMBOLS = {"BTCUSDT": "BTC/USDT"}
T0 = 1_723_161_255_342
RECEIVED = T0 + 5
GOOD = {"e": "trade", "E": T0 + 1, "s": "BTCUSDT", "t": 3735683259, "p": "61837.63000000", "q": "0.02000000",
        "T": T0, "m": True, "M": True}
DECIMAL = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")
EXAMPLES = int(os.environ.get("CRYPTOSTREAM_FUZZ_EXAMPLES", "2000"))


def _msg(**changes) -> bytes:
    return json.dumps({**GOOD, **changes}, ensure_ascii=False).encode()


@pytest.mark.parametrize(("changes", "reason"), [
    ({"m": "false"}, "bad buyer-is-maker flag"),
    ({"m": 0}, "bad buyer-is-maker flag"),
    ({"m": None}, "bad buyer-is-maker flag"),
    ({"p": True}, "bad price"),
    ({"p": 61837.63}, "bad price"),
    ({"p": "1_000"}, "bad price"),
    ({"p": "\uff11\uff12\uff13"}, "bad price"),  # full-width digits
    ({"p": " 61837.63"}, "bad price"),
    ({"p": "61837.63\n"}, "bad price"),
    ({"p": "+5"}, "bad price"),
    ({"p": "1e3"}, "bad price"),
    ({"p": "1.2.3"}, "bad price"),
    ({"p": "1" + "0" * 20}, "bad price"),  # 1e20, beyond any price
    ({"q": "1e308"}, "bad quantity"),
    ({"q": "9" * 400}, "bad quantity"),  # plain decimal, float gives inf
    ({"q": "0." + "0" * 330 + "1"}, "bad quantity"),  # underflows to 0
    ({"q": []}, "bad quantity"),
    ({"t": -1}, "bad trade id"),
    ({"t": 1.9}, "bad trade id"),
    ({"t": "42"}, "bad trade id"),
    ({"t": True}, "bad trade id"),
    ({"t": 2**63}, "bad trade id"),
    ({"T": str(T0)}, "bad trade time"),
    ({"T": float(T0)}, "bad trade time"),
    ({"s": ["BTCUSDT"]}, "unknown symbol"),
])
def test_lax_inputs_are_dead_letters_naming_the_field(changes: dict, reason: str) -> None:
    raw = _msg(**changes)
    trades, dead = parse_messages([raw, _msg()], SYMBOLS, RECEIVED)
    assert len(trades) == 1, "the bad message must be refused, the good one after it kept"
    (d,) = dead
    assert d.reason.startswith(reason), d.reason
    assert d.payload == raw.decode()


def test_the_extremes_accepted_keep_bars_and_features_finite() -> None:
    (p_lo, p_hi), (q_lo, q_hi) = PRICE_RANGE, QTY_RANGE
    msgs = []
    n = WARMUP + 9  # one-minute bars: the features warm up after WARMUP
    for i in range(n * 4):
        p, q = (p_lo, q_hi) if i % 3 else (p_hi, q_lo)
        msgs.append(_msg(t=i, T=T0 - n * 60_000 + i * 15_000, p=f"{p:.12f}" if p < 1 else f"{p:.0f}",
                         q=f"{q:.12f}" if q < 1 else f"{q:.0f}", m=i % 2 == 0))
    trades, dead = parse_messages(msgs, SYMBOLS, RECEIVED)
    assert dead == [] and len(trades) == n * 4
    out = SymbolPipeline("BTC/USDT", ("1m",)).on_trades(trades)
    feats = [r for r in out if isinstance(r, FeatureRow)]
    assert feats, "features must have warmed up"
    values = [v for r in out if isinstance(r, Bar) for v in r[3:]] + [v for r in feats for v in r.values.values()]
    assert all(math.isfinite(v) for v in values)


def _conforms(doc: dict) -> bool:
    doc = doc.get("data", doc) if "stream" in doc else doc
    return (type(doc["t"]) is int and 0 <= doc["t"] <= MAX_TRADE_ID and type(doc["T"]) is int
            and DEFAULT_TRADE_TIME.min_ts <= doc["T"] <= RECEIVED + DEFAULT_TRADE_TIME.max_ahead_ms
            and type(doc["m"]) is bool and doc["s"] in SYMBOLS
            and all(type(doc[k]) is str and DECIMAL.fullmatch(doc[k]) for k in ("p", "q")))


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=4)
_numeric_text = st.one_of(
    st.decimals(allow_nan=True, places=8).map(str), st.floats().map(str), st.integers(-2**70, 2**70).map(str),
    st.text(alphabet="0123456789._-+eE \t\uff11\u0661", min_size=1, max_size=14))
_valid = {"p": st.floats(1e-8, 1e7).map(lambda x: f"{x:.8f}"), "q": st.floats(1e-8, 1e6).map(lambda x: f"{x:.8f}"),
          "t": st.integers(0, 2**40), "T": st.integers(T0 - 600_000, T0 + 50_000), "m": st.booleans(),
          "s": st.just("BTCUSDT"), "e": st.just("trade")}


@st.composite
def _message(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:  # a good message mutated at the byte level
        raw = bytearray(_msg(t=draw(_valid["t"])))
        for _ in range(draw(st.integers(1, 3))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        return bytes(raw)
    doc: dict = {}
    for key, valid in _valid.items():
        choice = draw(st.integers(0, 19))
        if choice < 16:
            doc[key] = draw(valid)
        elif choice < 18:
            doc[key] = draw(_numeric_text)
        elif choice == 18:
            doc[key] = draw(_json)
    if kind == 1:
        doc = {"stream": "btcusdt@trade", "data": doc}
    try:
        return json.dumps(doc, ensure_ascii=draw(st.booleans())).encode()
    except ValueError:  # a float JSON cannot carry
        return b"{}"


def _check(batch: list[bytes]) -> int:
    """Parse ``batch`` and check the properties; return the number of trades accepted."""
    trades, dead = parse_messages(batch, SYMBOLS, RECEIVED)
    assert len(trades) + len(dead) <= len(batch)
    accepted = []
    for raw in batch:
        one, _ = parse_messages([raw], SYMBOLS, RECEIVED)
        if one:
            assert _conforms(orjson.loads(raw)), raw
            accepted += one
    assert accepted == trades
    for t in trades:
        assert all(math.isfinite(v) for v in (t.price, t.qty, t.price * t.qty)) and t.price * t.qty > 0
    if trades:
        b = BarBuilder("BTC/USDT", "1m")
        bars, _ = b.update(sorted(trades, key=lambda t: (t.ts, t.trade_id)))
        bars += b.advance(max(t.ts for t in trades) + 120_000)
        assert all(math.isfinite(v) for bar in bars for v in bar[3:])
    return len(trades)


@settings(max_examples=max(1, EXAMPLES // 4), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(_message(), min_size=1, max_size=100))
def test_fuzzed_batches_never_crash_and_only_schema_trades_get_through(batch: list[bytes]) -> None:
    _check(batch)


# Values a field may take in the fast generator below: the lax forms of issue 17 and their kin.
_ODD = ["false", "true", 0, 1, -1, 1.9, "42", None, [], {}, "", " ", "1_000", "\uff11\uff12", " 5", "5 ", "+5",
        "-5", "1e3", "1e308", "inf", "nan", "NaN", "Infinity", "1.2.3", ".", "0", "0.0", "9" * 400,
        "0." + "0" * 330 + "1", 2**63, 2**64, -(2**63), 1e308, float(T0), str(T0), T0 * 1000, 1, True, False,
        "\u0661\u0662", "1\x00", "0x10", "1" + "0" * 13, "0.000000000001", "1000000000000000"]


def _fast_batch(rng: random.Random, n: int) -> list[bytes]:
    """Return ``n`` messages: good ones with odd fields swapped in, or with bytes flipped."""
    out = []
    for _ in range(n):
        doc = {**GOOD, "t": rng.randrange(2**40), "T": T0 - rng.randrange(600_000),
               "p": f"{rng.uniform(1e-8, 1e7):.8f}", "q": f"{rng.uniform(1e-8, 1e6):.8f}", "m": rng.random() < 0.5}
        for key in rng.sample(("e", "s", "t", "p", "q", "T", "m"), rng.choice((0, 1, 1, 2))):
            doc[key] = rng.choice(_ODD)
        raw = bytearray(json.dumps(doc).encode())
        if rng.random() < 0.1:
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        out.append(bytes(raw))
    return out


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32))
def test_fuzzed_lax_fields_never_crash_and_only_schema_trades_get_through(seed: int) -> None:
    _check(_fast_batch(random.Random(seed), 50))  # a seeded generator: ~100x faster than hypothesis' draws
