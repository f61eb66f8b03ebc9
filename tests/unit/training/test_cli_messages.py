"""Bad input to the command lines gives a message naming the problem, never a traceback (issue 17, item 9)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.settings import SettingsError, load_settings
from inference.manifest import MANIFEST_FILE, ManifestError, TensorSpec, read_manifest
from training import backfill, backtest
from training.export.__main__ import main as export_main
from training.registry import Parity, save_model


def _candles(path: Path, n: int = 120) -> Path:
    ts = pd.date_range("2021-01-01", periods=n, freq="1h", tz="UTC")
    c = 100 + np.cumsum(np.random.default_rng(3).normal(0, 1, n))
    pd.DataFrame({"ts": ts, "open": c, "high": c + 1, "low": c - 1, "close": c, "volume": 1.0}).to_parquet(path)
    return path


def _register(root: Path, family: str, service: str, extra: dict | None = None) -> Path:
    spec = (TensorSpec("x", (None, 2)),)
    save_model(root, family, files={"model.onnx": b"not really onnx " + family.encode()}, feature_service=service,
               features=["a", "b"], train_start="2020-01-01T00:00:00Z", train_end="2020-06-01T00:00:00Z",
               data_hash="0" * 64, seeds={"seed": 0}, config={}, metrics={"folds": [], "mean": {}},
               parity=Parity(0.0, 1e-5, 10), inputs=spec, outputs=spec, extra=extra or {},
               now=lambda: datetime(2024, 1, 1, tzinfo=UTC))
    return root / family / (root / family / "latest").read_text().strip()


@pytest.fixture
def tampered(tmp_path) -> Path:
    """A registry whose ensemble's manifest was edited by hand: ``files`` is no longer a mapping."""
    root = tmp_path / "registry"
    _register(root, "lightgbm", "lightgbm_1h_v1")
    d = _register(root, "ensemble", "ensemble_1h_v1", {"members": {"lightgbm": "latest"}})
    doc = json.loads((d / MANIFEST_FILE).read_text())
    doc["files"] = "model.onnx"
    (d / MANIFEST_FILE).write_text(json.dumps(doc))
    return root


def _only_message(capsys, *names: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: "), err
    for name in names:
        assert name in err, err
    return err


def test_yaml_symbols_not_a_list_is_a_message(tmp_path) -> None:
    (tmp_path / "c.yaml").write_text("symbols: 5\nbars: {timeframes: 5}\n")
    with pytest.raises(SettingsError) as err:
        load_settings(tmp_path / "c.yaml", env={})
    assert "symbols (env CRYPTOSTREAM_SYMBOLS) = 5: 5 is not a list" in str(err.value)
    assert "bars.timeframes" in str(err.value)


def test_backfill_of_a_missing_file_names_it(tmp_path, capsys) -> None:
    missing = tmp_path / "BTC_USDT-1h.parquet"
    assert backfill.main(["files", str(missing)]) == 2
    _only_message(capsys, str(missing), "no such file")


@pytest.mark.parametrize("job", ["backfill", "backtest"])
def test_a_truncated_parquet_file_is_named(tmp_path, capsys, job: str) -> None:
    path = _candles(tmp_path / "BTC_USDT-1h.parquet")
    path.write_bytes(path.read_bytes()[:300])
    argv = ["files", str(path)] if job == "backfill" else [str(path), "--out", str(tmp_path / "out")]
    assert (backfill.main(argv) if job == "backfill" else backtest.main(argv)) == 2
    _only_message(capsys, str(path), "cannot read it as a parquet candle file")


def test_a_tampered_manifest_is_a_manifest_error_naming_the_file(tampered) -> None:
    d = tampered / "ensemble" / (tampered / "ensemble" / "latest").read_text().strip()
    with pytest.raises(ManifestError) as err:
        read_manifest(d)
    assert str(d / MANIFEST_FILE) in str(err.value) and "files is not a mapping" in str(err.value)


def test_training_export_of_a_tampered_manifest_is_a_message(tampered, capsys) -> None:
    assert export_main(["ensemble", "--registry", str(tampered)]) == 1
    _only_message(capsys, "manifest.json", "malformed manifest")


def test_training_backtest_with_a_tampered_model_file_is_a_message(tmp_path, capsys) -> None:
    path = _candles(tmp_path / "BTC_USDT-1h.parquet")
    root = tmp_path / "registry"
    d = _register(root, "ensemble", "ensemble_1h_v1")
    (d / "model.onnx").write_bytes(b"tampered")  # the manifest reads, the file no longer matches its sha256
    assert backtest.main([str(path), "--registry", str(root), "--out", str(tmp_path / "out")]) == 2
    _only_message(capsys, str(d), "model.onnx sha256")


def test_the_live_flow_with_a_tampered_manifest_stops_at_start(tmp_path, tampered, capsys) -> None:
    from flows.decisions_flow import verify_deployment

    settings = load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp_path), "CRYPTOSTREAM_SCORING__REGISTRY":
                                  str(tampered), "CRYPTOSTREAM_BARS__TIMEFRAMES": "1h"})
    with pytest.raises(SettingsError, match=r"scoring.registry .*manifest.json: malformed manifest"):
        verify_deployment(settings)
