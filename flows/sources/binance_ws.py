"""Binance trade websocket as a Bytewax source, one partition per symbol, with REST gap filling.

Each partition owns one websocket connection, run by an asyncio loop on a
background thread; ``next_batch`` never blocks, it hands over everything that
arrived since the last call as one item ``(symbol, received_ms, [raw, ...])``.
Trades therefore travel in batches, and parsing happens downstream so the
thread only moves bytes.  The client is aiohttp's websocket with orjson, chosen
by ``tests/bench/bench_replay_ws.py`` (README): about 7x ccxt.pro's
``watch_trades`` and 2x the ``websockets`` package here; it speaks the same
subscribe protocol as ccxt.pro's Binance client.

Gaps.  The partition's snapshot is the id of the last trade it handed over.
After a dropped connection, and after a restart from a Bytewax snapshot, it
fetches the trades after that id from REST before it hands over anything new,
so no trade between the last snapshot and the new connection is lost; the
deduper downstream drops the overlap.  The fill (:mod:`flows.sources.rest_fill`)
uses Binance's public ``aggTrades`` (no key), split back into trades so the
bars equal those of the single trades, or ``historicalTrades`` when an API key
is set.  With ``fill_since_ms`` a partition that starts without a snapshot
first fetches history from that time.  With a recovery directory, a partition that
starts without a snapshot records its first trade (:mod:`flows.start_points`) before
handing it over, and one restarted without a snapshot resumes from that record: a kill
before the first snapshot loses nothing.  REST trades are re-encoded as websocket
trade messages so one parser serves both.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import aiohttp
import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from flows.monitoring.metrics import current as current_metrics
from flows.operators.parse import exchange_symbol
from flows.sources.rest_fill import FillRetry, TradeFiller, known_quantities, trade_docs
from flows.start_points import StartPoint, StartPoints

log = logging.getLogger(__name__)

BINANCE_WS = "wss://stream.binance.com:9443"
RawBatch = tuple[str, int, list[bytes | str]]
_TAIL = 256  # handed-over messages kept for an exact aggTrades fill (an aggregate across the gap)


def last_trade_id(msgs: collections.deque[bytes | str] | list[bytes | str], look_back: int = 64) -> int | None:
    """Return the largest trade id among the last ``look_back`` messages (bad messages are skipped)."""
    ids = [doc["t"] for doc in trade_docs(list(msgs)[-look_back:]) if isinstance(doc.get("t"), int)]
    return max(ids) if ids else None


def first_trade(msgs: list[bytes | str]) -> tuple[int, int] | None:
    """Return (id, time) of the trade with the smallest id among ``msgs`` (bad messages are skipped)."""
    docs = [d for d in trade_docs(msgs) if type(d.get("t")) is int and type(d.get("T")) is int]
    if not docs:
        return None
    first = min(docs, key=lambda d: d["t"])
    return int(first["t"]), int(first["T"])


def _trade_time(msgs: list[bytes | str], known_id: int) -> int | None:
    """Return the time ``T`` of trade ``known_id`` among ``msgs`` (None if it is not there)."""
    for doc in trade_docs(reversed(msgs)):
        if doc.get("t") == known_id and type(doc.get("T")) is int:
            return int(doc["T"])
    return None


class WsPartition(StatefulSourcePartition[RawBatch, int | None]):
    """One symbol's trade stream."""

    def __init__(
        self,
        symbol: str,
        ws_url: str,
        filler: TradeFiller | None,
        deadline: float | None,
        last_id: int | None = None,
        fill_since_ms: int | None = None,
        idle_stop_s: float = 0.0,
        max_buffered: int = 20_000,
        clock: Callable[[], float] = time.time,
        poll_interval: timedelta = timedelta(milliseconds=5),
        should_stop: Callable[[], bool] = lambda: False,
        start_points: StartPoints | None = None,
    ) -> None:
        self.symbol = symbol
        self.start_points = start_points
        self._since_hint: int | None = None  # the time of trade last_id + 1 when resuming from a start point
        self._start_recorded = False
        if last_id is None and start_points is not None and (point := start_points.get(symbol)) is not None:
            # no snapshot, but an earlier run started here: resume from its first trade (filled from REST)
            last_id, self._since_hint = point.first_id - 1, point.time_ms
            log.warning("%s: no snapshot in the recovery directory; resuming from the recorded start point "
                        "(trade id %d) and filling from REST", symbol, point.first_id)
        self.should_stop = should_stop  # a clean stop (flows.lifecycle): end the partition
        self.market_id = exchange_symbol(symbol)
        self.stream = self.market_id.lower() + "@trade"
        self.ws_url = ws_url.rstrip("/") + "/ws"
        self.filler = filler
        self.deadline = deadline
        self.clock = clock
        self.poll_interval = poll_interval
        self.reconnects = 0
        self.filled = 0
        self.last_id = last_id  # the last trade id handed over (the snapshot)
        self.fill_since_ms = fill_since_ms if last_id is None else None
        self.idle_stop_s = idle_stop_s
        self.max_buffered = max_buffered
        self._last_data = clock()
        self._buf: collections.deque[bytes | str] = collections.deque()
        # the last messages handed over: the quantities of the trades just before a gap
        self._tail: collections.deque[bytes | str] = collections.deque(maxlen=_TAIL)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"ws-{self.stream}", daemon=True)
        self._thread.start()

    def next_batch(self) -> list[RawBatch]:
        if self._error is not None:
            raise RuntimeError(f"websocket reader for {self.symbol} failed") from self._error
        if (self.deadline is not None and self.clock() >= self.deadline) or self.should_stop():
            raise StopIteration
        buf = self._buf
        if not buf:
            if self.idle_stop_s and self.clock() - self._last_data > self.idle_stop_s:
                raise StopIteration  # a finite replay has ended
            return []
        self._last_data = self.clock()
        msgs = [buf.popleft() for _ in range(len(buf))]
        self._tail.extend(msgs[-_TAIL:])
        if self.last_id is None and (first := first_trade(msgs)) is not None:
            self._record_start(*first)  # (recorded by the reader already, unless the buffer was filled otherwise)
        tid = last_trade_id(msgs)
        if tid is not None and (self.last_id is None or tid > self.last_id):
            self.last_id = tid
        return [(self.symbol, int(self.clock() * 1000), msgs)]

    def next_awake(self) -> datetime | None:
        if self._buf:
            return None
        return datetime.now(timezone.utc) + self.poll_interval

    def snapshot(self) -> int | None:
        return self.last_id

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _record_start(self, first_id: int, time_ms: int) -> None:
        """Record where a partition without a snapshot starts (once; :mod:`flows.start_points`)."""
        if self.start_points is not None and self.last_id is None and not self._start_recorded:
            self.start_points.record(StartPoint(self.symbol, first_id, time_ms))
            self._start_recorded = True

    def _run(self) -> None:
        try:
            asyncio.run(self._read_forever())
        except BaseException as exc:  # surfaced to the dataflow by next_batch
            self._error = exc

    async def _fill(self, first_new_id: int | None) -> None:
        """Fetch what the websocket missed: after the last id handed over, up to the first new one."""
        if self.filler is None:
            return
        # The last id this thread knows of: handed over, or still waiting in the buffer.
        last = last_trade_id(self._buf) or self.last_id
        start = last + 1 if last is not None else None
        loop = asyncio.get_running_loop()
        seen = list(self._tail) + list(self._buf)[-_TAIL:]
        since = _trade_time(seen, known_id=start - 1) if start is not None else None
        if since is None and start is not None and self._since_hint is not None:
            since = self._since_hint
        self._since_hint = None
        if start is None and self.fill_since_ms is not None:
            start = await loop.run_in_executor(None, self.filler.first_id_since, self.market_id, self.fill_since_ms)
            since = self.fill_since_ms
            if start is not None:
                self._record_start(start, since)  # the fill from fill_since is where this stream starts
        self.fill_since_ms = None
        if start is None or (first_new_id is not None and start >= first_new_id):
            return
        known = known_quantities(seen)
        msgs = await loop.run_in_executor(None, self.filler.trades_from, self.market_id, start, first_new_id,
                                          known, since)
        self.filled += len(msgs)
        if (metrics := current_metrics()) is not None:
            metrics.on_gap_fill(self.symbol, len(msgs))
        if msgs:
            log.info("%s: filled %d trades from REST (ids %d..)", self.symbol, len(msgs), start)
        self._buf.extend(msgs)

    async def _read_forever(self) -> None:
        backoff = 0.1
        connected_before = False
        timeout = aiohttp.ClientTimeout(total=None, connect=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self._stop.is_set():
                try:
                    async with session.ws_connect(self.ws_url, max_msg_size=0, heartbeat=30) as ws:
                        await ws.send_bytes(orjson.dumps({"method": "SUBSCRIBE", "params": [self.stream], "id": 1}))
                        if connected_before:
                            self.reconnects += 1
                            if (metrics := current_metrics()) is not None:
                                metrics.on_reconnect(self.symbol)
                        connected_before, backoff = True, 0.1
                        await self._pump(ws)
                except (OSError, aiohttp.ClientError, ConnectionError) as exc:
                    log.warning("websocket %s for %s: %s", self.ws_url, self.symbol, exc)
                if self._stop.is_set():
                    break
                log.warning("websocket %s for %s closed; reconnecting in %.1fs", self.ws_url, self.symbol, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _pump(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        gap_checked = False
        pending: list[bytes | str] = []
        while not self._stop.is_set():
            try:
                frame = await ws.receive(timeout=0.5)
            except asyncio.TimeoutError:
                if not gap_checked:  # a quiet market: fill from REST without waiting for a trade
                    await self._fill(None)
                    gap_checked = True
                    self._buf.extend(pending)
                    pending = []
                continue
            if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING,
                              aiohttp.WSMsgType.ERROR):
                return  # the caller reconnects
            msg = frame.data  # str for text frames (Binance's), bytes for binary: the parser takes both
            if gap_checked:
                self._buf.append(msg)
                while len(self._buf) > self.max_buffered and not self._stop.is_set():
                    # The flow is behind: stop reading so TCP pushes back on the sender
                    # instead of the backlog growing in memory.
                    await asyncio.sleep(0.002)
                continue
            pending.append(msg)
            first = last_trade_id([msg])
            if first is None:
                continue  # the subscription ack, or a bad message: keep it, wait for a trade
            if self.fill_since_ms is None and (start := first_trade([msg])) is not None:
                self._record_start(*start)  # durable as soon as the stream starts, before anything is handed over
            await self._fill(first)
            gap_checked = True
            self._buf.extend(pending)
            pending = []


class BinanceTradeSource(FixedPartitionedSource[RawBatch, int | None]):
    """Trades of several symbols from Binance's websocket (or the replay exchange)."""

    def __init__(self, symbols: tuple[str, ...], ws_url: str | None, duration_s: float = 0.0,
                 http_url: str | None = None, api_key: str | None = None, fill_gaps: bool = True,
                 fill_since_ms: int | None = None, idle_stop_s: float = 0.0,
                 should_stop: Callable[[], bool] = lambda: False, fill_retry: FillRetry | None = None,
                 start_points: StartPoints | None = None) -> None:
        self.symbols = symbols
        self.fill_retry = fill_retry
        self.start_points = start_points
        self.should_stop = should_stop
        self.ws_url = ws_url or BINANCE_WS
        self.http_url = http_url
        self.api_key = api_key
        self.fill_gaps = fill_gaps
        self.fill_since_ms = fill_since_ms
        self.idle_stop_s = idle_stop_s
        self.deadline = time.time() + duration_s if duration_s > 0 else None

    def list_parts(self) -> list[str]:
        return list(self.symbols)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> WsPartition:
        filler = (TradeFiller(self.http_url, self.ws_url, self.api_key, retry=self.fill_retry) if self.fill_gaps
                  else None)
        return WsPartition(for_part, self.ws_url, filler, self.deadline, last_id=resume_state,
                           fill_since_ms=self.fill_since_ms, idle_stop_s=self.idle_stop_s,
                           should_stop=self.should_stop, start_points=self.start_points)
