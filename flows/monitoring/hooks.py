"""Hooks that count and time the flow's steps without touching its operators.

:class:`SymbolPipeline` runs the bars and the features of a batch in one call.
:func:`time_features` wraps its feature engines so the flow can report the two
stages apart (``cryptostream_stage_seconds{stage="bars"|"features"}``); the wrapper
passes everything else (``snapshot``, the state) through, so the pipeline's snapshot
and its outputs are unchanged.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flows.monitoring.metrics import FlowMetrics
from flows.operators.pipeline import SymbolPipeline

Parsed = tuple[str, tuple[list[Any], list[Any]]]
SAMPLE = 8  # per-batch steps time one batch in 8 (their counts cover every batch): the clock reads cost too


class FeatureClock:
    """Seconds spent in feature engines since the last :meth:`take`."""

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        self.seconds = 0.0

    def take(self) -> float:
        """Return the seconds accumulated and start again from 0."""
        s, self.seconds = self.seconds, 0.0
        return s


class _TimedEngine:
    """A feature engine whose ``update`` adds its time to a :class:`FeatureClock`."""

    __slots__ = ("_inner", "_clock")

    def __init__(self, inner: Any, clock: FeatureClock) -> None:
        self._inner, self._clock = inner, clock

    def update(self, bar: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self._inner.update(bar)
        finally:
            self._clock.seconds += time.perf_counter() - t0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@contextmanager
def time_features(pipe: SymbolPipeline) -> Iterator[FeatureClock]:
    """Time ``pipe``'s feature engines inside the block only: wrap them, yield the clock, unwrap them.

    Only for the sampled batches: an engine wrapped for good cost two clock reads and a call
    per bar in every batch, timed or not (issue 18's small-batch overhead).
    """
    engines = pipe.features
    plain = dict(engines)
    clock = FeatureClock()
    for tf, engine in plain.items():
        engines[tf] = _TimedEngine(engine, clock)  # type: ignore[assignment]
    try:
        yield clock
    finally:
        engines.update(plain)


def measured_parse(parse: Callable[[Any], Parsed], metrics: FlowMetrics) -> Callable[[Any], Parsed]:
    """Wrap the flow's parse step: count messages, trades and dead letters of each batch; time one in :data:`SAMPLE`."""

    tick = itertools.count()
    count = metrics.parse_counter()

    def measured(batch: tuple[str, int, list[Any]]) -> Parsed:
        if next(tick) % SAMPLE:
            out = parse(batch)
            trades, dead = out[1]
            count(batch[0], len(batch[2]), len(trades), dead, batch[1])
            return out
        t0 = time.perf_counter()
        out = parse(batch)
        seconds = time.perf_counter() - t0
        trades, dead = out[1]
        metrics.on_parsed(batch[0], len(batch[2]), len(trades), dead, batch[1], seconds)
        return out

    return measured
