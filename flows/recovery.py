"""Bytewax side of the recovery protocol: a stateful step whose Bytewax state is its plain snapshot.

:func:`recoverable` stands where ``op.stateful_flat_map`` stood.  Bytewax keeps (and
pickles into the recovery directory) what the step's ``snapshot()`` returns, plain data
(:mod:`flows.snapshots`), and on resume the step is rebuilt by ``restore`` from it; the
live object, with its model sessions and broker connection, never leaves the worker.
The step id path is the one ``stateful_flat_map`` had (``<step>.stateful.stateful_batch``),
so a recovery directory written before this protocol is found, and refused with a message
that names it (its snapshots are pickled live objects): delete the directory and
re-create it with ``python -m bytewax.recovery DIR N`` (README, "Recovery").
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Generic, TypeVar

import bytewax.operators as op
from bytewax.dataflow import operator
from bytewax.operators import KeyedStream, StatefulLogic

from flows.snapshots import SnapshotError, Snapshotting

V = TypeVar("V")
W = TypeVar("W")
S = TypeVar("S", bound=Snapshotting)


def recovery_path() -> Path | None:
    """Return the recovery directory this run was given (``-r``, ``BYTEWAX_RECOVERY_DIRECTORY``), or None."""
    argv = sys.argv
    for i, arg in enumerate(argv):
        if arg in ("-r", "--recovery-directory") and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--recovery-directory="):
            return Path(arg.split("=", 1)[1])
    env = os.environ.get("BYTEWAX_RECOVERY_DIRECTORY")
    return Path(env) if env else None


def recovery_directory() -> str:
    """Return the recovery directory this run was given, as far as known, for a message."""
    path = recovery_path()
    return str(path) if path is not None else "DIR (the recovery directory this run resumes from)"


def old_snapshot_error(step_id: str, exc: SnapshotError) -> SnapshotError:
    """Return the error of a resume from a snapshot this code cannot read, naming the directory and the fix."""
    where = recovery_directory()
    return SnapshotError(
        f"step {step_id!r}: the recovery directory {where} holds a snapshot in a format this version cannot "
        f"read ({exc}). Delete it and re-create it with `python -m bytewax.recovery {where} N` (N partitions, "
        "as before); the flow then starts afresh (exchange.fill_since fetches history from a time first)")


class _StepLogic(StatefulLogic[V, W, dict[str, Any]], Generic[V, W, S]):
    """One key's step; Bytewax's state for the key is ``step.snapshot()``."""

    def __init__(self, step: S | None, mapper: Callable[[S | None, V], tuple[S, Iterable[W]]]) -> None:
        self.step, self.mapper = step, mapper

    def on_item(self, value: V) -> tuple[Iterable[W], bool]:
        self.step, out = self.mapper(self.step, value)
        return out, StatefulLogic.RETAIN

    def snapshot(self) -> dict[str, Any]:
        assert self.step is not None
        return self.step.snapshot()  # new containers of plain data: the step goes on while Bytewax keeps it


@operator
def recoverable(
    step_id: str,
    up: KeyedStream[V],
    restore: Callable[[Any], S],
    mapper: Callable[[S | None, V], tuple[S, Iterable[W]]],
) -> KeyedStream[W]:
    """Run ``mapper(step, item) -> (step, outputs)`` per key, recovering the step from its plain snapshot.

    ``mapper`` gets ``None`` for a new key (it builds the step) and the step so far otherwise;
    ``restore(snapshot)`` rebuilds a step from what its ``snapshot()`` returned (it raises
    :class:`~flows.snapshots.SnapshotError` for a snapshot it cannot read).
    """

    def builder(resume: Any) -> _StepLogic[V, W, S]:
        if resume is None:
            return _StepLogic(None, mapper)
        try:
            return _StepLogic(restore(resume), mapper)
        except SnapshotError as exc:
            raise old_snapshot_error(step_id, exc) from None

    return op.stateful("stateful", up, builder)
