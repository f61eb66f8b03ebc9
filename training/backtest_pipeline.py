"""The backtest's two halves in two processes: scoring here, decisions in a forked child, as a pipeline.

``python -m training.backtest --chunk N --processes 2``: this process reads the bars, computes
the features and scores them behind the close barrier (:class:`flows.replay.DecisionReplay`
without a decision step); a child process forked at the start builds the decision step
with its risk engine, paper broker and portfolio (and the decision store with ``--store``)
and works every settled close, in order, while this process scores the next chunks.
Scoring never depends on a decision, so the child makes the same decisions from the same
closes as one process does: the same code computes fills, equity, positions, halts,
regimes and every stored record, and the scoring state never crosses.

What crosses, per chunk of closes, is one pickle of a few flat columns (:func:`pack`):
the closes' times, the fields of their bars and of their predictions column by column
(``zip(*records)``, C-level), which :func:`unpack` turns back into the same records with
C-level constructors (``tuple.__new__``), where pickling the records themselves would
run each namedtuple's Python ``__getnewargs__`` and ``__new__`` per record.  Pickle keeps
every value exactly (floats bit for bit, ints, strings, the predictions' dicts), so the
rebuilt closes are ``==`` to the originals, field for field, type for type.

The child's exceptions come back with its traceback (:class:`DecisionProcessError`); the
child is killed if this side fails and joined at the end, and it exits on its own when
this process dies (its pipe ends).  Forking needs a POSIX system (``fork`` start method).
"""

from __future__ import annotations

import fcntl
import gc
import multiprocessing
import os
import pickle
import time
import traceback
from collections.abc import Callable, Sequence
from functools import partial
from itertools import chain, islice
from operator import itemgetter
from typing import Any, NoReturn, Protocol

from flows.records import Bar, Close, Prediction

_bar = partial(tuple.__new__, Bar)  # Bar(*fields) without the namedtuple's Python-level __new__
_prediction = partial(tuple.__new__, Prediction)
_close = partial(tuple.__new__, Close)
_ts, _bars, _preds = itemgetter(0), itemgetter(1), itemgetter(2)
PIPE_BYTES = 1 << 20  # the chunk pipe's buffer: the scoring side may run a few chunks ahead
_SET_PIPE_SIZE = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux


class DecisionProcessError(RuntimeError):
    """The decision process failed; the message holds its traceback."""


class DecisionSide(Protocol):
    """What the child builds and drives: settled closes in, a picklable result out."""

    def take(self, closes: list[Close], first_open: dict[str, float]) -> None:
        """Decide and record ``closes`` (oldest first); ``first_open``: each symbol's first traded open so far."""
        ...

    def finish(self) -> Any:
        """Close the side's store and return its result (pickled back to the parent)."""
        ...


def _groups(items: list[Any], counts: list[int]) -> list[tuple[Any, ...]]:
    """Split ``items`` into consecutive tuples of ``counts`` items each."""
    if not counts:
        return []
    k = counts[0]
    if counts.count(k) == len(counts):  # the usual case, every close with every symbol: a C-level grouper
        return list(zip(*[iter(items)] * k, strict=False)) if k else [()] * len(counts)
    it = iter(items)
    return [tuple(islice(it, n)) for n in counts]


def pack(closes: list[Close], where: dict[int, int] | None = None) -> tuple[Any, ...]:
    """Return ``closes`` as flat columns: times, bars per close, the bars, predictions per close, their fields.

    ``where`` maps the id of each bar both processes hold (:class:`DecisionProcess`'s ``bars``)
    to its position there: when every bar of ``closes`` is one of those very objects, the bars
    go as their positions, else as their fields column by column.
    """
    bars = list(map(_bars, closes))
    preds = list(map(_preds, closes))
    flat = list(chain.from_iterable(bars))
    at = list(map(where.get, map(id, flat))) if where else [None]
    return (list(map(_ts, closes)), list(map(len, bars)),
            ("at", at) if None not in at else ("fields", list(zip(*flat, strict=True))),
            list(map(len, preds)), list(zip(*chain.from_iterable(preds), strict=True)))


def unpack(packed: tuple[Any, ...], held: Sequence[Bar] = ()) -> list[Close]:
    """Rebuild the closes :func:`pack` flattened (``==`` to them, the same types); ``held``: the shared bars."""
    times, n_bars, (kind, bar_part), n_preds, pred_cols = packed
    flat = list(map(held.__getitem__, bar_part)) if kind == "at" else list(map(_bar, zip(*bar_part, strict=True)))
    bars = _groups(flat, n_bars)
    preds = _groups(list(map(_prediction, zip(*pred_cols, strict=True))), n_preds)
    return list(map(_close, zip(times, bars, preds, strict=True)))


