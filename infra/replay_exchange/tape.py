"""Columnar trade tapes and the merged replay timeline every data mode produces.

A :class:`TradeTape` holds one symbol's trades as numpy columns (ids, trade
times, prices, sizes, maker side); REST queries slice it and the websocket
formats messages from it lazily, so millions of trades cost a few bytes each.
A :class:`Timeline` merges the tapes (and, for recorded data, optional raw
non-trade streams) into one event order: ``(stream, item, time_ns)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infra.replay_exchange.wire import format_number, inner_payload, trade_payload


@dataclass(frozen=True)
class Market:
    """Static description of one spot market, as exchangeInfo reports it.

    Attributes:
        base: Base asset, e.g. ``BTC``.
        quote: Quote asset, e.g. ``USDT``.
        price_decimals: Decimals of the tick size; None when prices are not on a
            decimal grid (they are then sent with their shortest exact repr).
        qty_decimals: Decimals of the lot step, None as for prices.
    """

    base: str
    quote: str
    price_decimals: int | None = 2
    qty_decimals: int | None = 8

    @property
    def symbol(self) -> str:
        """Return the ccxt symbol, ``BTC/USDT``."""
        return f"{self.base}/{self.quote}"

    @property
    def market_id(self) -> str:
        """Return the exchange id, ``BTCUSDT``."""
        return self.base + self.quote

    @property
    def trade_stream(self) -> str:
        """Return the websocket stream name, ``btcusdt@trade``."""
        return self.market_id.lower() + "@trade"


@dataclass(frozen=True)
class CandleTable:
    """Candles a tape was expanded from, served verbatim as klines at their interval.

    ``trade_end[k]`` is the exclusive index of candle k's last trade in the tape;
    the other arrays after ``volume`` are computed from the generated trades.
    """

    interval: str
    interval_ms: int
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    trade_end: np.ndarray
    quote_volume: np.ndarray
    trades: np.ndarray
    taker_base: np.ndarray
    taker_quote: np.ndarray


@dataclass(eq=False)
class TradeTape:
    """One symbol's trades, sorted by id and trade time.

    Attributes:
        market: The market the trades belong to.
        ids: Trade ids, int64, strictly increasing.
        ts: Trade times ``T`` in ms since the epoch, non-decreasing.
        price: Prices, float64.
        qty: Sizes in base asset, float64.
        buyer_maker: ``m`` flag, True when the buyer was the maker (taker sold).
        event_ts: Event times ``E`` in ms; None means equal to ``ts``.
        recv_ns: Local receive times of recorded messages (pacing); None = ``ts``.
        raw: Recorded combined-stream messages, sent byte for byte; None = format.
        candles: Source candles when the tape was expanded from a candle file.
    """

    market: Market
    ids: np.ndarray
    ts: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    buyer_maker: np.ndarray
    event_ts: np.ndarray | None = None
    recv_ns: np.ndarray | None = None
    raw: list[bytes] | None = None
    candles: CandleTable | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name in ("ts", "price", "qty", "buyer_maker"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"tape {self.market.symbol}: column {name} has {len(getattr(self, name))} rows, ids {n}")
        if n > 1 and (np.any(np.diff(self.ids) <= 0) or np.any(np.diff(self.ts) < 0)):
            raise ValueError(f"tape {self.market.symbol}: ids must increase and trade times must not decrease")

    def __len__(self) -> int:
        return len(self.ids)

    def time_ns(self) -> np.ndarray:
        """Return the pacing time of every trade in ns (receive time when recorded)."""
        if self.recv_ns is not None:
            return self.recv_ns
        return self.ts.astype(np.int64) * 1_000_000

    def payloads(self, items: np.ndarray, combined: bool) -> list[bytes]:
        """Return websocket messages for the trades at ``items``.

        Args:
            items: Row indexes into the tape.
            combined: True for ``/stream`` connections (``{"stream":..,"data":..}``
                wrapper), False for raw ``/ws`` connections.
        """
        if self.raw is not None:
            raw = self.raw
            if combined:
                return [raw[i] for i in items.tolist()]
            return [inner_payload(raw[i]) for i in items.tolist()]
        m = self.market
        event_ts = self.event_ts if self.event_ts is not None else self.ts
        msgs = [
            trade_payload(m.market_id, e, t, p, q, ts, bm, m.price_decimals, m.qty_decimals)
            for e, t, p, q, ts, bm in zip(
                event_ts[items].tolist(),
                self.ids[items].tolist(),
                self.price[items].tolist(),
                self.qty[items].tolist(),
                self.ts[items].tolist(),
                self.buyer_maker[items].tolist(),
                strict=True,
            )
        ]
        if combined:
            head = b'{"stream":"' + m.trade_stream.encode() + b'","data":'
            return [head + msg + b"}" for msg in msgs]
        return msgs

    def price_str(self, x: float) -> str:
        """Format a price of this market the way Binance does (8 decimals, exact)."""
        return format_number(x, self.market.price_decimals)

    def qty_str(self, x: float) -> str:
        """Format a size of this market the way Binance does (8 decimals, exact)."""
        return format_number(x, self.market.qty_decimals)


@dataclass(eq=False)
class Timeline:
    """All replayable messages merged into one order.

    Attributes:
        streams: Stream names (``btcusdt@trade``, ``ethusdt@bookTicker`` ...).
        tapes: Per stream, the tape of a trade stream, else None.
        raws: Per stream, the recorded messages of a non-trade stream, else None.
        stream_idx: Per event, its stream's index.
        item_idx: Per event, its row in the stream's tape or raw list.
        time_ns: Per event, its data time in ns (non-decreasing); paces replay.
    """

    streams: list[str]
    tapes: list[TradeTape | None]
    raws: list[list[bytes] | None]
    stream_idx: np.ndarray
    item_idx: np.ndarray
    time_ns: np.ndarray

    def __len__(self) -> int:
        return len(self.stream_idx)

    @classmethod
    def merge(cls, tapes: list[TradeTape], extra: dict[str, tuple[list[bytes], np.ndarray]] | None = None) -> Timeline:
        """Merge tapes and extra raw streams into event-time order.

        Ties keep the order of ``tapes`` (then ``extra``), so a merge is
        deterministic.

        Args:
            tapes: Trade tapes, one per symbol.
            extra: Raw non-trade streams: name -> (messages, receive times ns).
        """
        streams: list[str] = []
        stream_tapes: list[TradeTape | None] = []
        raws: list[list[bytes] | None] = []
        s_parts, i_parts, t_parts = [], [], []
        for tape in tapes:
            s_parts.append(np.full(len(tape), len(streams), dtype=np.int32))
            i_parts.append(np.arange(len(tape), dtype=np.int64))
            t_parts.append(tape.time_ns())
            streams.append(tape.market.trade_stream)
            stream_tapes.append(tape)
            raws.append(None)
        for name, (msgs, times) in (extra or {}).items():
            s_parts.append(np.full(len(msgs), len(streams), dtype=np.int32))
            i_parts.append(np.arange(len(msgs), dtype=np.int64))
            t_parts.append(np.asarray(times, dtype=np.int64))
            streams.append(name)
            stream_tapes.append(None)
            raws.append(msgs)
        if not s_parts:
            raise ValueError("nothing to replay: no trades and no streams")
        times = np.concatenate(t_parts)
        order = np.argsort(times, kind="stable")
        return cls(
            streams=streams,
            tapes=stream_tapes,
            raws=raws,
            stream_idx=np.concatenate(s_parts)[order],
            item_idx=np.concatenate(i_parts)[order],
            time_ns=times[order],
        )


@dataclass(eq=False)
class MarketData:
    """What a replay exchange serves: tapes by exchange id and their timeline."""

    mode: str
    tapes: dict[str, TradeTape]
    timeline: Timeline
    description: str = ""

    def tape(self, market_id: str) -> TradeTape | None:
        """Return the tape of an exchange id such as ``BTCUSDT``, or None."""
        return self.tapes.get(market_id)
