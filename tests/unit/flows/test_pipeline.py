"""Per-symbol pipeline: its snapshot is versioned plain data, and a pipeline rebuilt from it goes on like the original."""

from __future__ import annotations

import copy
import json
import random

import pytest

from flows.operators.dedupe import Deduper
from flows.operators.pipeline import SymbolPipeline
from flows.records import Trade
from flows.snapshots import SnapshotError, plain_violations

SYM = "BTC/USDT"


def trades(n: int, seed: int = 3) -> list[list[Trade]]:
    """Batches of trades with consecutive ids, some repeated (resends) and some late."""
    rng = random.Random(seed)
    out, px, tid, ts = [], 100.0, 1_000, 0
    for _ in range(n):
        batch = []
        for _ in range(rng.randint(1, 6)):
            ts += rng.randint(0, 20_000)
            px *= 1 + rng.gauss(0, 0.001)
            batch.append(Trade(SYM, tid, ts - rng.choice((0, 0, 0, 90_000)), px, rng.random(), rng.random() < 0.5))
            tid += 1
        if out and rng.random() < 0.2:
            batch.append(out[-1][0])  # a resent trade
        out.append(batch)
    return out


def test_snapshot_is_plain_data_and_the_rebuilt_pipeline_continues_identically() -> None:
    batches = trades(400)
    ref = SymbolPipeline(SYM, ("1m", "5m"), 30_000, True)
    want = [r for b in batches for r in ref.on_trades(b)]
    first = SymbolPipeline(SYM, ("1m", "5m"), 30_000, True)
    got = [r for b in batches[:250] for r in first.on_trades(b)]
    snap = first.snapshot()
    kept = copy.deepcopy(snap)
    assert plain_violations(snap) == [] and snap["version"] == SymbolPipeline.VERSION
    restored = SymbolPipeline.from_snapshot(json.loads(json.dumps(snap)))
    first.on_trades(batches[250])
    assert snap == kept, "the snapshot shares no container with the running pipeline"
    assert restored.timeframes == ("1m", "5m") and restored.allowed_lateness_ms == 30_000
    got += [r for b in batches[250:] for r in restored.on_trades(b)]
    assert got == want
    assert any(r.__class__.__name__ == "DeadLetter" for r in want), "duplicates and late trades were exercised"


def test_deduper_snapshot_keeps_runs_not_ids_and_remembers_what_it_forgot() -> None:
    d = Deduper(capacity=1_000)
    d.update([Trade(SYM, i, i, 1.0, 1.0, False) for i in range(5_000)])
    d.update([Trade(SYM, i, 5_000 + i, 1.0, 1.0, False) for i in (9_000, 7_000)])
    snap = d.snapshot()
    assert plain_violations(snap) == [] and len(json.dumps(snap)) < 200
    back = Deduper(state=json.loads(json.dumps(snap)))
    assert list(back.ids) == list(d.ids) and back.ids.top == d.ids.top == 9_001 and back.ids.bits == d.ids.bits
    probe = [Trade(SYM, i, 9_999, 1.0, 1.0, False) for i in (4_999, 3_000, 8_000, 9_000)]
    assert back.update(probe) == d.update(probe)


def test_an_old_or_foreign_snapshot_is_refused_by_name() -> None:
    with pytest.raises(SnapshotError, match="got a flows.operators.pipeline.SymbolPipeline"):
        SymbolPipeline.from_snapshot(SymbolPipeline(SYM, ("1m",)))  # what a recovery directory of old held
    with pytest.raises(SnapshotError, match="version 1; got kind 'symbol_pipeline', version None"):
        SymbolPipeline.from_snapshot({**SymbolPipeline(SYM, ("1m",)).snapshot(), "version": None})