class DecisionProcess:
    """The parent's handle on the decision side in a forked child: :meth:`take` sends, :meth:`finish` collects.

    ``build`` runs in the child (after the fork) and returns its :class:`DecisionSide`.
    ``bars``: the run's bars, which both processes hold from the fork on (immutable records,
    kept alive by the caller for the run): a close's bars that are these very objects cross
    as their positions in it, not as their fields.
    :attr:`spent` holds this side's seconds: ``send`` (packing and pickling the closes) and
    ``wait`` (blocked: the pipe full because the decision side is behind, or waiting for its
    result); :meth:`finish` adds the child's (``receive``, ``idle`` and what its side timed)
    and its process's CPU seconds (``cpu decision process``).
    """

    def __init__(self, build: Callable[[], DecisionSide], clock: Callable[[], float] = time.perf_counter,
                 bars: Sequence[Bar] = ()) -> None:
        """Fork the child; it builds its side while this process goes on (loading the models, the features)."""
        ctx = multiprocessing.get_context("fork")
        self.clock = clock
        held = bars if isinstance(bars, list) else list(bars)
        self.spent = {"send": 0.0, "wait": 0.0}
        chunks_in, self._chunks = ctx.Pipe(duplex=False)
        self._results, results_out = ctx.Pipe(duplex=False)
        try:
            fcntl.fcntl(self._chunks.fileno(), _SET_PIPE_SIZE, PIPE_BYTES)
        except OSError:  # not Linux, or above /proc/sys/fs/pipe-max-size: the default buffer works, less ahead
            pass
        self._sent_first: int = -1
        self._process = ctx.Process(target=_serve, args=(build, chunks_in, results_out, self._chunks, self._results,
                                                         clock, held), name="backtest-decisions", daemon=True)
        self._process.start()
        chunks_in.close()  # the child's ends: when it exits, a send here fails and a receive ends
        results_out.close()
        self._where = dict(zip(map(id, held), range(len(held)), strict=True))  # this side's objects: ids stay
        self._held = held  # alive (and their ids unique) as long as the run

    def take(self, closes: list[Close], first_open: dict[str, float]) -> None:
        """Send ``closes`` (and ``first_open`` when it grew) to the decision side."""
        if not closes:
            return
        clock = self.clock
        t0 = clock()
        grew = len(first_open) != self._sent_first
        self._sent_first = len(first_open)
        data = pickle.dumps((pack(closes, self._where), dict(first_open) if grew else None), pickle.HIGHEST_PROTOCOL)
        t1 = clock()
        try:
            self._chunks.send_bytes(data)
        except (BrokenPipeError, ConnectionResetError):
            self._failed()
        self.spent["send"] += t1 - t0
        self.spent["wait"] += clock() - t1

    def finish(self) -> Any:
        """Tell the child the closes ended; return its side's result (:meth:`DecisionSide.finish`).

        :attr:`spent` then also holds the child's seconds and its process's CPU time.
        """
        t0 = self.clock()
        try:
            self._chunks.send_bytes(b"")
            kind, payload, spent = pickle.loads(self._results.recv_bytes())
        except (BrokenPipeError, ConnectionResetError, EOFError):
            self._failed()
        if kind != "result":
            self._failed(payload)
        self._process.join(10)  # it only has to exit
        self.spent["wait"] += self.clock() - t0
        self.spent.update(spent)
        self.close()
        return payload

    def _failed(self, message: str | None = None) -> NoReturn:
        """Raise the child's error: the traceback it sent, else how it ended."""
        if message is None:
            try:
                kind, message, _ = pickle.loads(self._results.recv_bytes()) if self._results.poll(5) else ("", "", {})
            except (EOFError, OSError):
                message = ""
            self._process.join(5)
            message = message or f"the decision process ended with exit code {self._process.exitcode}"
        self.close()
        raise DecisionProcessError(f"decision process failed:\n{message}")

    def close(self) -> None:
        """End the child (killed if it still runs) and release the pipes; safe to call twice."""
        if self._process.is_alive():
            self._process.kill()
        self._process.join()
        self._chunks.close()
        self._results.close()


def _serve(build: Callable[[], DecisionSide], chunks: Any, results: Any, parent_chunks: Any, parent_results: Any,
           clock: Callable[[], float], held: list[Bar]) -> None:
    """The child: build the side, decide every chunk the parent sends, send back the result or the traceback."""
    parent_chunks.close()  # the parent's ends: when the parent dies, the receive below ends
    parent_results.close()
    gc.disable()  # as in the parent: millions of small acyclic records (training.backtest)
    spent = {"receive": 0.0, "idle": 0.0}
    try:
        side = build()
        first_open: dict[str, float] = {}
        while True:
            t0 = clock()
            try:
                data = chunks.recv_bytes()
            except EOFError:  # the parent went away: nobody waits for a result
                return
            t1 = clock()
            if not data:
                break
            packed, first = pickle.loads(data)
            closes = unpack(packed, held)
            if first is not None:
                first_open = first
            t2 = clock()
            spent["idle"] += t1 - t0
            spent["receive"] += t2 - t1
            side.take(closes, first_open)
        out = ("result", side.finish(), {**spent, "cpu decision process": time.process_time()})
    except BaseException:  # noqa: BLE001  (any failure goes back to the parent with its traceback)
        out = ("error", f"(pid {os.getpid()})\n{traceback.format_exc()}", {})
    try:
        results.send_bytes(pickle.dumps(out, pickle.HIGHEST_PROTOCOL))
    except (BrokenPipeError, ConnectionResetError):
        pass
