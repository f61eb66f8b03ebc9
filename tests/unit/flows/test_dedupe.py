"""Deduper and RecentIds against a plain reference: a set of ids and a deque of their arrival order.

For any sequence of ids and any capacity, the deduper answers exactly as the
reference does: the same fresh trades in the same order, the same duplicates, the
same ids remembered (in arrival order), also after a snapshot round trip.
"""

from __future__ import annotations

import copy
from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from flows.operators.dedupe import Deduper, RecentIds
from flows.records import Trade


class ReferenceDeduper:
    """What :class:`Deduper` promises, written the obvious way."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.held, self.order = capacity, set[int](), deque[int]()

    def update(self, trades: list[Trade]) -> tuple[list[Trade], list[Trade]]:
        fresh, dups = [], []
        for t in trades:
            if t.trade_id in self.held:
                dups.append(t)
            else:
                self.held.add(t.trade_id)
                self.order.append(t.trade_id)
                fresh.append(t)
        while len(self.order) > self.capacity:  # forgets the oldest once the batch is in
            self.held.discard(self.order.popleft())
        times = [t.ts for t in fresh]
        if times != sorted(times):  # in time order already: kept as it came
            fresh.sort(key=lambda t: (t.ts, t.trade_id))
        return fresh, dups


# Ids near each other (so runs and shared 64-id buckets occur), or anywhere in a wide range.
ids = st.one_of(st.integers(0, 300), st.integers(0, 2**40))
batches = st.lists(st.lists(st.tuples(ids, st.integers(0, 20)), max_size=40), max_size=12)


def _trades(batch: list[tuple[int, int]]) -> list[Trade]:
    return [Trade("BTC/USDT", i, 1_700_000_000_000 + 1_000 * dt, 1.0, 0.1, False) for i, dt in batch]


@settings(max_examples=300, deadline=None)
@given(batches=batches, capacity=st.integers(1, 150), cut=st.integers(0, 12))
def test_the_deduper_answers_as_a_set_plus_deque(batches, capacity, cut) -> None:
    got, want = Deduper(capacity), ReferenceDeduper(capacity)
    for k, batch in enumerate(batches):
        if k == cut:  # a restart from a snapshot, and a deep copy, change nothing
            got = copy.deepcopy(Deduper(capacity, state=got.snapshot()))
        trades = _trades(batch)
        assert got.update(trades) == want.update(trades)
        assert list(got.ids) == list(want.order)
        assert got.ids.size == len(want.held)
        assert all((i in got.ids) == (i in want.held) for i, _ in batch)


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.one_of(st.tuples(st.just("add"), st.lists(ids, max_size=30)),
                                st.tuples(st.just("forget"), st.integers(0, 40))), max_size=20))
def test_recent_ids_hold_and_forget_as_a_set_plus_deque(steps) -> None:
    got, held, order, seen = RecentIds(), set[int](), deque[int](), set[int]()
    for op, arg in steps:
        if op == "add":
            new = list(dict.fromkeys(i for i in arg if i not in held))  # add_all takes ids not held yet
            if new:
                got.add_all(new)
                held.update(new)
                order.extend(new)
        else:
            got.forget_oldest(arg)
            for _ in range(min(arg, len(order))):
                held.discard(order.popleft())
        assert list(got) == list(order) and got.size == len(held)
        seen.update(arg if op == "add" else ())
        assert all((i in got) == (i in held) for i in seen)  # forgotten ids are gone
    twin = got.copy()
    assert list(twin) == list(order) and list(RecentIds(list(order))) == list(order)
