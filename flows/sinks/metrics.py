"""Timing of the flow's sinks: wrappers that observe each ``write_batch`` in ``cryptostream_sink_seconds``.

:func:`timed` wraps a Bytewax sink (dynamic or fixed-partitioned) so the sink
modules stay free of metrics; the wrapped partitions behave exactly like the
originals (``snapshot`` and ``close`` pass through).  The flow wraps its sinks only
when metrics are served (:func:`flows.monitoring.metrics.current`).
"""

from __future__ import annotations

import time
from typing import Any

from bytewax.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)

from flows.monitoring.metrics import FlowMetrics


class _Timed:
    """What both partition wrappers do: time ``write_batch``, pass ``close`` through."""

    def __init__(self, inner: Any, name: str, metrics: FlowMetrics) -> None:
        self.inner, self.name, self.metrics = inner, name, metrics

    def write_batch(self, items: list[Any]) -> None:
        t0 = time.perf_counter()
        self.inner.write_batch(items)
        self.metrics.on_sink(self.name, time.perf_counter() - t0)

    def close(self) -> None:
        self.inner.close()


class _TimedStateless(_Timed, StatelessSinkPartition[Any]):
    pass


class _TimedStateful(_Timed, StatefulSinkPartition[Any, Any]):
    def snapshot(self) -> Any:
        return self.inner.snapshot()


class TimedDynamicSink(DynamicSink[Any]):
    """A dynamic sink whose partitions time their writes."""

    def __init__(self, inner: DynamicSink[Any], name: str, metrics: FlowMetrics) -> None:
        """Wrap ``inner``; its writes are observed under ``sink=name``."""
        self.inner, self.name, self.metrics = inner, name, metrics

    def build(self, step_id: str, worker_index: int, worker_count: int) -> StatelessSinkPartition[Any]:
        """Build the inner partition and wrap it."""
        return _TimedStateless(self.inner.build(step_id, worker_index, worker_count), self.name, self.metrics)


class TimedFixedSink(FixedPartitionedSink[Any, Any]):
    """A fixed-partitioned sink whose partitions time their writes (their snapshots pass through)."""

    def __init__(self, inner: FixedPartitionedSink[Any, Any], name: str, metrics: FlowMetrics) -> None:
        """Wrap ``inner``; its writes are observed under ``sink=name``."""
        self.inner, self.name, self.metrics = inner, name, metrics

    def list_parts(self) -> list[str]:
        """The inner sink's partitions."""
        return self.inner.list_parts()

    def part_fn(self, item_key: str) -> int:
        """The inner sink's routing."""
        return self.inner.part_fn(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> StatefulSinkPartition[Any, Any]:
        """Build the inner partition and wrap it."""
        return _TimedStateful(self.inner.build_part(step_id, for_part, resume_state), self.name, self.metrics)


def timed(sink: Any, name: str, metrics: FlowMetrics | None) -> Any:
    """Return ``sink`` timed under ``name``, or ``sink`` itself without metrics."""
    if metrics is None:
        return sink
    if isinstance(sink, FixedPartitionedSink):
        return TimedFixedSink(sink, name, metrics)
    return TimedDynamicSink(sink, name, metrics)
