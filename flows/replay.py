"""Historical replay through the decision path: close barrier with scoring, decision step, decision store.

The live flow feeds its scoring barrier one record at a time, as trades arrive.  A
replay of stored history (``python -m training.backtest``, the replay benchmark)
already holds every bar and feature row of a stretch of bar times, so
:class:`DecisionReplay` hands the barrier ``chunk`` bar times of records at once:
with the bank in history mode (:attr:`flows.operators.model_bank.ModelBank.history_mode`)
the row-wise members and the ensemble graph run once over all of their rows, the GNN's
bar times in one session run and the stateful LSTM's in one ``seq.onnx`` call per run of
consecutive bars.  The decision step then works the settled closes in order (one
kill-switch read for them), and every decision record goes to the profile's decision
store (:class:`flows.sinks.decisions.DecisionSink`) in batches.

A replay that holds the features as arrays hands whole regular bar times over as one feed
matrix instead (:meth:`DecisionReplay.feed_history`, :meth:`CloseBarrier.on_history`): the same
values scored in the same groups, without the feature rows' dicts.

``chunk=1`` scores bar time by bar time, exactly as the live flow does (bit for bit);
a larger chunk gives the same predictions within float rounding of the batched graph
runs.  Either way the same inputs give the same outputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from flows.operators.decisions import DecisionStep
from flows.operators.scoring import CloseBarrier
from flows.records import Bar, Close, FeatureRow

STAGES = ("scoring", "decisions", "sink")  # what :attr:`DecisionReplay.spent` times


def bar_time_chunks(records: Iterable[Bar | FeatureRow], chunk: int,
                    tf_ms: int) -> Iterator[list[Bar | FeatureRow]]:
    """Group records in close-time order into lists of ``chunk`` consecutive bar closes.

    A bar's close is its ``ts`` (open) plus ``tf_ms``; a feature row's ``ts`` is its close.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1 bar time, got {chunk}")
    out: list[Bar | FeatureRow] = []
    times = 0
    last: int | None = None
    for rec in records:
        close = rec.ts + tf_ms if isinstance(rec, Bar) else rec.ts
        if close != last:
            if times == chunk:
                yield out
                out, times = [], 0
            last, times = close, times + 1
        out.append(rec)
    if out:
        yield out


class DecisionReplay:
    """Feed chunks of history through the barrier and the decision step; store what they decide.

    ``sink`` is an open decision-store partition (``DecisionSink(settings).open()``) or None;
    records are written in batches of at least ``sink_batch`` and the rest by :meth:`close`.
    :attr:`spent` holds the seconds spent in each of :data:`STAGES`.
    """

    def __init__(self, barrier: CloseBarrier, step: DecisionStep, sink: Any = None, sink_batch: int = 5000,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        """Wrap a close barrier (its scoring step attached to a bank) and a decision step.

        ``clock`` times the stages (:attr:`spent`): wall time, or e.g. ``time.thread_time`` for CPU time.
        """
        self.barrier, self.step, self.sink, self.sink_batch, self.clock = barrier, step, sink, sink_batch, clock
        self.spent = dict.fromkeys(STAGES, 0.0)
        self._out: list[Any] = []

    def feed(self, records: list[Bar | FeatureRow], trade_after: int | None = None) -> tuple[list[Close], list[Any]]:
        """Take the records of some bar times; return the closes they settle and what the decision step made.

        Closes at or before ``trade_after`` (ms) only warm features, models and the regime up:
        they are neither decided nor stored.
        """
        t0 = self.clock()
        return self._decide(self.barrier.on_items(records), t0, trade_after)

    def feed_history(self, closes: list[int], bars: list[tuple[Bar, ...]], x: np.ndarray,
                     trade_after: int | None = None) -> tuple[list[Close], list[Any]]:
        """Take whole bar times as matrices (:meth:`CloseBarrier.on_history`); the same as :meth:`feed` of their records.

        For bar times where every symbol has its bar and every feed feature, and the barrier
        is idle; the replay of history builds no feature records for them.
        """
        t0 = self.clock()
        return self._decide(self.barrier.on_history(closes, bars, x), t0, trade_after)

    def _decide(self, closes: list[Close], t0: float, trade_after: int | None) -> tuple[list[Close], list[Any]]:
        clock = self.clock
        if trade_after is not None:
            if closes and closes[0].ts <= trade_after:  # warm-up: the regime sees its closes too, as live does
                self.step.warm([c for c in closes if c.ts <= trade_after])
            closes = [c for c in closes if c.ts > trade_after]
        t1 = clock()
        out = self.step.on_closes(closes) if closes else []
        t2 = clock()
        self.spent["scoring"] += t1 - t0
        self.spent["decisions"] += t2 - t1
        if self.sink is not None and closes:
            self._out += [p for c in closes for p in c.predictions]
            self._out += out
            if len(self._out) >= self.sink_batch:
                self._write()
                self.spent["sink"] += clock() - t2
        return closes, out

    def _write(self) -> None:
        batch, self._out = self._out, []
        self.sink.write_batch(batch)

    def close(self) -> None:
        """Write what is left and close the sink (its last write has landed when this returns)."""
        if self.sink is None:
            return
        t0 = self.clock()
        try:
            if self._out:
                self._write()
        finally:
            self.sink.close()
        self.spent["sink"] += self.clock() - t0
