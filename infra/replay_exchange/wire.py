"""Binance spot wire formats: numbers, trade messages, REST rows, errors.

Numbers travel as strings with 8 decimals (``"61837.63000000"``) like
Binance's.  A value that is not on an 8-decimal grid (a sum of sizes, a
candle file with more precision) is sent with its shortest exact decimal
form instead, so a client parsing the string always gets the float back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from infra.replay_exchange.tape import Market

KLINE_INTERVALS_MS = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "3d": 259_200_000,
    "1w": 604_800_000,
}
# Binance weeks open on Monday 00:00 UTC; the epoch was a Thursday.
KLINE_OFFSET_MS = {"1w": 4 * 86_400_000}


_SMALL_TEXT_HEADERS = [bytes([0x81, n]) for n in range(126)]


def inner_payload(msg: bytes) -> bytes:
    """Return the ``data`` part of a combined-stream message (what a raw ``/ws`` stream sends)."""
    start = msg.find(b'"data":')
    return msg if start < 0 else msg[start + 7 : -1]


def text_frames(msgs: list[bytes]) -> bytes:
    """Return ``msgs`` as consecutive unmasked websocket text frames (server to client), one buffer."""
    parts: list[bytes] = []
    append = parts.append
    for m in msgs:
        n = len(m)
        if n < 126:
            append(_SMALL_TEXT_HEADERS[n])
        elif n < 65536:
            append(b"\x81\x7e" + n.to_bytes(2, "big"))
        else:
            append(b"\x81\x7f" + n.to_bytes(8, "big"))
        append(m)
    return b"".join(parts)


class BinanceError(Exception):
    """An error the REST API answers with ``{"code": code, "msg": msg}``.

    Args:
        code: Binance error code, e.g. -1121 (invalid symbol).
        msg: Binance's message text.
        status: HTTP status, 400 for request errors.
    """

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.status = status

    def payload(self) -> dict[str, Any]:
        """Return the JSON body Binance sends for this error."""
        return {"code": self.code, "msg": self.msg}


def invalid_symbol() -> BinanceError:
    """Return Binance's -1121 error."""
    return BinanceError(-1121, "Invalid symbol.")


def missing_param(name: str) -> BinanceError:
    """Return Binance's -1102 error for a mandatory parameter."""
    return BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def illegal_param(name: str, legal: str = "^[0-9]{1,20}$") -> BinanceError:
    """Return Binance's -1100 error for a malformed parameter."""
    return BinanceError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '{legal}'.")


def exact_str(x: float) -> str:
    """Format ``x`` with 8 decimals when that round-trips, else its shortest exact form."""
    s = f"{x:.8f}"
    if float(s) == x:
        return s
    return str(np.format_float_positional(x, trim="-"))


def format_number(x: float, decimals: int | None) -> str:
    """Format a price or size: 8 decimals on a known grid, exact otherwise."""
    if decimals is not None:
        return f"{x:.8f}"
    return exact_str(x)


def step_str(decimals: int | None) -> str:
    """Return a tick or lot step as Binance writes it, ``"0.01000000"``."""
    return f"{10.0 ** -(decimals if decimals is not None else 8):.8f}"


def trade_payload(
    market_id: str,
    event_ms: int,
    trade_id: int,
    price: float,
    qty: float,
    trade_ms: int,
    buyer_maker: bool,
    price_decimals: int | None,
    qty_decimals: int | None,
) -> bytes:
    """Return a raw-stream trade message exactly as Binance spot sends it."""
    p = f"{price:.8f}" if price_decimals is not None else exact_str(price)
    q = f"{qty:.8f}" if qty_decimals is not None else exact_str(qty)
    m = "true" if buyer_maker else "false"
    return (
        f'{{"e":"trade","E":{event_ms},"s":"{market_id}","t":{trade_id},"p":"{p}","q":"{q}",'
        f'"T":{trade_ms},"m":{m},"M":true}}'
    ).encode()


def symbol_info(market: Market) -> dict[str, Any]:
    """Return one ``exchangeInfo`` symbol entry with the filters ccxt reads."""
    tick, step = step_str(market.price_decimals), step_str(market.qty_decimals)
    return {
        "symbol": market.market_id,
        "status": "TRADING",
        "baseAsset": market.base,
        "baseAssetPrecision": 8,
        "quoteAsset": market.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT",
                       "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000.00000000", "tickSize": tick},
            {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "9000000.00000000", "stepSize": step},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": "9000000.00000000", "stepSize": "0.00000000"},
            {
                "filterType": "NOTIONAL",
                "minNotional": "5.00000000",
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def exchange_info(markets: list[Market], server_ms: int) -> dict[str, Any]:
    """Return the ``/api/v3/exchangeInfo`` body for ``markets``."""
    return {
        "timezone": "UTC",
        "serverTime": server_ms,
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
        ],
        "exchangeFilters": [],
        "symbols": [symbol_info(m) for m in markets],
    }
