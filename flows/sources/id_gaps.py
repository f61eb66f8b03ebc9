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

A hole whose REST fill failed (the fill's retries of a network error, timeout, 5xx or 429
used up: :class:`~flows.sources.rest_fill.FillRetry`) is recorded the same way, with the
reason, and kept in the step's state: it is asked for again on later batches (after
:data:`RETRY_AFTER_MS` of trade time, doubling, at most :data:`MAX_TRIES` times) and at
the first batch after a restart, since the state is in the snapshot.  Trades found then
go on ahead of the batch; a bar that has closed meanwhile refuses them as late (a dead
letter again), a bar still open takes them.

The step's state (the last id and time seen, the quantities of the trades at that time,
which an aggregate spanning batches needs) is plain data, kept by Bytewax like the
pipeline's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any, Protocol

from flows.operators.parse import exchange_symbol
from flows.records import DeadLetter, Trade
from flows.snapshots import check_snapshot
from flows.sources.rest_fill import units_of

MAX_WINDOW_MS = 3_600_000  # aggTrades takes startTime..endTime of at most an hour
RETRY_AFTER_MS = 5_000  # trade time before a hole whose fill failed is asked for again; doubles per try
MAX_TRIES = 8  # asks for a failed hole after the first (5 s .. 21 min of trade time), then it is given up
MAX_PENDING = 64  # failed holes kept to retry; more are only dead letters
MAX_PENDING_IDS = 1_000_000  # a longer failed hole is not kept (not a lost message: a hostile id)
_KNOWN_SPAN = 1000  # ids on either side of a kept hole whose quantities are kept (an aggregate across it)
_TAIL = 1000  # trades of the latest time kept (an aggregate is one time)
_ID = itemgetter(1)  # Trade.trade_id
log = logging.getLogger(__name__)


class HoleFetcher(Protocol):
    """What :class:`IdGapRepair` needs from a REST fill (:class:`flows.sources.rest_fill.TradeFiller`)."""

    failed: int  # REST calls that failed for good (the fill's retries used up), counted up

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
        # holes whose fill failed: [first, last, time before, time after, tries, due time, [[id, units], ...]]
        self.pending: list[list[Any]] = [list(p) for p in s.get("pending", [])]

    @classmethod
    def from_snapshot(cls, snap: Any) -> IdGapRepair:
        """Rebuild the step from :meth:`snapshot`."""
        s = check_snapshot(snap, "id_gaps", cls.VERSION)
        step = cls(s["symbol"], dict(s))
        for p in step.pending:  # after a restart: ask for the failed holes at the first batch
            p[5] = 0
        return step

    def snapshot(self) -> dict[str, Any]:
        """Return the state as plain data."""
        return {"kind": "id_gaps", "version": self.VERSION, "symbol": self.symbol, "last_id": self.last_id,
                "last_ts": self.last_ts, "tail": [[i, u] for i, u in self.tail.items()], "filled": self.filled,
                "pending": [list(p) for p in self.pending]}

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
        if self.pending and trades:
            filled, dead = self._retry_pending(max(t.ts for t in trades), fetcher, parse)
        if holes:
            known = dict(self.tail)
            known.update((t.trade_id, units_of(t.qty)) for t in trades)
            failed = fetcher.failed
            got_now: list[Trade] = []
            for first, start_ms, end_ms in _windows(holes):
                got, bad = parse(fetcher.trades_between(self.market_id, first, start_ms, end_ms, known))
                got_now += got
                dead += bad
                known.update((t.trade_id, units_of(t.qty)) for t in got)
            broke = fetcher.failed > failed  # REST failed (not: REST lacks the ids)
            have = {t.trade_id for t in got_now}
            for first, last, t_before, t_after in holes:
                if (lost := _missing(first, last, have)) is None:
                    continue
                n, lo, hi = lost
                why = "not on REST either"
                if broke:
                    why = "the REST fill failed (see the dead letter before)"
                    if len(self.pending) < MAX_PENDING and hi - lo < MAX_PENDING_IDS:
                        near = sorted(i for i in known if lo - _KNOWN_SPAN <= i <= hi + _KNOWN_SPAN)
                        self.pending.append([lo, hi, t_before, t_after, 0, t_after + RETRY_AFTER_MS,
                                             [[i, known[i]] for i in near]])
                        why += "; asked for again later"
                dead.append(DeadLetter("rest_fill", self.symbol, t_after,
                                       f"unfilled trade ids: {n} of {first}..{last} {why}",
                                       f'{{"first":{lo},"last":{hi}}}'))
            filled += got_now
            self.filled += len(got_now)
        out = filled + trades if filled else trades
        self._remember(out)
        return out, dead

    def _retry_pending(self, now_ts: int, fetcher: HoleFetcher, parse: Parse) -> tuple[list[Trade], list[DeadLetter]]:
        """Ask REST again for the failed holes that are due at trade time ``now_ts``."""
        filled: list[Trade] = []
        dead: list[DeadLetter] = []
        keep: list[list[Any]] = []
        for hole in self.pending:
            lo, hi, t_before, t_after, tries, due, near = hole
            if now_ts < due:
                keep.append(hole)
                continue
            known = {int(i): int(u) for i, u in near}
            failed = fetcher.failed
            got: list[Trade] = []
            for first, start_ms, end_ms in _windows([(lo, hi, t_before, t_after)]):
                trades, bad = parse(fetcher.trades_between(self.market_id, first, start_ms, end_ms, known))
                got += [t for t in trades if lo <= t.trade_id <= hi]
                dead += bad
            filled += got
            self.filled += len(got)
            lost = _missing(lo, hi, {t.trade_id for t in got})
            if got:
                log.info("%s: %d trades of the unfilled ids %d..%d fetched from REST on a later try",
                         self.symbol, len(got), lo, hi)
            if lost is None:
                continue
            n, lo, hi = lost
            if fetcher.failed > failed and tries + 1 < MAX_TRIES:
                keep.append([lo, hi, t_before, t_after, tries + 1, now_ts + RETRY_AFTER_MS * 2 ** (tries + 1), near])
                continue
            why = "the REST fill failed" if fetcher.failed > failed else "not on REST either"
            dead.append(DeadLetter("rest_fill", self.symbol, now_ts,
                                   f"unfilled trade ids: {n} of {lo}..{hi} given up after {tries + 2} tries: {why}",
                                   f'{{"first":{lo},"last":{hi}}}'))
        self.pending = keep
        return filled, dead

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
