"""The one recovery protocol of the flow's stateful steps: a versioned snapshot of plain data.

A stateful step (:class:`~flows.operators.pipeline.SymbolPipeline`,
:class:`~flows.operators.cross_asset.CrossAssetStep`,
:class:`~flows.operators.scoring.CloseBarrier`, :class:`~flows.operators.decisions.DecisionStep`)
returns from ``snapshot()`` what JSON could hold (dicts, lists, tuples, strings, numbers,
booleans, None; new containers, so the step can go on while Bytewax keeps it) with a
``version`` field, and ``from_snapshot(snap)`` rebuilds it.  Bytewax holds and pickles
that plain data only (:mod:`flows.recovery`), never a live object, so a recovery
directory does not depend on the classes' layout.  A change of a snapshot's layout
bumps its ``VERSION``; an older snapshot is refused with :class:`SnapshotError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class SnapshotError(ValueError):
    """A snapshot this code cannot restore (another layout, another version, not a snapshot at all)."""


class Snapshotting(Protocol):
    """A stateful step: its state as plain data."""

    def snapshot(self) -> dict[str, Any]:
        """Return the state as plain data with a ``version`` field."""
        ...


def check_snapshot(snap: Any, kind: str, version: int) -> Mapping[str, Any]:
    """Return ``snap`` if it is a ``kind`` snapshot of ``version``; else raise :class:`SnapshotError`."""
    if not isinstance(snap, Mapping):
        raise SnapshotError(f"a {kind} snapshot is a dict of plain data; got a {type(snap).__module__}."
                            f"{type(snap).__qualname__} (a live object pickled by an older version)")
    if snap.get("kind") != kind or snap.get("version") != version:
        raise SnapshotError(f"expected a {kind} snapshot of version {version}; got kind {snap.get('kind')!r}, "
                            f"version {snap.get('version')!r}")
    return snap


_SCALARS = (str, int, float, bool, type(None))


def plain_violations(snap: Any, path: str = "$") -> list[str]:
    """Return where ``snap`` holds something other than plain data (``[]``: all plain), as ``$.key[i]`` paths.

    Plain data is what JSON could hold: dicts with string or integer keys, lists, tuples and
    scalars of the builtin types (a NamedTuple or a numpy value is not).
    """
    kind = type(snap)
    if kind in _SCALARS:
        return []
    if kind is dict:
        out = [f"{path} key {k!r}" for k in snap if type(k) not in (str, int)]
        for k, v in snap.items():
            out += plain_violations(v, f"{path}.{k}")
        return out
    if kind in (list, tuple):
        return [bad for i, v in enumerate(snap) for bad in plain_violations(v, f"{path}[{i}]")]
    return [f"{path}: {kind.__module__}.{kind.__qualname__}"]
