"""Parse and validate raw Binance trade messages.

Accepts both the raw stream form (``{"e":"trade",...}``) and the combined stream
form (``{"stream":"btcusdt@trade","data":{...}}``).  Anything that is not a
valid trade of a known symbol becomes a :class:`DeadLetter` with its reason; the
caller routes those to the dead-letter table and counts them.

A trade must follow Binance's trade schema exactly: ``t`` and ``T`` JSON
integers, ``m`` a JSON boolean, ``p`` and ``q`` strings of plain decimal digits
(``"61837.63000000"``: no sign, exponent, underscore, blank or non-ASCII digit,
all of which Python's ``float`` would take).  Price and quantity must lie in
:data:`PRICE_RANGE` and :data:`QTY_RANGE`, so every value derived from trades
(quote volume, VWAP, features) stays finite, and the trade time must be plausible
(:mod:`flows.operators.trade_time`).

This is the flow's hottest loop (every trade passes once), so the happy path
is inlined in :func:`parse_messages` and only a message that fails it is
examined again by :func:`_refusal` to name the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import orjson

from flows.operators.trade_time import DEFAULT_TRADE_TIME, TradeTimeConfig
from flows.records import DeadLetter, Trade

_REQUIRED = ("s", "t", "p", "q", "T", "m")
# Bounds that keep sums, ratios and squares of prices and sizes far from overflow and
# underflow (Binance's smallest tick and step are 1e-8; its largest prices ~1e6).
PRICE_RANGE = (1e-12, 1e12)
QTY_RANGE = (1e-12, 1e15)
MAX_TRADE_ID = 2**63 - 1  # a BIGINT
_LO_P, _HI_P = PRICE_RANGE
_LO_Q, _HI_Q = QTY_RANGE
_DECIMAL = "0123456789."  # str.strip of these leaves nothing of a plain decimal
# ``Trade(...)`` runs namedtuple's generated Python ``__new__``; ``tuple.__new__``
# builds the identical object in C, about half the cost per trade.
_new_trade = tuple.__new__
# The event of a REST row the gap fill refused (:mod:`flows.sources.rest_fill`): the fill hands
# it on like a trade message and this parser makes it a dead letter with the fill's reason.
REST_REFUSED = "restRefused"


def exchange_symbol(symbol: str) -> str:
    """Return Binance's form of a ccxt symbol: ``BTC/USDT`` -> ``BTCUSDT``."""
    return symbol.replace("/", "")


def parse_messages(
    raw: Iterable[bytes | str],
    symbols: Mapping[str, str],
    received_ms: int,
    source: str = "binance.ws",
    trade_time: TradeTimeConfig = DEFAULT_TRADE_TIME,
) -> tuple[list[Trade], list[DeadLetter]]:
    """Parse a batch of raw websocket messages into trades and dead letters.

    Args:
        raw: message payloads exactly as the websocket delivered them.
        symbols: exchange symbol (``BTCUSDT``) to ccxt symbol (``BTC/USDT``).
        received_ms: receive time (the host's clock), stamped on dead letters; a trade time
            more than ``trade_time.max_ahead_ms`` after it is refused.
        source: name of the source, stamped on dead letters.
        trade_time: the plausible trade times (see :mod:`flows.operators.trade_time`).
    """
    first_ts, last_ts = trade_time.min_ts, received_ms + trade_time.max_ahead_ms
    trades: list[Trade] = []
    dead: list[DeadLetter] = []
    loads, append, new_trade = orjson.loads, trades.append, _new_trade
    kind, is_int, is_bool, lo_p, hi_p, lo_q, hi_q, top = type, int, bool, _LO_P, _HI_P, _LO_Q, _HI_Q, MAX_TRADE_ID
    for msg in raw:
        try:
            doc = loads(msg)
        except orjson.JSONDecodeError as exc:
            dead.append(DeadLetter(source, None, received_ms, f"malformed json: {exc}", _text(msg)))
            continue
        if type(doc) is not dict or doc.get("e") != "trade":  # the raw stream's trade passes on at once
            if isinstance(doc, dict) and "data" in doc and "stream" in doc:
                doc = doc["data"]
            if not isinstance(doc, dict):
                dead.append(DeadLetter(source, None, received_ms, "not a json object", _text(msg)))
                continue
            if doc.get("e") != "trade":
                if "result" in doc and "id" in doc:  # subscription acknowledgement
                    continue
                if doc.get("e") == REST_REFUSED and isinstance(doc.get("reason"), str):
                    sym = symbols.get(doc["s"]) if isinstance(doc.get("s"), str) else None
                    dead.append(DeadLetter(source, sym, received_ms, f"refused REST reply: {doc['reason']}",
                                           _text(msg)))
                    continue
                dead.append(DeadLetter(source, None, received_ms, f"not a trade event: {doc.get('e')!r}",
                                       _text(msg)))
                continue
        # Happy path: any missing field, unknown symbol, wrong type or malformed number fails here.
        try:
            symbol = symbols[doc["s"]]
            trade_id, ts, p, q, maker = doc["t"], doc["T"], doc["p"], doc["q"], doc["m"]
            # type(...) is int: a bool is not an id.  Only ASCII digits and dots (float takes far more);
            # p and q are checked as one string, float() below finds a misplaced dot in either.
            pq = p + q
            ok = (kind(trade_id) is is_int and kind(ts) is is_int and kind(maker) is is_bool
                  and pq.isascii() and pq.replace(".", "").isdigit())
            if ok:
                price, qty = float(p), float(q)
                ok = lo_p <= price <= hi_p and lo_q <= qty <= hi_q and 0 <= trade_id <= top and first_ts <= ts <= last_ts
        except (KeyError, TypeError, ValueError, AttributeError):  # AttributeError: p + q of two numbers
            ok = False
        if ok:
            append(new_trade(Trade, (symbol, trade_id, ts, price, qty, maker)))
        else:
            sym = symbols.get(doc.get("s", "")) if isinstance(doc.get("s"), str) else None
            dead.append(DeadLetter(source, sym, received_ms, _refusal(doc, symbols, trade_time, received_ms),
                                   _text(msg)))
    return trades, dead


