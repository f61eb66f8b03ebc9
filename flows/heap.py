"""The process heap once a worker has started: long-lived objects out of the cyclic collector's way.

A worker holds, for its whole life, the ONNX sessions and their manifests, the
settings, the risk and broker objects and Bytewax's operators.  CPython's cyclic
garbage collector walks every tracked object at each full (oldest generation)
collection, and the per-bar allocations of scoring and decisions trigger those
collections again and again.  :func:`freeze_start_up_heap` collects once and moves
everything alive at that point to the permanent generation (:func:`gc.freeze`), so
later collections walk only what was allocated since.  Frozen objects are still
freed by reference counting; only a reference cycle among them is never collected
(what a model swap drops stays in memory if it holds cycles: at most the old
runners' sessions, once per swap).

Measured on the historical replay (``tests/bench/bench_decisions.py``): about 15 %
of a replay's time went to full collections walking the start-up heap.
"""

from __future__ import annotations

import gc


def freeze_start_up_heap() -> int:
    """Collect once, then freeze every object alive now; return how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
