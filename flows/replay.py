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

The two halves are apart: :meth:`DecisionReplay.settle` scores and releases closes,
:class:`ReplayDecisions` decides and stores them, and nothing the decisions do reaches
the scoring, so a backtest can run the halves in two processes
(:mod:`training.backtest_pipeline`) and make the same decisions.

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


class ReplayDecisions:
    """The decision half of a replay: settled closes through the decision step; its records to the store.

    ``sink`` is an open decision-store partition (``DecisionSink(settings).open()``) or None;
    records are written in batches of at least ``sink_batch`` and the rest by :meth:`close`.
    :attr:`spent` holds the seconds spent deciding and writing (``decisions``, ``sink``).
    """

    def __init__(self, step: DecisionStep, sink: Any = None, sink_batch: int = 5000,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        """Drive ``step``; ``clock`` times the stages (wall time, or e.g. ``time.thread_time`` for CPU time)."""
        self.step, self.sink, self.sink_batch, self.clock = step, sink, sink_batch, clock
        self.spent = {"decisions": 0.0, "sink": 0.0}
        self._out: list[Any] = []

    def decide(self, closes: list[Close], trade_after: int | None = None) -> tuple[list[Close], list[Any]]:
        """Work settled closes, oldest first; return the traded ones and what the decision step made of them.

        Closes at or before ``trade_after`` (ms) only warm the regime up, as live does: they are
        neither decided nor stored.
        """
        clock = self.clock
        t1 = clock()
        if trade_after is not None:
            if closes and closes[0].ts <= trade_after:
                self.step.warm([c for c in closes if c.ts <= trade_after])
            closes = [c for c in closes if c.ts > trade_after]
        out = self.step.on_closes(closes) if closes else []
        t2 = clock()
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


class DecisionReplay:
    """Feed chunks of history through the barrier and the decision step; store what they decide.

    ``step`` None: the replay only settles closes (:meth:`settle`, :meth:`settle_history`) and
    something else decides them (:mod:`training.backtest_pipeline`: another process).
    :attr:`spent` holds the seconds spent in each of :data:`STAGES`.
    """

    def __init__(self, barrier: CloseBarrier, step: DecisionStep | None, sink: Any = None, sink_batch: int = 5000,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        """Wrap a close barrier (its scoring step attached to a bank) and a decision step (:class:`ReplayDecisions`).

        ``clock`` times the stages (:attr:`spent`): wall time, or e.g. ``time.thread_time`` for CPU time.
        """
        self.barrier, self.clock = barrier, clock
        self.decisions = ReplayDecisions(step, sink, sink_batch, clock) if step is not None else None
        self.scoring = 0.0  # seconds in the barrier and the scoring step

    @property
    def spent(self) -> dict[str, float]:
        """Seconds spent in each of :data:`STAGES` (the decision stages only when this replay decides)."""
        return {"scoring": self.scoring, **(self.decisions.spent if self.decisions is not None else {})}

    def settle(self, records: list[Bar | FeatureRow]) -> list[Close]:
        """Take the records of some bar times; return the closes they settle, scored."""
        t0 = self.clock()
        closes = self.barrier.on_items(records)
        self.scoring += self.clock() - t0
        return closes

    def settle_history(self, closes: list[int], bars: list[tuple[Bar, ...]], x: np.ndarray) -> list[Close]:
        """Take whole bar times as matrices (:meth:`CloseBarrier.on_history`); the same as :meth:`settle` of their records.

        For bar times where every symbol has its bar and every feed feature, and the barrier
        is idle; the replay of history builds no feature records for them.
        """
        t0 = self.clock()
        settled = self.barrier.on_history(closes, bars, x)
        self.scoring += self.clock() - t0
        return settled

    def feed(self, records: list[Bar | FeatureRow], trade_after: int | None = None) -> tuple[list[Close], list[Any]]:
        """Take the records of some bar times; return the closes they settle and what the decision step made.

        Closes at or before ``trade_after`` (ms) only warm features, models and the regime up:
        they are neither decided nor stored.
        """
        return self._deciding().decide(self.settle(records), trade_after)

    def feed_history(self, closes: list[int], bars: list[tuple[Bar, ...]], x: np.ndarray,
                     trade_after: int | None = None) -> tuple[list[Close], list[Any]]:
        """:meth:`settle_history`, then decide: the same as :meth:`feed` of their records."""
        return self._deciding().decide(self.settle_history(closes, bars, x), trade_after)

    def _deciding(self) -> ReplayDecisions:
        if self.decisions is None:
            raise RuntimeError("this DecisionReplay has no decision step: it only settles closes")
        return self.decisions

    def close(self) -> None:
        """Write what is left and close the sink (its last write has landed when this returns)."""
        if self.decisions is not None:
            self.decisions.close()
