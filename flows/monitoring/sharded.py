"""Counters and histograms for the flow's per-batch hooks: one plain dict per thread, summed at scrape time.

prometheus-client's ``Counter.inc`` and ``Histogram.observe`` take a lock on every
call (about 1 and 3 microseconds here when the machine is quiet, several times that
under load); the flow reports several of them per batch of trades.  Here each
Bytewax worker thread adds into its own dict (no lock, no contention: only its
thread writes it), and :meth:`ShardedMetrics.collect`, run by the ``/metrics``
request, sums the shards into the usual metric families.  A copy of a dict is
atomic under the GIL, so a scrape never sees a half-written shard; it may miss the
batch being counted at that instant, which the next scrape shows.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

Key = tuple[str, tuple[str, ...]]  # (metric name, label values)


class ShardedMetrics(Collector):
    """Counters, histograms and max-gauges kept per thread and merged when collected."""

    def __init__(self, buckets: Sequence[float]) -> None:
        """Declare nothing yet; ``buckets`` are the upper bounds of every histogram (seconds)."""
        self.buckets = tuple(buckets)
        self._decl: dict[str, tuple[str, str, tuple[str, ...]]] = {}  # name -> (kind, help, label names)
        self._local = threading.local()
        self._shards: list[dict[Key, Any]] = []
        self._lock = threading.Lock()

    def declare(self, name: str, kind: str, doc: str, labels: Sequence[str]) -> None:
        """Declare metric ``name`` of ``kind`` counter, histogram or max_gauge (the largest value set wins)."""
        self._decl[name] = (kind, doc, tuple(labels))

    def shard(self) -> dict[Key, Any]:
        """Return this thread's dict (made at the thread's first call)."""
        try:
            return self._local.values
        except AttributeError:
            values: dict[Key, Any] = {}
            self._local.values = values
            with self._lock:
                self._shards.append(values)
            return values

    def inc(self, name: str, labels: tuple[str, ...], n: float = 1.0) -> None:
        """Add ``n`` to a counter."""
        d, key = self.shard(), (name, labels)
        d[key] = d.get(key, 0.0) + n

    def observe(self, name: str, labels: tuple[str, ...], value: float) -> None:
        """Add one observation to a histogram."""
        d, key = self.shard(), (name, labels)
        h = d.get(key)
        if h is None:
            h = d[key] = [0] * (len(self.buckets) + 1) + [0.0]  # per-bucket counts (+Inf last), then the sum
        h[bisect_left(self.buckets, value)] += 1
        h[-1] += value

    def set_max(self, name: str, labels: tuple[str, ...], value: float) -> None:
        """Set a gauge whose merged value is the largest any thread set (e.g. the latest timestamp)."""
        self.shard()[(name, labels)] = value

    def value(self, name: str, labels: tuple[str, ...]) -> float:
        """Return a counter's or max-gauge's merged value, or a histogram's count (tests)."""
        total = 0.0
        for key, v in self._merged().items():
            if key == (name, labels):
                total = sum(v[:-1]) if isinstance(v, list) else v
        return total

    def _merged(self) -> dict[Key, Any]:
        with self._lock:
            shards = list(self._shards)
        out: dict[Key, Any] = {}
        for shard in shards:
            for key, v in dict(shard).items():  # dict() copies atomically under the GIL
                kind = self._decl[key[0]][0]
                have = out.get(key)
                if kind == "histogram":
                    v = list(v)
                    out[key] = v if have is None else [a + b for a, b in zip(have, v, strict=True)]
                elif kind == "max_gauge":
                    out[key] = v if have is None else max(have, v)
                else:
                    out[key] = v if have is None else have + v
        return out

    def collect(self) -> Iterator[Any]:
        """Yield the merged metric families (called by the registry at each scrape)."""
        merged = self._merged()
        bounds = [*(repr(float(b)) for b in self.buckets), "+Inf"]
        for name, (kind, doc, label_names) in self._decl.items():
            samples = [(labels, v) for (n, labels), v in merged.items() if n == name]
            if kind == "counter":
                fam: Any = CounterMetricFamily(name, doc, labels=label_names)
                for labels, v in samples:
                    fam.add_metric(list(labels), v)
            elif kind == "max_gauge":
                fam = GaugeMetricFamily(name, doc, labels=label_names)
                for labels, v in samples:
                    fam.add_metric(list(labels), v)
            else:
                fam = HistogramMetricFamily(name, doc, labels=label_names)
                for labels, v in samples:
                    cumulative, run = [], 0
                    for bound, c in zip(bounds, v[:-1], strict=True):
                        run += c
                        cumulative.append((bound, run))
                    fam.add_metric(list(labels), cumulative, v[-1])
            yield fam
