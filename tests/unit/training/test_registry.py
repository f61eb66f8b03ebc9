"""Registry: layout, manifest round trip, monotonic versions, atomic latest, file verification."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper

from inference.manifest import ManifestError, feature_hash
from training.registry import (
    Parity,
    frame_hash,
    io_from_onnx,
    list_versions,
    load_manifest,
    save_model,
    service_version,
    verify,
    version_dir,
)

FEATURES = ("ret_1", "vol_20", "rsi_14")


def _identity_onnx(n_features: int = 3) -> bytes:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", n_features])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", n_features])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["probabilities"])], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _save(root, now=None, config=None, **kw):
    args = dict(files={"model.onnx": _identity_onnx(), "model.txt": b"native"},
                feature_service="lightgbm_1h_v1", features=FEATURES,
                train_start=pd.Timestamp("2021-01-01", tz="UTC"), train_end=datetime(2022, 1, 1, tzinfo=UTC),
                data_hash="abc", seeds={"seed": 7}, config=config or {"lr": 0.05, "leaves": 31},
                metrics={"folds": [{"auc": 0.51}, {"auc": 0.53}], "mean": {"auc": 0.52}},
                parity=Parity(max_abs_diff=1e-7, tolerance=1e-5, rows=100), extra={"note": "x"})
    args.update(kw)
    if now is not None:
        args["now"] = now
    return save_model(root, "lightgbm", **args)


def test_layout_round_trip_and_latest(tmp_path) -> None:
    m = _save(tmp_path)
    d = tmp_path / "lightgbm" / m.version
    assert sorted(p.name for p in d.iterdir()) == ["manifest.json", "model.onnx", "model.txt"]
    assert (tmp_path / "lightgbm" / "latest").read_text().strip() == m.version
    loaded = load_manifest(tmp_path, "lightgbm")
    assert loaded == m
    assert m.features == FEATURES and m.feature_hash == feature_hash(FEATURES)
    assert m.feature_service_version == "v1"
    assert m.inputs[0].name == "input" and m.inputs[0].shape == ("N", 3) and m.inputs[0].dtype == "float32"
    assert m.outputs[0].name == "probabilities"
    assert m.train_start == "2021-01-01T00:00:00+00:00"
    assert m.created_at.endswith("+00:00")
    assert m.version.endswith(m.config_hash[:8])
    assert not [p for p in (tmp_path / "lightgbm").iterdir() if p.name.startswith(".")]


def test_versions_strictly_increase_even_if_the_clock_steps_back(tmp_path) -> None:
    t = datetime(2024, 5, 1, 12, tzinfo=UTC)
    v1 = _save(tmp_path, now=lambda: t).version
    v2 = _save(tmp_path, now=lambda: t).version
    v3 = _save(tmp_path, now=lambda: datetime(2020, 1, 1, tzinfo=UTC)).version
    assert v1 < v2 < v3
    assert list_versions(tmp_path, "lightgbm") == [v1, v2, v3]
    assert load_manifest(tmp_path, "lightgbm").version == v3
    assert load_manifest(tmp_path, "lightgbm", v1).version == v1


def test_config_hash_tracks_config(tmp_path) -> None:
    a = _save(tmp_path, config={"lr": 0.05, "leaves": 31})
    b = _save(tmp_path, config={"leaves": 31, "lr": 0.05})
    c = _save(tmp_path, config={"lr": 0.1, "leaves": 31})
    assert a.config_hash == b.config_hash != c.config_hash


def test_verify_detects_tampering_and_strays(tmp_path) -> None:
    m = _save(tmp_path)
    d = version_dir(tmp_path, "lightgbm")
    assert verify(d) == m
    (d / "model.txt").write_bytes(b"tampered")
    with pytest.raises(ManifestError, match="model.txt"):
        load_manifest(tmp_path, "lightgbm")
    (d / "model.txt").write_bytes(b"native")
    (d / "stray.bin").write_bytes(b"?")
    with pytest.raises(ManifestError, match="stray.bin"):
        verify(d)


def test_bad_inputs_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="onnx"):
        _save(tmp_path, files={"model.txt": b"x"})
    with pytest.raises(ValueError, match="bad file name"):
        _save(tmp_path, files={"../model.onnx": _identity_onnx()})
    with pytest.raises(ValueError, match="timezone-aware"):
        _save(tmp_path, train_start="2021-01-01")
    with pytest.raises(ManifestError, match="no registered model"):
        load_manifest(tmp_path, "gnn")
    with pytest.raises(ValueError):
        service_version("lightgbm_1h")


def test_frame_hash_is_order_invariant_and_value_sensitive() -> None:
    rng = np.random.default_rng(0)
    ts = pd.date_range("2024-01-01", periods=4, freq="h", tz="UTC")
    df = pd.DataFrame({"symbol": ["A", "B"] * 2, "event_timestamp": ts.repeat(1)[[0, 0, 1, 1]],
                       "fwd_ret": rng.normal(size=4), "label": [1, 0, 1, 1],
                       **{f: rng.normal(size=4) for f in FEATURES}})
    h = frame_hash(df, FEATURES)
    assert frame_hash(df.iloc[::-1], FEATURES) == h
    df2 = df.copy()
    df2.loc[0, "vol_20"] += 1e-12
    assert frame_hash(df2, FEATURES) != h
    assert frame_hash(df, FEATURES[::-1]) != h


def test_io_from_onnx_reads_dynamic_axes() -> None:
    ins, outs = io_from_onnx(_identity_onnx(5))
    assert ins[0].shape == ("N", 5) and outs[0].shape == ("N", 5)
    onnx.checker.check_model(onnx.load_model_from_string(_identity_onnx()))
