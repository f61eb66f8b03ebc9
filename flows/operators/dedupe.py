"""Drop repeated trade ids and put each batch in event-time order.

Exchanges resend trades after reconnects and replays, and websocket batches can
arrive slightly out of order.  The deduper remembers the last ``capacity`` trade
ids of a symbol, returns duplicates to the caller so they are counted and kept,
and sorts the rest by (time, id).

An exchange numbers the trades of a symbol consecutively, which :class:`RecentIds`
uses: arrival order is kept as runs of consecutive ids, membership as 64-id
bitmasks, so the last 200,000 ids of a live symbol take a few kB instead of a
set and a FIFO of 200,000 int objects (~20 MB per symbol), and a batch of new
consecutive ids is added a bitmask at a time.  Any order of ids still works,
each id costing at most one run and one bitmask; ids in random order (never
seen from an exchange) cost ~3 us each instead of ~1 us with a plain set.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from operator import itemgetter, le
from typing import Any

from flows.records import Trade

_ID, _TS = itemgetter(1), itemgetter(2)  # Trade.trade_id, Trade.ts


def _masks(start: int, end: int) -> list[tuple[int, int]]:
    """Return (bucket, bitmask) pairs covering the ids ``start..end-1``; bucket ``b`` holds ids ``64b..64b+63``."""
    first, last = start >> 6, (end - 1) >> 6
    if first == last:  # a short run: one bucket
        return [(first, ((1 << (end - start)) - 1) << (start & 63))]
    out = []
    for bucket in range(first, last + 1):
        lo, hi = max(start, bucket << 6) - (bucket << 6), min(end, (bucket + 1) << 6) - (bucket << 6)
        out.append((bucket, ((1 << (hi - lo)) - 1) << lo))
    return out


class RecentIds:
    """A set of integer ids that forgets the oldest arrivals first.

    ``runs`` holds the ids in arrival order as runs ``[start, end)`` of consecutive
    ids; ``bits`` maps a bucket of 64 ids to the bitmask of those held.
    """

    def __init__(self, ids: Iterable[int] = ()) -> None:
        self.runs: deque[list[int]] = deque()
        self.bits: dict[int, int] = {}
        self.size = 0
        self.top: int | None = None  # above every id held (and every id ever held)
        ids = list(ids)
        if ids and len(set(ids)) == len(ids):
            self.add_all(ids)
        else:  # repeated ids: keep the first arrival of each
            for i in ids:
                if i not in self:
                    self.add_all((i,))

    def __contains__(self, i: int) -> bool:
        return bool(self.bits.get(i >> 6, 0) >> (i & 63) & 1)

    def __iter__(self) -> Iterator[int]:
        """Iterate over the ids in arrival order."""
        return chain.from_iterable(range(start, end) for start, end in self.runs)

    def add_new(self, start: int, end: int) -> None:
        """Add the ids ``start..end-1``, arrived in that order; none of them may be held yet."""
        bits = self.bits
        for bucket, mask in _masks(start, end):
            bits[bucket] = bits.get(bucket, 0) | mask
        self.size += end - start
        self.top = end if self.top is None else max(self.top, end)
        if self.runs and self.runs[-1][1] == start:  # continues the newest run
            self.runs[-1][1] = end
        else:
            self.runs.append([start, end])

    def add_all(self, ids: Sequence[int]) -> None:
        """Add ids that are not held yet, in arrival order, a run of consecutive ids at a time."""
        start = prev = ids[0]
        for i in ids[1:]:
            if i != prev + 1:
                self.add_new(start, prev + 1)
                start = i
            prev = i
        self.add_new(start, prev + 1)

    def forget_oldest(self, n: int) -> None:
        """Forget the ``n`` ids that arrived first."""
        bits = self.bits
        while n > 0 and self.runs:
            first = self.runs[0]
            drop = min(n, first[1] - first[0])
            for bucket, mask in _masks(first[0], first[0] + drop):
                left = bits[bucket] & ~mask
                if left:
                    bits[bucket] = left
                else:
                    del bits[bucket]
            first[0] += drop
            n -= drop
            self.size -= drop
            if first[0] == first[1]:
                self.runs.popleft()

    @classmethod
    def from_runs(cls, runs: Iterable[Sequence[int]], top: int | None) -> RecentIds:
        """Rebuild the set from its runs in arrival order and its ``top`` (as :meth:`Deduper.snapshot` keeps them)."""
        out = cls()
        for start, end in runs:
            out.add_new(int(start), int(end))
        out.top = None if top is None else int(top)
        return out

    def copy(self) -> RecentIds:
        """Return an independent copy."""
        twin = RecentIds()
        twin.runs = deque([run[:] for run in self.runs])
        twin.bits, twin.size, twin.top = dict(self.bits), self.size, self.top
        return twin


class Deduper:
    """Per-symbol trade id memory."""

    def __init__(self, capacity: int = 200_000, state: dict[str, Any] | None = None) -> None:
        """Remember ``capacity`` ids; ``state`` is a :meth:`snapshot` (or ``{"ids": [...]}``, ids in arrival order)."""
        s = state or {}
        self.capacity = int(s.get("capacity", capacity))
        self.ids = RecentIds.from_runs(s["runs"], s.get("top")) if "runs" in s else RecentIds(s.get("ids", ()))

    def snapshot(self) -> dict[str, Any]:
        """Return the state as plain data: the runs of ids, not the ids.

        Bytewax takes the snapshot at every epoch (with or without recovery); an exchange's ids
        are consecutive, so the last 200,000 ids of a symbol are a run or a few.
        """
        ids = self.ids
        return {"capacity": self.capacity, "runs": [[start, end] for start, end in ids.runs], "top": ids.top}

    def update(self, trades: list[Trade]) -> tuple[list[Trade], list[Trade]]:
        """Return (new trades in (time, id) order, duplicates)."""
        ids = self.ids
        batch = list(map(_ID, trades))
        if batch and (ids.top is None or min(batch) >= ids.top) and len(set(batch)) == len(batch):
            # The usual batch: no id repeated and all past every id held, so none is a duplicate.
            ids.add_all(batch)
            fresh, dups = list(trades), list[Trade]()
        else:
            fresh, dups = [], []
            for t in trades:
                if t.trade_id in ids:
                    dups.append(t)
                else:
                    ids.add_all((t.trade_id,))
                    fresh.append(t)
        if ids.size > self.capacity:
            ids.forget_oldest(ids.size - self.capacity)
        times = list(map(_TS, fresh))
        if not all(map(le, times, times[1:])):
            fresh.sort(key=lambda t: (t.ts, t.trade_id))
        return fresh, dups
