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
from collections.abc import Callable
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


def time_features(pipe: SymbolPipeline) -> FeatureClock:
    """Return the clock of ``pipe``'s feature engines, wrapping them at the first call (one clock per pipeline).

    One clock per pipeline, not per flow: Bytewax workers are threads, and a key stays on its worker.
    """
    engines = pipe.features
    for engine in engines.values():
        if isinstance(engine, _TimedEngine):
            return engine._clock
        break
    clock = FeatureClock()
    for tf, engine in engines.items():
        engines[tf] = _TimedEngine(engine, clock)  # type: ignore[assignment]
    return clock


def measured_parse(parse: Callable[[Any], Parsed], metrics: FlowMetrics) -> Callable[[Any], Parsed]:
    """Wrap the flow's parse step: count messages, trades and dead letters of each batch; time one in :data:`SAMPLE`."""

    tick = itertools.count()

    def measured(batch: tuple[str, int, list[Any]]) -> Parsed:
        if next(tick) % SAMPLE:
            out = parse(batch)
            seconds = None
        else:
            t0 = time.perf_counter()
            out = parse(batch)
            seconds = time.perf_counter() - t0
        trades, dead = out[1]
        metrics.on_parsed(batch[0], len(batch[2]), len(trades), dead, batch[1], seconds)
        return out

    return measured
