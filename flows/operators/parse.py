"""Parse and validate raw Binance trade messages.

Accepts both the raw stream form (``{"e":"trade",...}``) and the combined stream
form (``{"stream":"btcusdt@trade","data":{...}}``).  Anything that is not a
valid trade of a known symbol becomes a :class:`DeadLetter` with its reason; the
caller routes those to the dead-letter table and counts them.

This is the flow's hottest loop (every trade passes once), so the happy path
is inlined in :func:`parse_messages` and only a message that fails it is
examined again by :func:`_refusal` to name the reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import orjson

from flows.operators.trade_time import DEFAULT_TRADE_TIME, TradeTimeConfig
from flows.records import DeadLetter, Trade

_REQUIRED = ("s", "t", "p", "q", "T", "m")
_INF = math.inf
# ``Trade(...)`` runs namedtuple's generated Python ``__new__``; ``tuple.__new__``
# builds the identical object in C, about half the cost per trade.
_new_trade = tuple.__new__


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
    loads, append = orjson.loads, trades.append
    for msg in raw:
        try:
            doc = loads(msg)
        except orjson.JSONDecodeError as exc:
            dead.append(DeadLetter(source, None, received_ms, f"malformed json: {exc}", _text(msg)))
            continue
        if isinstance(doc, dict) and "data" in doc and "stream" in doc:
            doc = doc["data"]
        if not isinstance(doc, dict):
            dead.append(DeadLetter(source, None, received_ms, "not a json object", _text(msg)))
            continue
        if doc.get("e") != "trade":
            if "result" in doc and "id" in doc:  # subscription acknowledgement
                continue
            dead.append(DeadLetter(source, None, received_ms, f"not a trade event: {doc.get('e')!r}", _text(msg)))
            continue
        # Happy path: any missing field, unknown symbol or malformed number raises here.
        try:
            symbol = symbols[doc["s"]]
            trade_id, ts, price, qty = int(doc["t"]), int(doc["T"]), float(doc["p"]), float(doc["q"])
            maker = bool(doc["m"])
        except (KeyError, TypeError, ValueError):
            ok = False
        else:  # the comparisons are also False for NaN
            ok = 0.0 < price < _INF and 0.0 < qty < _INF and first_ts <= ts <= last_ts
        if ok:
            append(_new_trade(Trade, (symbol, trade_id, ts, price, qty, maker)))
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
    try:
        price = float(doc["p"])
        qty = float(doc["q"])
        int(doc["t"])
        ts = int(doc["T"])
    except (TypeError, ValueError) as exc:
        return f"bad number: {exc}"
    if not math.isfinite(price) or price <= 0.0:
        return f"bad price: {doc['p']!r}"
    if not math.isfinite(qty) or qty <= 0.0:
        return f"bad quantity: {doc['q']!r}"
    if ts <= 0:
        return f"bad trade time: {doc['T']!r}"
    if ts < trade_time.min_ts:
        return (f"implausible trade time: {doc['T']!r} is before trade_time.min_trade_time "
                f"{trade_time.min_trade_time:%Y-%m-%dT%H:%M:%SZ} (seconds instead of milliseconds?)")
    if ts > received_ms + trade_time.max_ahead_ms:
        return (f"implausible trade time: {doc['T']!r} is {(ts - received_ms) / 1000:,.0f} s ahead of the receive "
                f"clock (trade_time.max_ahead_ms={trade_time.max_ahead_ms}; microseconds, or the host clock is off?)")
    raise AssertionError(f"trade refused for no reason: {doc!r}")  # the two checks above must agree


def _text(msg: bytes | str) -> str:
    return msg.decode("utf-8", "replace") if isinstance(msg, bytes) else msg
