"""Find holes in a symbol's trade ids and fill them from REST (a corrupted or lost trade).

Binance numbers a symbol's trades consecutively, so a trade the parser refused (a
corrupted message goes to the dead letters) or a message that never arrived leaves a
visible hole between the ids of the trades that did.  :class:`IdGapRepair` sits between
the parser and the per-symbol pipeline: for every batch it finds the ids missing since
the last trade it saw, fetches them through the same fill as the websocket source's
(:class:`flows.sources.rest_fill.TradeFiller`: public ``aggTrades`` split back into
trades, or ``historicalTrades`` with a key), parses them like websocket messages and
hands them on with the batch, so the bar builder gets them before any later trade
closes their bar, and the bars equal those of a clean stream.  Ids REST does not have
either are recorded as a dead letter ``unfilled trade ids``.

The step's state (the last id and time seen, the quantities of the trades at that time,
which an aggregate spanning batches needs) is plain data, kept by Bytewax like the
pipeline's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any, Protocol

from flows.operators.parse import exchange_symbol
from flows.records import DeadLetter, Trade
from flows.snapshots import check_snapshot
from flows.sources.rest_fill import units_of

MAX_WINDOW_MS = 3_600_000  # aggTrades takes startTime..endTime of at most an hour
_TAIL = 1000  # trades of the latest time kept (an aggregate is one time)
_ID = itemgetter(1)  # Trade.trade_id


class HoleFetcher(Protocol):
    """What :class:`IdGapRepair` needs from a REST fill (:class:`flows.sources.rest_fill.TradeFiller`)."""

    def trades_between(self, market_id: str, first_id: int, start_ms: int, end_ms: int,
                       known: Mapping[int, int]) -> list[bytes]:
        """Return trades from ``first_id`` on, traded in ``[start_ms, end_ms]``, that ``known`` lacks."""
        ...


Parse = Callable[[list[bytes]], tuple[list[Trade], list[DeadLetter]]]


class IdGapRepair:
    """One symbol's hole finder and filler."""

    VERSION = 1

    def __init__(self, symbol: str, state: dict[str, Any] | None = None) -> None:
        s = state or {}
        self.symbol = symbol
        self.market_id = exchange_symbol(symbol)
        self.last_id: int | None = s.get("last_id")
        self.last_ts: int | None = s.get("last_ts")
        self.tail: dict[int, int] = {int(i): int(u) for i, u in s.get("tail", [])}  # id -> units at last_ts
        self.filled = int(s.get("filled", 0))

    @classmethod
    def from_snapshot(cls, snap: Any) -> IdGapRepair:
        """Rebuild the step from :meth:`snapshot`."""
        s = check_snapshot(snap, "id_gaps", cls.VERSION)
        return cls(s["symbol"], dict(s))

    def snapshot(self) -> dict[str, Any]:
        """Return the state as plain data."""
        return {"kind": "id_gaps", "version": self.VERSION, "symbol": self.symbol, "last_id": self.last_id,
                "last_ts": self.last_ts, "tail": [[i, u] for i, u in self.tail.items()], "filled": self.filled}

    def holes(self, trades: list[Trade]) -> list[tuple[int, int, int, int]]:
        """Return the holes ``(first id, last id, time before, time after)`` that ``trades`` reveal."""
        if not trades:
            return []
        ids = list(map(_ID, trades))
        first = ids[0]
        if (self.last_id is None or first == self.last_id + 1) and ids == list(range(first, first + len(ids))):
            return []  # the usual batch: the next ids in order
        out = []
        prev_id, prev_ts = self.last_id, self.last_ts
        for t in sorted(trades, key=_ID):
            tid = t.trade_id
            if prev_id is not None and prev_ts is not None and tid > prev_id + 1:
                out.append((prev_id + 1, tid - 1, prev_ts, t.ts))
            if prev_id is None or tid > prev_id:
                prev_id, prev_ts = tid, t.ts
        return out

    def repair(self, trades: list[Trade], fetcher: HoleFetcher, parse: Parse) -> tuple[list[Trade], list[DeadLetter]]:
        """Return the batch with its holes filled (REST trades first) and dead letters of what stayed missing."""
        holes = self.holes(trades)
        filled: list[Trade] = []
        dead: list[DeadLetter] = []
        if holes:
            known = dict(self.tail)
            known.update((t.trade_id, units_of(t.qty)) for t in trades)
            for first, start_ms, end_ms in _windows(holes):
                got, bad = parse(fetcher.trades_between(self.market_id, first, start_ms, end_ms, known))
                filled += got
                dead += bad
                known.update((t.trade_id, units_of(t.qty)) for t in got)
            have = {t.trade_id for t in filled}
            for first, last, _, t_after in holes:
                if (lost := _missing(first, last, have)) is not None:
                    n, lo, hi = lost
                    dead.append(DeadLetter("rest_fill", self.symbol, t_after,
                                           f"unfilled trade ids: {n} of {first}..{last} not on REST either",
                                           f'{{"first":{lo},"last":{hi}}}'))
            self.filled += len(filled)
        out = filled + trades if filled else trades
        self._remember(out)
        return out, dead

    def _remember(self, trades: list[Trade]) -> None:
        if not trades:
            return
        top = max(trades, key=_ID)
        if self.last_id is not None and top.trade_id <= self.last_id:
            return
        if top.ts != self.last_ts:
            self.tail = {}
        self.last_id, self.last_ts = top.trade_id, top.ts
        self.tail.update((t.trade_id, units_of(t.qty)) for t in trades if t.ts == top.ts)
        if len(self.tail) > _TAIL:
            self.tail = dict(sorted(self.tail.items())[-_TAIL:])


def _missing(first: int, last: int, have: set[int]) -> tuple[int, int, int] | None:
    """Return (how many, first, last) of the ids ``first..last`` not in ``have``; None if none.

    Never walks the range itself: a hostile trade id far ahead (``2**62``) makes a hole of
    that size, which must give one dead letter, not a list of every id in it.
    """
    inside = sorted(i for i in have if first <= i <= last)
    n = last - first + 1 - len(inside)
    if n <= 0:
        return None
    lo = first
    for i in inside:  # the first id not filled
        if i != lo:
            break
        lo += 1
    hi = last
    for i in reversed(inside):
        if i != hi:
            break
        hi -= 1
    return n, lo, hi


def _windows(holes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int]]:
    """Group holes into ``(first id, start ms, end ms)`` windows of at most :data:`MAX_WINDOW_MS`."""
    out: list[tuple[int, int, int]] = []
    for first, _, t_lo, t_hi in holes:
        if out and t_hi - out[-1][1] <= MAX_WINDOW_MS:
            out[-1] = (out[-1][0], out[-1][1], max(out[-1][2], t_hi))
            continue
        start = t_lo
        while t_hi - start > MAX_WINDOW_MS:  # a long gap: hour by hour
            out.append((first, start, start + MAX_WINDOW_MS))
            start += MAX_WINDOW_MS + 1
        out.append((first, start, t_hi))
    return out
