"""End to end: backfill real 1h bars, train lightgbm / lstm / gnn and the ensemble by CLI, verify, score."""

from __future__ import annotations

import pandas as pd
import pytest

from flows import feast_store
from flows.settings import load_settings
from inference.manifest import read_manifest
from tests.kit.repo import copy_feature_repo
from training.backfill import bars_from_frame, run_backfill

ASSETS = ("BTC", "ETH", "SOL")
SYMBOLS = [f"{a}/USDT" for a in ASSETS]


@pytest.fixture(scope="module")
def env(shared_data, tmp_path_factory, monkeypatch_module):
    tmp = tmp_path_factory.mktemp("e2e")
    repo = copy_feature_repo(tmp)
    envvars = {"CRYPTOSTREAM_DATA_DIR": str(tmp / "var"), "CRYPTOSTREAM_FEAST_REPO": str(repo)}
    for k, v in envvars.items():
        monkeypatch_module.setenv(k, v)
    settings = load_settings(env=envvars)
    frames = {}
    for a in ASSETS:
        df = pd.read_parquet(shared_data / "binance-spot-1h" / f"{a}_USDT-1h.parquet").iloc[:400].copy()
        df["ts"] = (df.ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
        frames[f"{a}/USDT"] = df.reset_index(drop=True)
    run_backfill(settings, {s: bars_from_frame(s, "1h", df) for s, df in frames.items()}, "1h")
    feast_store.apply(settings)
    t0 = pd.Timestamp(frames["BTC/USDT"].ts.iloc[0], unit="ms", tz="UTC")
    window = ["--symbols", *SYMBOLS, "--timeframe", "1h", "--start", str(t0), "--end", str(t0 + pd.Timedelta(hours=399))]
    return settings, tmp / "registry", window


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_train_export_and_score(env, capsys) -> None:
    from inference.runners import EnsembleScorer
    from inference.scorer import Scorer
    from training.datasets import build_training_set
    from training.export.__main__ import main as export_main
    from training.train import main

    settings, reg, window = env
    common = [*window, "--registry", str(reg), "--folds", "2", "--seed", "7"]
    assert main(["lightgbm", *common]) == 0
    tiny = ["--epochs", "2", "--hidden", "4"]
    assert main(["lstm", *common, *tiny, "--bptt", "4", "--burn-in", "4", "--segment", "32"]) == 0
    assert main(["gnn", *common, *tiny, "--graph-window", "10"]) == 0
    assert main(["ensemble", "--registry", str(reg), "--method", "fixed"]) == 0
    for fam in ("lightgbm", "lstm", "gnn", "ensemble"):
        assert export_main([fam, "--registry", str(reg)]) == 0
    m = read_manifest(reg / "lightgbm" / (reg / "lightgbm" / "latest").read_text().strip())
    assert m.feature_service == "lightgbm_1h_v1" and len(m.metrics["folds"]) == 2
    assert m.parity.max_abs_diff <= 1e-5 and set(m.files) >= {"model.onnx", "model.txt", "oos.csv"}
    runs = sorted((settings.data_dir / "logs" / "lstm").iterdir())  # one TensorBoard directory per training run
    assert len(runs) == 1 and (runs[0] / "final").is_dir() and (settings.data_dir / "logs" / "gnn").is_dir()

    services = {}
    for svc in ("lightgbm_1h_v1", "lstm_1h_v1"):
        services[svc] = [c for c in build_training_set(settings, tuple(SYMBOLS), "1h", window[7], window[9], svc)
                         .columns if c not in ("symbol", "event_timestamp", "label", "fwd_ret")]
    frame = build_training_set(settings, tuple(SYMBOLS), "1h", window[7], window[9], "lightgbm_1h_v1")
    bar = frame[frame.event_timestamp == frame.event_timestamp.max()]
    rows = {s: r for s, r in zip(bar.symbol, bar[services["lightgbm_1h_v1"]].to_numpy(), strict=True)}
    out = Scorer.from_registry(reg, ["lightgbm"], services).score(rows)
    assert out["lightgbm"].probability.shape == (len(rows),)
    ens = EnsembleScorer.from_registry(reg, services, feed=services["lightgbm_1h_v1"])
    out = ens.score(rows)
    assert set(out) == {"lightgbm", "lstm", "gnn", "ensemble"}
    assert out["ensemble"].signal.shape == (len(rows),)
    capsys.readouterr()
