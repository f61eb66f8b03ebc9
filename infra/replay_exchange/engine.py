"""The replay loop: one shared clock, a cursor over the timeline, fan-out to connections.

Clock: the replay starts when the first client subscribes to a stream (so a
test or flow that connects late misses nothing), or once ``wait_for_streams``
distinct streams are subscribed (one connection per symbol), and there is one
clock per server.  At ``speed`` X > 0 the data clock runs X times faster than
the wall clock and an event is handed out when the clock reaches its time; a client
too slow to keep up receives the backlog in bursts.  At speed 0 ("max") the
loop moves a batch whenever every subscribed connection has room in its
bounded queue, i.e. as fast as the slowest reader (backpressure), and pauses
while no connection is subscribed.

What has been handed out is the REST horizon: ``streamed[s]`` events of
stream ``s``.  Formatting happens once per batch and framing (raw ``/ws`` or
combined ``/stream``), shared by all connections that want it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import numpy as np

from infra.replay_exchange.tape import MarketData
from infra.replay_exchange.wire import inner_payload

Batch = tuple[list[bytes], list[tuple[str, int | None]] | None]


@dataclass(eq=False)
class Subscriber:
    """One websocket connection's side of the replay loop.

    Attributes:
        conn_id: Connection number (also seeds its faults).
        combined: True for ``/stream`` framing.
        mask: Per stream index, whether the connection is subscribed.
        names: Subscribed stream names, including ones with no data.
        want_meta: Whether batches carry (stream, trade id) per message (faults).
    """

    conn_id: int
    combined: bool
    mask: np.ndarray
    names: list[str] = field(default_factory=list)
    want_meta: bool = False
    queue: asyncio.Queue[Batch | None] = field(default_factory=asyncio.Queue)
    closed: bool = False


class ReplayEngine:
    """Moves the timeline's events to subscribed connections at the configured speed."""

    def __init__(self, data: MarketData, speed: float, batch_size: int, wait_for_streams: int = 1,
                 origin_ms: int | None = None) -> None:
        tl = data.timeline
        self.data = data
        self.speed = speed
        self.batch_size = batch_size
        # The clock starts once this many distinct streams are subscribed, so clients
        # that open one connection per symbol (the flow's partitions) all start together.
        self.wait_for_streams = wait_for_streams
        self.stream_index = {name: i for i, name in enumerate(tl.streams)}
        self.streamed = np.zeros(len(tl.streams), dtype=np.int64)
        self.cursor = 0
        self.subscribers: list[Subscriber] = []
        self.started = False
        self.paused = False
        self._anchor_wall = 0.0
        self._anchor_data = int(tl.time_ns[0])
        self._wake = asyncio.Event()
        self._next_conn = 0
        # Where the stream begins: the events before it count as streamed (history for REST).
        self.origin_ms = origin_ms
        if origin_ms is not None:
            self.seek(origin_ms)

    # -- clock -----------------------------------------------------------------
    def clock_ns(self) -> int:
        """Return the replay's data time in ns (the first event's time before the start)."""
        tl = self.data.timeline
        if self.speed == 0 or not self.started:
            return int(tl.time_ns[self.cursor - 1]) if self.cursor else self._anchor_data
        if self.paused:
            return self._anchor_data
        return self._anchor_data + int((time.monotonic() - self._anchor_wall) * 1e9 * self.speed)

    def horizon(self, market_id: str) -> int:
        """Return how many of ``market_id``'s trades have been streamed."""
        tape = self.data.tapes[market_id]
        return int(self.streamed[self.stream_index[tape.market.trade_stream]])

    def _start_clock(self) -> None:
        self.started = True
        self._anchor_wall = time.monotonic()
        self._wake.set()

    # -- control ---------------------------------------------------------------
    def seek(self, time_ms: int | None) -> None:
        """Move the cursor to the first event at or after ``time_ms`` (None = the stream's start)."""
        tl = self.data.timeline
        time_ms = self.origin_ms if time_ms is None else time_ms
        self.cursor = 0 if time_ms is None else int(np.searchsorted(tl.time_ns, time_ms * 1_000_000, "left"))
        self.streamed = np.bincount(tl.stream_idx[: self.cursor], minlength=len(tl.streams)).astype(np.int64)
        self._anchor_data = int(tl.time_ns[min(self.cursor, len(tl) - 1)])
        self._anchor_wall = time.monotonic()
        self._wake.set()

    def reset(self) -> None:
        """Go back to the start; the clock restarts with the next subscription if nobody is subscribed."""
        self.seek(None)
        self.started = self._enough_streams()

    def pause(self) -> None:
        """Freeze the clock and the cursor."""
        if not self.paused:
            self._anchor_data = self.clock_ns()
            self.paused = True

    def resume(self) -> None:
        """Let the clock run again from where it was paused."""
        if self.paused:
            self.paused = False
            self._anchor_wall = time.monotonic()
            self._wake.set()

    # -- connections -----------------------------------------------------------
    def attach(self, combined: bool, want_meta: bool) -> Subscriber:
        """Register a new connection (subscribed to nothing yet)."""
        self._next_conn += 1
        sub = Subscriber(
            conn_id=self._next_conn,
            combined=combined,
            mask=np.zeros(len(self.data.timeline.streams), dtype=bool),
            want_meta=want_meta,
            queue=asyncio.Queue(maxsize=4 if self.speed == 0 else 0),
        )
        self.subscribers.append(sub)
        return sub

    def subscribe(self, sub: Subscriber, names: list[str], on: bool = True) -> None:
        """Subscribe (or unsubscribe) ``sub`` to stream names; the first subscription starts the clock."""
        for name in names:
            idx = self.stream_index.get(name)
            if idx is not None:
                sub.mask[idx] = on
            if on and name not in sub.names:
                sub.names.append(name)
            elif not on and name in sub.names:
                sub.names.remove(name)
        if on and not self.started and self._enough_streams():
            self._start_clock()
        self._wake.set()

    def subscribed_streams(self) -> int:
        """Return how many distinct streams with data some connection is subscribed to."""
        if not self.subscribers:
            return 0
        return int(np.logical_or.reduce([s.mask for s in self.subscribers]).sum())

    def _enough_streams(self) -> bool:
        # Capped at the streams the data has, so a too large setting cannot block forever.
        need = min(max(self.wait_for_streams, 1), len(self.data.timeline.streams))
        return self.subscribed_streams() >= need

    def detach(self, sub: Subscriber) -> int:
        """Remove a connection; return how many queued messages it never sent."""
        sub.closed = True
        if sub in self.subscribers:
            self.subscribers.remove(sub)
        lost = 0
        while not sub.queue.empty():
            batch = sub.queue.get_nowait()
            lost += len(batch[0]) if batch else 0
        return lost

    # -- loop ------------------------------------------------------------------
    async def run(self) -> None:
        """Run forever (until cancelled), handing out events as the clock reaches them."""
        tl = self.data.timeline
        n = len(tl)
        while True:
            active = [s for s in self.subscribers if s.mask.any()]
            if not self.started or self.paused or self.cursor >= n or (self.speed == 0 and not active):
                await self._sleep(1.0)
                continue
            a = self.cursor
            if self.speed == 0:
                b = min(a + self.batch_size, n)
            else:
                now = self.clock_ns()
                b = min(int(np.searchsorted(tl.time_ns, now, "right")), a + self.batch_size)
                if b <= a:
                    await self._sleep(min((int(tl.time_ns[a]) - now) / 1e9 / self.speed, 0.5))
                    continue
            await self._publish(a, b, active)
            if self.cursor == a:  # not moved by a seek meanwhile
                self.streamed += np.bincount(tl.stream_idx[a:b], minlength=len(tl.streams))
                self.cursor = b
            if self.speed == 0:
                await asyncio.sleep(0)

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=max(seconds, 0.0))

    async def _publish(self, a: int, b: int, subs: list[Subscriber]) -> None:
        tl = self.data.timeline
        s_idx, i_idx = tl.stream_idx[a:b], tl.item_idx[a:b]
        union = np.logical_or.reduce([s.mask for s in subs]) if subs else None
        if union is None:
            return
        sel = union[s_idx]
        if not sel.any():
            return
        s_sel, i_sel = s_idx[sel], i_idx[sel]
        framed: dict[bool, Batch] = {}
        for sub in subs:
            if sub.combined not in framed:
                framed[sub.combined] = self._format(s_sel, i_sel, sub.combined, any(s.want_meta for s in subs))
            msgs, meta = framed[sub.combined]
            if not np.array_equal(sub.mask, union):
                keep = np.flatnonzero(sub.mask[s_sel]).tolist()
                if not keep:
                    continue
                msgs = [msgs[k] for k in keep]
                meta = [meta[k] for k in keep] if meta is not None else None
            if sub.closed:
                continue
            if self.speed == 0:
                await sub.queue.put((msgs, meta))
            else:
                sub.queue.put_nowait((msgs, meta))

    def _format(self, s_sel: np.ndarray, i_sel: np.ndarray, combined: bool, want_meta: bool) -> Batch:
        """Return the messages (and their stream/trade id) of the selected events."""
        tl = self.data.timeline
        streams = np.unique(s_sel)
        groups: list[tuple[int, np.ndarray | None]]
        if len(streams) == 1:
            groups = [(int(streams[0]), None)]
        else:
            groups = [(int(s), np.flatnonzero(s_sel == s)) for s in streams]
        out: list[bytes] = [b""] * len(s_sel)
        meta: list[tuple[str, int | None]] | None = [("", None)] * len(s_sel) if want_meta else None
        for s, pos in groups:
            items = i_sel if pos is None else i_sel[pos]
            tape, raw = tl.tapes[s], tl.raws[s]
            if tape is not None:
                msgs = tape.payloads(items, combined)
                ids: list[int | None] = tape.ids[items].tolist()
            else:
                assert raw is not None
                msgs = [raw[i] if combined else inner_payload(raw[i]) for i in items.tolist()]
                ids = [None] * len(items)
            if pos is None:
                out = msgs
                if meta is not None:
                    meta = [(tl.streams[s], i) for i in ids]
                continue
            for k, p in enumerate(pos.tolist()):
                out[p] = msgs[k]
                if meta is not None:
                    meta[p] = (tl.streams[s], ids[k])
        return out, meta
