"""A registry that cannot mix timeframes: per-timeframe pointers, logged promotions, rollbacks (issue 20, item 1)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from inference.manifest import (
    LATEST_FILE,
    ManifestError,
    TensorSpec,
    TimeframeMismatch,
    resolve_version_dir,
)
from inference.promotions import current, promote, read_events, rollback
from training.registry import Parity, save_model

SPEC = (TensorSpec("x", (None, 2)),)


def register(root: Path, family: str, tf: str, *, latest: bool = True, service: str | None = None) -> str:
    m = save_model(root, family, files={"model.onnx": f"{family} {tf}".encode()},
                   feature_service=service or f"{family}_{tf}_v1", features=["a", "b"],
                   train_start="2020-01-01T00:00:00Z", train_end="2020-06-01T00:00:00Z", data_hash="0" * 64,
                   seeds={"seed": 0}, config={"tf": tf}, metrics={"folds": [], "mean": {}},
                   parity=Parity(0.0, 1e-5, 10), inputs=SPEC, outputs=SPEC, set_latest=latest,
                   symbols=["BTC/USDT", "ETH/USDT"], promoted_by="test")
    return m.version


def test_a_1h_run_never_gets_the_1m_version_even_when_it_was_registered_last(tmp_path) -> None:
    v1h = register(tmp_path, "lightgbm", "1h")
    v1m = register(tmp_path, "lightgbm", "1m")
    assert resolve_version_dir(tmp_path, "lightgbm", timeframe="1h").name == v1h
    assert resolve_version_dir(tmp_path, "lightgbm", timeframe="1m").name == v1m
    with pytest.raises(TimeframeMismatch, match="has versions for 1h, 1m: say which timeframe"):
        resolve_version_dir(tmp_path, "lightgbm")  # no timeframe: refused rather than guessed
    with pytest.raises(TimeframeMismatch, match=rf"lightgbm/{v1m} was trained on 1m bars, not 1h.*training.train "
                                                r"lightgbm --timeframe 1h"):
        resolve_version_dir(tmp_path, "lightgbm", v1m, timeframe="1h")


def test_a_missing_timeframe_says_which_exist_and_what_to_train(tmp_path) -> None:
    register(tmp_path, "rl_tactical", "1m", service="lightgbm_1m_v1")
    with pytest.raises(TimeframeMismatch, match=r"no 1h version of 'rl_tactical'.*its timeframes: 1m.*"
                                                r"python -m training.rl train tactical --timeframe 1h"):
        resolve_version_dir(tmp_path, "rl_tactical", timeframe="1h")


def test_the_layout_before_timeframes_is_read_as_it_is_and_kept_when_another_timeframe_arrives(tmp_path) -> None:
    old = register(tmp_path, "lightgbm", "1m", latest=False)
    (tmp_path / "lightgbm" / LATEST_FILE).write_text(old + "\n")  # a registry written before this change
    assert resolve_version_dir(tmp_path, "lightgbm", timeframe="1m").name == old
    assert resolve_version_dir(tmp_path, "lightgbm").name == old
    new = register(tmp_path, "lightgbm", "1h")  # overwrites the one-line latest ...
    assert (tmp_path / "lightgbm" / LATEST_FILE).read_text().strip() == new
    assert resolve_version_dir(tmp_path, "lightgbm", timeframe="1m").name == old  # ... the 1m one keeps its pointer


def test_manifest_carries_the_symbol_universe_and_the_timeframe(tmp_path) -> None:
    v = register(tmp_path, "gnn", "4h")
    doc = json.loads((tmp_path / "gnn" / v / "manifest.json").read_text())
    assert doc["symbols"] == ["BTC/USDT", "ETH/USDT"] and doc["feature_service"] == "gnn_4h_v1"


def test_rollback_restores_the_previous_versions_of_every_family_promoted_together(tmp_path) -> None:
    first = {f: register(tmp_path, f, "1h") for f in ("lightgbm", "ensemble")}
    second = {f: register(tmp_path, f, "1h", latest=False) for f in ("lightgbm", "ensemble")}
    other = register(tmp_path, "lightgbm", "1m")
    promote(tmp_path, "1h", second, by="retrain weekly", reason="beats the champion")
    assert {f: current(tmp_path, f, "1h") for f in first} == second
    ev = rollback(tmp_path, "1h", by="operator", reason="bad fills")
    assert {f: current(tmp_path, f, "1h") for f in first} == first
    assert ev.versions == first and ev.previous == second
    assert current(tmp_path, "lightgbm", "1m") == other  # another timeframe is untouched
    # the next rollback undoes the registrations, one at a time, newest first
    rollback(tmp_path, "1h", by="operator")
    assert current(tmp_path, "ensemble", "1h") is None and current(tmp_path, "lightgbm", "1h") == first["lightgbm"]
    kinds = [(e.kind, e.by) for e in read_events(tmp_path, "1h")]
    assert kinds == [("promote", "test"), ("promote", "test"), ("promote", "retrain weekly"),
                     ("rollback", "operator"), ("rollback", "operator")]


def test_a_promotion_of_another_timeframes_version_is_refused_before_any_pointer_moves(tmp_path) -> None:
    ens = register(tmp_path, "ensemble", "1h")
    lgb = register(tmp_path, "lightgbm", "1h")
    wrong = register(tmp_path, "lightgbm", "1m")
    new_ens = register(tmp_path, "ensemble", "1h", latest=False)
    with pytest.raises(TimeframeMismatch, match="trained on 1m bars, not 1h"):
        promote(tmp_path, "1h", {"ensemble": new_ens, "lightgbm": wrong}, by="test")
    assert current(tmp_path, "ensemble", "1h") == ens and current(tmp_path, "lightgbm", "1h") == lgb


def test_rollback_without_a_promotion_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ManifestError, match="no promotion of 1h models"):
        rollback(tmp_path, "1h", by="x")


def test_a_cut_last_line_of_the_log_is_skipped(tmp_path) -> None:
    register(tmp_path, "lightgbm", "1h")
    with (tmp_path / "events.jsonl").open("a") as f:
        f.write('{"kind": "promo')
    assert [e.kind for e in read_events(tmp_path)] == ["promote"]
    assert datetime.fromisoformat(read_events(tmp_path)[0].at).tzinfo == UTC
