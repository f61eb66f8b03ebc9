"""flows/heap.py: the start-up heap is frozen; garbage made later is still collected."""

from __future__ import annotations

import gc
import weakref

from flows.heap import freeze_start_up_heap


class _Node:
    ref: object = None


def test_objects_alive_at_start_up_are_frozen_and_later_cycles_are_still_collected() -> None:
    gc.unfreeze()
    try:
        kept = [[i] for i in range(5000)]  # gc-tracked objects alive at "start-up"
        frozen = freeze_start_up_heap()
        assert frozen == gc.get_freeze_count() >= len(kept)
        assert gc.get_count()[2] == 0  # nothing left in the oldest generation to walk

        node = _Node()
        node.ref = node  # a cycle made after the freeze: only the collector frees it
        gone = weakref.ref(node)
        del node
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
