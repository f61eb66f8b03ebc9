"""Parse and validate raw Binance trade messages.

Accepts both the raw stream form (``{"e":"trade",...}``) and the combined stream
form (``{"stream":"btcusdt@trade","data":{...}}``).  Anything that is not a
valid trade of a known symbol becomes a :class:`DeadLetter` with its reason; the
caller routes those to the dead-letter table and counts them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import orjson

from flows.records import DeadLetter, Trade

_REQUIRED = ("s", "t", "p", "q", "T", "m")


def exchange_symbol(symbol: str) -> str:
    """Return Binance's form of a ccxt symbol: ``BTC/USDT`` -> ``BTCUSDT``."""
    return symbol.replace("/", "")


def parse_messages(
    raw: Iterable[bytes | str],
    symbols: Mapping[str, str],
    received_ms: int,
    source: str = "binance.ws",
) -> tuple[list[Trade], list[DeadLetter]]:
    """Parse a batch of raw websocket messages into trades and dead letters.

    Args:
        raw: message payloads exactly as the websocket delivered them.
        symbols: exchange symbol (``BTCUSDT``) to ccxt symbol (``BTC/USDT``).
        received_ms: receive time, stamped on dead letters.
        source: name of the source, stamped on dead letters.
    """
    trades: list[Trade] = []
    dead: list[DeadLetter] = []
    for msg in raw:
        try:
            doc = orjson.loads(msg)
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
        trade, reason = _trade(doc, symbols)
        if trade is None:
            sym = symbols.get(doc.get("s", "")) if isinstance(doc.get("s"), str) else None
            dead.append(DeadLetter(source, sym, received_ms, reason, _text(msg)))
        else:
            trades.append(trade)
    return trades, dead


def _trade(doc: dict, symbols: Mapping[str, str]) -> tuple[Trade | None, str]:
    missing = [k for k in _REQUIRED if k not in doc]
    if missing:
        return None, f"missing fields: {','.join(missing)}"
    symbol = symbols.get(doc["s"]) if isinstance(doc["s"], str) else None
    if symbol is None:
        return None, f"unknown symbol: {doc['s']!r}"
    try:
        price = float(doc["p"])
        qty = float(doc["q"])
        trade_id = int(doc["t"])
        ts = int(doc["T"])
    except (TypeError, ValueError) as exc:
        return None, f"bad number: {exc}"
    if not math.isfinite(price) or price <= 0.0:
        return None, f"bad price: {doc['p']!r}"
    if not math.isfinite(qty) or qty <= 0.0:
        return None, f"bad quantity: {doc['q']!r}"
    if ts <= 0:
        return None, f"bad trade time: {doc['T']!r}"
    return Trade(symbol, trade_id, ts, price, qty, bool(doc["m"])), ""


def _text(msg: bytes | str) -> str:
    return msg.decode("utf-8", "replace") if isinstance(msg, bytes) else msg
