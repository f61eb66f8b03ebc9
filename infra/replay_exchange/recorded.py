"""Data mode (a): recorded Binance combined-stream messages.

Input: gzip files with one message a line, ``<receive time ns> <json>``, where
the JSON is a combined-stream message ``{"stream": "btcusdt@trade", "data":
{...}}``.  Trade messages become tapes (REST trades and klines are derived from
them) and are replayed byte for byte in receive-time order, merged across
files.  Other streams (``bookTicker``, ``depth``) are kept only when asked for,
and replayed raw.
"""

from __future__ import annotations

import gzip
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson

from infra.replay_exchange.tape import Market, MarketData, Timeline, TradeTape

KNOWN_QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "DAI", "BTC", "ETH", "BNB", "EUR", "TRY", "BRL", "JPY")


def split_market_id(market_id: str) -> tuple[str, str]:
    """Split ``BTCUSDT`` into ``("BTC", "USDT")`` by known quote assets.

    Raises:
        ValueError: If no known quote asset ends the id.
    """
    for quote in KNOWN_QUOTES:
        if market_id.endswith(quote) and len(market_id) > len(quote):
            return market_id[: -len(quote)], quote
    raise ValueError(f"cannot tell base from quote in {market_id!r}; known quotes: {', '.join(KNOWN_QUOTES)}")


def _decimals(values: Sequence[str]) -> int:
    """Return the most decimals any of the decimal strings needs (trailing zeros dropped)."""
    most = 0
    for v in set(values):
        dot = v.find(".")
        if dot >= 0:
            most = max(most, len(v.rstrip("0")) - dot - 1)
    return most


def _stream_name(msg: bytes) -> str | None:
    """Return the stream name of a combined-stream message without parsing it."""
    head = b'{"stream":"'
    if not msg.startswith(head):
        return None
    end = msg.find(b'"', len(head))
    return msg[len(head) : end].decode() if end > 0 else None


def _wanted(kind: str, streams: tuple[str, ...]) -> bool:
    return any(kind == s or kind.startswith(s + "@") for s in streams)


class _Columns:
    def __init__(self) -> None:
        self.recv: list[int] = []
        self.raw: list[bytes] = []
        self.ids: list[int] = []
        self.ts: list[int] = []
        self.event: list[int] = []
        self.price: list[str] = []
        self.qty: list[str] = []
        self.maker: list[bool] = []


def load_recorded(
    paths: Sequence[Path], streams: tuple[str, ...] = ("trade",), start_ms: int | None = None, end_ms: int | None = None
) -> MarketData:
    """Load recorded messages from gzip files.

    Args:
        paths: The ``.gz`` files, any order (messages are merged by receive time).
        streams: Stream kinds to replay; ``trade`` always, ``bookTicker`` and
            ``depth`` optionally.
        start_ms: Keep messages whose exchange time (``T``/``E``; receive time for
            streams without one) is at or after this, ms.
        end_ms: Keep messages before this exchange time, ms.

    Raises:
        ValueError: On a line that is not ``<int> <json>`` or a trade without fields.
    """
    trades: dict[str, _Columns] = defaultdict(_Columns)
    extra: dict[str, tuple[list[bytes], list[int]]] = defaultdict(lambda: ([], []))
    lo = start_ms if start_ms is not None else -(2**62)
    hi = end_ms if end_ms is not None else 2**62
    for path in paths:
        with gzip.open(path, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                sp = line.find(b" ")
                try:
                    recv = int(line[:sp])
                except ValueError as exc:
                    raise ValueError(f"{path}:{lineno}: expected '<receive ns> <json>'") from exc
                msg = line[sp + 1 :].rstrip(b"\r\n")
                name = _stream_name(msg)
                if name is None:
                    continue
                kind = name.partition("@")[2]
                if kind == "trade":
                    d = orjson.loads(msg)["data"]
                    try:
                        t_ms = int(d["T"])
                        if not lo <= t_ms < hi:
                            continue
                        col = trades[d["s"]]
                        col.ids.append(int(d["t"]))
                        col.ts.append(t_ms)
                        col.event.append(int(d["E"]))
                        col.price.append(d["p"])
                        col.qty.append(d["q"])
                        col.maker.append(bool(d["m"]))
                    except (KeyError, TypeError) as exc:
                        raise ValueError(f"{path}:{lineno}: trade message lacks a field: {exc}") from exc
                    col.recv.append(recv)
                    col.raw.append(msg)
                elif _wanted(kind, streams) and lo <= recv // 1_000_000 < hi:
                    msgs, times = extra[name]
                    msgs.append(msg)
                    times.append(recv)
    tapes = [_tape(mid, col) for mid, col in sorted(trades.items())]
    tapes = [t for t in tapes if len(t)]
    raw_streams = {}
    for name, (msgs, times) in sorted(extra.items()):
        order = np.argsort(np.asarray(times, dtype=np.int64), kind="stable")
        raw_streams[name] = ([msgs[i] for i in order.tolist()], np.asarray(times, dtype=np.int64)[order])
    timeline = Timeline.merge(tapes, raw_streams)
    desc = f"recorded: {len(paths)} file(s), " + ", ".join(f"{t.market.symbol} {len(t)} trades" for t in tapes)
    return MarketData("recorded", {t.market.market_id: t for t in tapes}, timeline, desc)


def _tape(market_id: str, col: _Columns) -> TradeTape:
    """Build one symbol's tape: id order, duplicates (same id twice) dropped."""
    ids = np.asarray(col.ids, dtype=np.int64)
    recv = np.asarray(col.recv, dtype=np.int64)
    order = np.lexsort((recv, ids))
    keep = order[np.concatenate([[True], np.diff(ids[order]) != 0])] if len(order) else order
    base, quote = split_market_id(market_id)
    market = Market(base, quote, min(_decimals(col.price), 8), min(_decimals(col.qty), 8))
    idx = keep.tolist()
    return TradeTape(
        market=market,
        ids=ids[keep],
        ts=np.asarray(col.ts, dtype=np.int64)[keep],
        price=np.asarray([float(col.price[i]) for i in idx], dtype=np.float64),
        qty=np.asarray([float(col.qty[i]) for i in idx], dtype=np.float64),
        buyer_maker=np.asarray(col.maker, dtype=bool)[keep],
        event_ts=np.asarray(col.event, dtype=np.int64)[keep],
        recv_ns=recv[keep],
        raw=[col.raw[i] for i in idx],
    )
