"""Bytewax keeps a step's plain snapshot (``flows.recovery.recoverable``), and refuses an old directory by name.

A recovery directory written before this protocol holds pickled live objects under the
step id path ``op.stateful_flat_map`` had; ``recoverable`` uses the same path, so such a
directory is found and the resume stops with a message naming it and the way out.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from flows.recovery import recoverable
from flows.snapshots import check_snapshot, plain_violations


class Summer:
    """A toy stateful step: a running sum per key."""

    VERSION = 1

    def __init__(self, total: int = 0) -> None:
        self.total = total

    @classmethod
    def from_snapshot(cls, snap: Any) -> Summer:
        restored.append(snap)
        return cls(int(check_snapshot(snap, "summer", cls.VERSION)["total"]))

    def snapshot(self) -> dict[str, Any]:
        return {"kind": "summer", "version": self.VERSION, "total": self.total}


restored: list[Any] = []


def step(state: Summer | None, x: int) -> tuple[Summer, list[int]]:
    state = state or Summer()
    state.total += x
    return state, [state.total]


def flow(items: list[Any], out: list[int], new: bool) -> Dataflow:
    f = Dataflow("toy")
    keyed = op.key_on("key", op.input("in", f, TestingSource(items)), lambda _: "k")
    sums = recoverable("sums", keyed, Summer.from_snapshot, step) if new else op.stateful_flat_map("sums", keyed, step)
    op.output("out", op.key_rm("unkey", sums), TestingSink(out))
    return f


def recovery_dir(tmp_path: Path) -> Path:
    db = tmp_path / "recovery"
    db.mkdir()
    init_db_dir(db, 1)
    return db


def test_a_resumed_step_is_rebuilt_from_its_plain_snapshot(tmp_path: Path) -> None:
    items = [1, 2, 3, TestingSource.ABORT(), 4, 5]
    clean: list[int] = []
    run_main(flow([x for x in items if isinstance(x, int)], clean, new=True))
    db, out = recovery_dir(tmp_path), []
    rc = RecoveryConfig(str(db))
    restored.clear()
    run_main(flow(items, out, new=True), epoch_interval=timedelta(0), recovery_config=rc)  # stops at ABORT
    run_main(flow(items, out, new=True), epoch_interval=timedelta(0), recovery_config=rc)
    assert out[-2:] == clean[-2:] == [10, 15]
    assert restored and all(type(s) is dict and plain_violations(s) == [] for s in restored)
    with sqlite3.connect(next(db.glob("*.sqlite3"))) as con:
        steps = {r[0] for r in con.execute("SELECT step_id FROM snaps")}
    assert "toy.sums.stateful.stateful_batch" in steps, "the step id path stateful_flat_map had"


def test_an_old_directory_of_pickled_live_objects_is_refused_by_name(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    items = [1, 2, 3, TestingSource.ABORT(), 4, 5]
    db = recovery_dir(tmp_path)
    rc = RecoveryConfig(str(db))
    run_main(flow(items, [], new=False), epoch_interval=timedelta(0), recovery_config=rc)  # the old mechanism
    monkeypatch.setenv("BYTEWAX_RECOVERY_DIRECTORY", str(db))
    with pytest.raises(Exception) as info:
        run_main(flow(items, [], new=True), epoch_interval=timedelta(0), recovery_config=rc)
    chain, exc = [], info.value
    while exc is not None:
        chain.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    text = "\n".join(chain)
    assert f"the recovery directory {db} holds a snapshot in a format this version cannot read" in text
    assert f"python -m bytewax.recovery {db} N" in text and f"{Summer.__module__}.Summer (a live object pickled" in text
