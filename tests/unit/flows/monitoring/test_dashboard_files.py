"""The dashboard's models page: which version each timeframe runs, and the registry's events (issue 20)."""

from __future__ import annotations

from flows.monitoring.dashboard.files import registry_events, registry_versions
from inference.manifest import TensorSpec
from inference.promotions import RegistryEvent, append_event, rollback
from training.registry import Parity, save_model

SPEC = (TensorSpec("x", (None, 2)),)


def register(root, tf: str) -> str:
    return save_model(root, "ensemble", files={"ensemble.onnx": tf.encode()}, feature_service=f"ensemble_{tf}_v1",
                      features=["lightgbm"], train_start="2023-01-01T00:00:00Z", train_end="2023-02-01T00:00:00Z",
                      data_hash="0", seeds={}, config={"tf": tf}, metrics={"folds": [], "mean": {}},
                      parity=Parity(0.0, 1e-6, 1), inputs=SPEC, outputs=SPEC, promoted_by="test").version


def test_each_timeframes_current_version_is_marked_and_the_events_are_listed_newest_first(tmp_path) -> None:
    h1, m1 = register(tmp_path, "1h"), register(tmp_path, "1m")
    h2 = register(tmp_path, "1h")
    rollback(tmp_path, "1h", by="operator", reason="bad fills")
    append_event(tmp_path, RegistryEvent("retrain:gate", "1h", "2030-01-01T00:00:00+00:00", "python -m training."
                                         "retrain weekly", {"ensemble": "x"}, ok=False,
                                         detail={"reason": "sharpe = 0.2 (needs > 1.5): FAIL", "run": "weekly-1"}))
    table = registry_versions(tmp_path).set_index("version")
    assert table.loc[h1, "latest"] and table.loc[m1, "latest"] and not table.loc[h2, "latest"]
    events = registry_events(tmp_path)
    assert list(events["event"][:2]) == ["retrain:gate", "rollback"]
    assert events.iloc[0]["result"] == "FAILED" and "needs > 1.5" in events.iloc[0]["why"]
    assert events.iloc[1]["versions"] == f"ensemble={h1}" and events.iloc[1]["why"] == "bad fills"