def _refusal(doc: dict, symbols: Mapping[str, str], trade_time: TradeTimeConfig, received_ms: int) -> str:
    """Return why a trade event failed the happy path of :func:`parse_messages`."""
    missing = [k for k in _REQUIRED if k not in doc]
    if missing:
        return f"missing fields: {','.join(missing)}"
    if not isinstance(doc["s"], str) or doc["s"] not in symbols:
        return f"unknown symbol: {doc['s']!r}"
    tid, ts, maker = doc["t"], doc["T"], doc["m"]
    if type(tid) is not int or not 0 <= tid <= MAX_TRADE_ID:
        return f"bad trade id: {tid!r} (a JSON integer from 0)"
    if type(ts) is not int or ts <= 0:
        return f"bad trade time: {ts!r} (a JSON integer of ms since the epoch)"
    if type(maker) is not bool:
        return f"bad buyer-is-maker flag m: {maker!r} (JSON true or false)"
    for key, what, bounds in (("p", "price", PRICE_RANGE), ("q", "quantity", QTY_RANGE)):
        if (why := decimal_refusal(doc[key], what, bounds)) is not None:
            return why
    if ts < trade_time.min_ts:
        return (f"implausible trade time: {ts!r} is before trade_time.min_trade_time "
                f"{trade_time.min_trade_time:%Y-%m-%dT%H:%M:%SZ} (seconds instead of milliseconds?)")
    if ts > received_ms + trade_time.max_ahead_ms:
        return (f"implausible trade time: {ts!r} is {(ts - received_ms) / 1000:,.0f} s ahead of the receive "
                f"clock (trade_time.max_ahead_ms={trade_time.max_ahead_ms}; microseconds, or the host clock is off?)")
    raise AssertionError(f"trade refused for no reason: {doc!r}")  # the two checks above must agree


def decimal_refusal(text: object, what: str, bounds: tuple[float, float]) -> str | None:
    """Return why ``text`` is not a plain decimal string within ``bounds`` (None if it is one)."""
    lo, hi = bounds
    if type(text) is not str or not text or text.strip(_DECIMAL):
        return f"bad {what}: {text!r} (a string of decimal digits, e.g. \"61837.63\")"
    try:
        value = float(text)
    except ValueError:
        return f"bad {what}: {text!r} (a string of decimal digits, e.g. \"61837.63\")"
    if not lo <= value <= hi:
        return f"bad {what}: {text!r} (outside [{lo:g}, {hi:g}])"
    return None


def _text(msg: bytes | str) -> str:
    return msg.decode("utf-8", "replace") if isinstance(msg, bytes) else msg
