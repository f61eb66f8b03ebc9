"""The live dataflow in Bytewax: same rows as the operators alone, any worker count, recovery."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource, cluster_main, run_main

from flows.live import build_flow
from flows.operators.cross_asset import CrossAssetStep
from flows.operators.features import WARMUP
from flows.operators.parse import parse_messages
from flows.operators.pipeline import SymbolPipeline
from flows.records import Bar, BarReturn, FeatureRow
from flows.settings import load_settings
from tests.kit.live_flow import SYMBOLS, applied_settings, apply_once, market, settings_for
from tests.kit.repo import copy_feature_repo


def read_table(var: Path, name: str) -> list[dict]:
    rows = []
    for f in sorted((var / "offline" / name).glob("*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return sorted(rows, key=lambda r: (r["symbol"], r["ts"]))






@pytest.fixture(scope="module")
def feast_applied(tmp_path_factory) -> Path:
    """The data directory of the module's one ``feast apply``, whose Feast state every run starts with."""
    return apply_once(tmp_path_factory.mktemp("feast"))


def reference(batches) -> dict[str, list]:
    """Run the operators directly, without Bytewax."""
    pipes = {s: SymbolPipeline(s, ("1m",)) for s in SYMBOLS}
    cross = CrossAssetStep(SYMBOLS, tf_ms=60_000)
    bars, feats, xs = [], [], []
    symbols = {s.replace("/", ""): s for s in SYMBOLS}
    for sym, recv, msgs in batches:
        trades, _ = parse_messages(msgs, symbols, recv)
        for r in pipes[sym].on_trades(trades):
            if isinstance(r, Bar):
                bars.append(r)
            elif isinstance(r, FeatureRow):
                feats.append(r)
            elif isinstance(r, BarReturn):
                xs += cross.update(r.symbol, r.ts, r.ret_1)
    return {"bars": bars, "features": feats, "cross": xs}


def test_flow_rows_equal_operators_alone(tmp_path, feast_applied) -> None:
    batches = market()
    run_main(build_flow(applied_settings(tmp_path, feast_applied), TestingSource(batches)))
    ref = reference(batches)
    bars = read_table(tmp_path, "bars_1m")
    assert len(bars) == len(ref["bars"]) > 200
    want = sorted(ref["bars"], key=lambda b: (b.symbol, b.ts))
    assert [(b["symbol"], b["close"], b["volume"], b["trade_count"]) for b in bars] == [
        (b.symbol, b.close, b.volume, b.trade_count) for b in want]
    feats = read_table(tmp_path, "bar_features_1m")
    assert len(feats) == len(ref["features"]) > 0
    cross = read_table(tmp_path, "cross_asset_features_1m")
    assert len(cross) == len(ref["cross"]) > 0
    dead = (tmp_path / "dead_letters" / "w0.jsonl").read_text().splitlines()
    reasons = sorted({orjson.loads(d)["reason"].split(":")[0] for d in dead})
    assert reasons == ["duplicate trade id", "malformed json"]


def _tables(var: Path) -> dict[str, list[dict]]:
    return {t: read_table(var, t) for t in ("bars_1m", "bar_features_1m", "cross_asset_features_1m")}


def test_two_workers_give_identical_tables(tmp_path, feast_applied) -> None:
    batches = market(minutes=WARMUP + 30, seed=9)
    one, two = tmp_path / "one", tmp_path / "two"
    run_main(build_flow(applied_settings(one, feast_applied), TestingSource(batches)))
    cluster_main(build_flow(applied_settings(two, feast_applied), TestingSource(batches)), [], 0, worker_count_per_proc=2)
    assert _tables(one) == _tables(two)


def test_abort_and_resume_from_snapshot_gives_same_tables(tmp_path, feast_applied) -> None:
    batches = market(minutes=WARMUP + 30, seed=11)
    clean, crashed, db = tmp_path / "clean", tmp_path / "crashed", tmp_path / "recovery"
    run_main(build_flow(applied_settings(clean, feast_applied), TestingSource(batches)))
    db.mkdir()
    init_db_dir(db, 1)
    cut = len(batches) // 2
    with_abort = batches[:cut] + [TestingSource.ABORT()] + batches[cut:]
    flow = build_flow(applied_settings(crashed, feast_applied), TestingSource(with_abort))
    rc = RecoveryConfig(str(db))
    run_main(flow, epoch_interval=None, recovery_config=rc)  # stops at ABORT
    run_main(build_flow(settings_for(crashed), TestingSource(with_abort)), recovery_config=rc)
    assert _tables(clean) == _tables(crashed)


def test_a_first_run_without_feast_apply_registers_the_views_itself(tmp_path, feast_applied, capsys) -> None:
    """Issue 17, defect 6: the online sink used to die after warm-up on an unregistered view."""
    from flows import feast_store

    repo = copy_feature_repo(tmp_path / "fresh")
    settings = load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp_path / "var"),
                                  "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS), "CRYPTOSTREAM_FEAST_REPO": str(repo)})
    run_main(build_flow(settings, TestingSource(market())))
    assert "are not registered" in capsys.readouterr().err
    store = feast_store.open_store(settings)
    rows = store.get_online_features(features=["bar_features_1m:rsi_14"],
                                     entity_rows=[{"symbol": s} for s in SYMBOLS]).to_dict()
    assert all(v is not None for v in rows["rsi_14"])
    assert feast_store.ensure_applied(settings) is False  # registered now: nothing to do


def test_the_default_command_starts_without_a_key_and_says_how_gaps_are_filled(tmp_path, feast_applied,
                                                                               capsys) -> None:
    # Issue 17, defect 8: with default settings (fill_gaps on, no exchange.api_key) build_flow used to
    # stop with "exchange.fill_gaps needs exchange.api_key".
    settings = applied_settings(tmp_path, feast_applied)
    assert settings.exchange.fill_gaps and settings.exchange.api_key is None
    flow = build_flow(settings)
    assert "public aggregated trades" in capsys.readouterr().err
    assert "id_gaps" in str(flow)  # holes in the trade ids are refetched too (tests/e2e/test_gap_fill.py)
