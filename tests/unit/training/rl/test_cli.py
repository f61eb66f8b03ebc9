"""CLI end to end, small: train + export the tactical policy (quick) from candle files and from a backfill's store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.settings import load_settings
from inference.manifest import read_manifest, resolve_version_dir
from inference.policy import PolicyRunner
from inference.rl_observation import tactical_observation
from tests.kit.ensembles import member_oos, register_ensemble, register_member
from training.backfill import bars_from_frame, run_backfill
from training.rl.__main__ import main
from training.rl.data import load_market_data

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
WINDOW = ["--start", "2024-03-01", "--end", "2024-05-01"]  # 1464 bars before warm-up


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CRYPTOSTREAM_DATA_DIR", str(tmp_path / "var"))
    return tmp_path / "var"


@pytest.mark.data
def test_quick_train_and_export_from_candle_files(shared_data: Path, data_dir: Path, capsys) -> None:
    args = ["--data-dir", str(shared_data), "--symbols", *SYMBOLS, *WINDOW, "--quick", "--timesteps", "600",
            "--no-progress", "--seed", "3"]
    assert main(["train", "tactical", *args]) == 0
    work = data_dir / "work" / "rl" / "tactical"
    run = json.loads((work / "run.json").read_text())
    assert run["timeframe"] == "1h" and run["symbols"] == SYMBOLS
    assert run["train_end"] < run["valid_start"] < run["test_start"]  # out of sample by time
    assert main(["export", "tactical"]) == 0
    assert "parity max |diff|" in capsys.readouterr().out
    root = data_dir / "registry"
    m = read_manifest(resolve_version_dir(root, "rl_tactical"))
    assert m.features == tuple(run["features"]) and m.feature_service == "lightgbm_1h_v1"
    assert m.parity.max_abs_diff <= 1e-5 and m.parity.rows == len(np.load(work / "heldout.npy"))
    assert {"policy.onnx", "agent.zip"} <= set(m.files)
    # the live scoring step's call: features by name + position state -> one target per symbol
    runner = PolicyRunner.from_registry(root, "rl_tactical")
    md = load_market_data(shared_data / "binance-spot-1h", SYMBOLS, "1h", "2024-04-05", "2024-05-03",
                          features=list(runner.features))
    obs = np.stack([tactical_observation(md.features[-1, a], 0.0, 0.0, 0.0, 0, 0.0) for a in range(2)])
    act = runner.act(obs)[:, 0]
    assert act.shape == (2,) and np.all(np.abs(act) <= 1.0)


@pytest.mark.data
def test_quick_train_from_the_offline_store(shared_data: Path, data_dir: Path) -> None:
    """Without --data-dir (the bootstrap's call) the bars a backfill stored are read back."""
    settings = load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(data_dir)})
    frames = {}
    for s in SYMBOLS:
        df = pd.read_parquet(shared_data / "binance-spot-1h" / f"{s.replace('/', '_')}-1h.parquet")
        df = df[(df.ts >= "2024-03-01") & (df.ts < "2024-04-15")].copy()
        df["ts"] = (df.ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
        frames[s] = df.reset_index(drop=True)
    run_backfill(settings, {s: bars_from_frame(s, "1h", df) for s, df in frames.items()}, "1h")
    args = ["--symbols", *SYMBOLS, "--timeframe", "1h", "--quick", "--timesteps", "400", "--no-progress"]
    assert main(["train", "tactical", *args]) == 0
    assert main(["export", "tactical"]) == 0
    run = json.loads((data_dir / "work" / "rl" / "tactical" / "run.json").read_text())
    files_md = load_market_data(shared_data / "binance-spot-1h", SYMBOLS, "1h", "2024-03-01", "2024-04-15",
                                features=run["features"])
    from training.rl.__main__ import load_run_data

    class A:
        data_dir, symbols, timeframe, start, end, level, quick, regime_dir = (None, SYMBOLS, "1h", None, None,
                                                                              "tactical", False, None)
        ensemble_prob, regime_model = False, None

    stored = load_run_data(A(), settings)
    np.testing.assert_array_equal(stored.times, files_md.times)  # same bars, same features as from the files
    np.testing.assert_allclose(stored.features, files_md.features, rtol=1e-6, atol=1e-6)


@pytest.mark.data
def test_ensemble_prob_trains_on_the_out_of_sample_rows_and_the_manifest_says_so(shared_data: Path, data_dir: Path,
                                                                                 capsys) -> None:
    """``--ensemble-prob``: the observation gains the ensemble's column, the run and the manifest record it."""
    root = data_dir / "registry"
    times = pd.date_range("2024-02-20", "2024-05-01", freq="h", tz="UTC", inclusive="left")
    register_member(root, "lightgbm", member_oos(times, SYMBOLS, 4, 1, 0.2), [0.55, 0.54, 0.56, 0.53])
    register_ensemble(root, ["lightgbm"])
    args = ["--data-dir", str(shared_data), "--symbols", *SYMBOLS, *WINDOW, "--quick", "--timesteps", "300",
            "--no-progress", "--seed", "3"]
    assert main(["train", "tactical", *args, "--ensemble-prob"]) == 0
    run = json.loads((data_dir / "work" / "rl" / "tactical" / "run.json").read_text())
    ensemble = (root / "ensemble" / "latest").read_text().strip()
    assert run["ensemble_prob"]["ensemble"] == ensemble and run["ensemble_prob"]["calibrated"]
    first_fold_end = times[-(-len(times) // 4)]  # fold 0 has no earlier fold: its bars are left out
    assert pd.Timestamp(run["train_start"]) >= first_fold_end
    assert main(["export", "tactical"]) == 0
    runner = PolicyRunner.from_registry(root, "rl_tactical")
    assert runner.manifest.extra["ensemble_prob"]["ensemble"] == ensemble
    assert runner.observation_size == len(runner.features) + 1 + 5
    capsys.readouterr()
    assert main(["export", "tactical", "--ensemble-prob"]) == 2
    assert "--ensemble-prob is an option of 'train tactical'" in capsys.readouterr().err


def test_bad_input_exits_with_a_message(data_dir: Path, capsys) -> None:
    assert main(["train", "tactical", "--data-dir", str(data_dir / "nowhere")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["export", "execution"]) == 2
    assert "no saved agent" in capsys.readouterr().err
    res = subprocess.run([sys.executable, "-m", "training.rl", "train", "portfolio"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[4], timeout=120)
    assert res.returncode == 2 and "invalid choice: 'portfolio'" in res.stderr
