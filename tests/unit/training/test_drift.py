"""Drift checks: PSI per feature and symbol against the training window, calibration of P(up), the job."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flows.settings import load_settings
from inference.manifest import verify
from tests.kit.drift import LIVE_START, fill, register
from tests.kit.http_receiver import receiver
from tests.kit.repo import PROJECT_ROOT
from training.drift_measures import calibration, psi, quantile_edges, shares


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(20_000)
    edges = quantile_edges(ref, 10)
    assert len(edges) == 9 and np.allclose(shares(ref, edges), 0.1, atol=0.002)
    same = psi(shares(ref, edges), shares(rng.standard_normal(5_000), edges))
    half = psi(shares(ref, edges), shares(rng.standard_normal(5_000) + 0.5, edges))
    two = psi(shares(ref, edges), shares(rng.standard_normal(5_000) + 2.0, edges))
    assert same < 0.01 < 0.1 < half < 0.25 * 2 < two  # textbook bands: <0.1 stable, >0.25 shifted
    const = quantile_edges(np.full(100, 3.0), 10)  # a constant feature: one edge, no crash
    assert psi(shares(np.full(100, 3.0), const), shares(np.full(50, 3.0), const)) == pytest.approx(0.0)


def test_calibration_error_is_small_when_probabilities_come_true_and_large_when_not() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(0.05, 0.95, 20_000)
    honest = calibration(p, rng.uniform(size=p.size) < p, 10)
    assert honest.ece < 0.02 and honest.rows == p.size and sum(r["rows"] for r in honest.table) == p.size
    confident = calibration(np.full(5_000, 0.9), rng.uniform(size=5_000) < 0.5, 10)
    assert confident.ece == pytest.approx(0.4, abs=0.03) and confident.brier == pytest.approx(0.41, abs=0.03)
    assert len(confident.table) == 1 and confident.table[0]["lo"] == pytest.approx(0.9)


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRYPTOSTREAM_", "TIMESCALE_"))}
    return env | {"CRYPTOSTREAM_PROFILE": "local", "CRYPTOSTREAM_DATA_DIR": str(tmp / "data"),
                  "CRYPTOSTREAM_SYMBOLS": "BTC/USDT,ETH/USDT", **extra}


def _drift(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "training.drift", *args], capture_output=True, text=True, env=env,
                          cwd=PROJECT_ROOT, timeout=300, check=False)


def test_the_check_finds_the_shifted_feature_and_the_miscalibration_and_alerts(tmp_path: Path) -> None:
    marker = tmp_path / "retrain-ran"
    with receiver() as got:
        env = _env(tmp_path, CRYPTOSTREAM_ALERTS__WEBHOOK_URL=got.url,
                   CRYPTOSTREAM_DRIFT__RETRAIN_COMMAND=f"python -c \"open('{marker}', 'a').write('x')\"")
        settings = load_settings(env=env)
        version = register(settings)
        fill(settings, shift=2.0, prob=0.9)
        done = _drift(env, "check")
        assert done.returncode == 1 and "ALERT" in done.stdout, done.stdout + done.stderr
        report = json.loads((settings.data_dir / "drift" / "report.json").read_text())
        psis = {(r["symbol"], r["feature"]): r["psi"] for r in report["features"]}
        assert psis[("BTC/USDT", "ret_1")] > 1.0
        assert max(v for k, v in psis.items() if k != ("BTC/USDT", "ret_1")) < 0.1
        flagged = [a for a in report["alerts"] if a.startswith("feature drift")]
        assert flagged == [f"feature drift: BTC/USDT ret_1 PSI {psis[('BTC/USDT', 'ret_1')]:.3f} > 0.25"]
        cal = report["calibration"]
        assert cal["rows"] >= 1000 and cal["ece"] == pytest.approx(0.4, abs=0.06)
        assert any(a.startswith("calibration drift: ECE") for a in report["alerts"])
        assert report["version"] == version and report["data_end"].startswith("2024-01-05")
        assert "ALERT feature drift: BTC/USDT ret_1" in done.stdout

        # The reference is saved beside the version without touching the version's own files.
        side = settings.registry_root() / "lightgbm" / ".drift" / f"{version}.json"
        ref = json.loads(side.read_text())
        assert ref["train_start"].startswith("2024-01-01") and set(ref["symbols"]) == {"BTC/USDT", "ETH/USDT"}
        verify(settings.registry_root() / "lightgbm" / version)

        prom = (settings.data_dir / "drift" / "drift.prom").read_text()
        assert 'cryptostream_feature_psi{feature="ret_1",symbol="BTC/USDT"}' in prom
        assert "cryptostream_drift_alerts 2.0" in prom and "cryptostream_drift_retrains_total 1.0" in prom

        deadline = time.monotonic() + 30
        while not (got.requests and marker.exists()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert got.requests and got.requests[0][1]["event"] == "drift"
        assert "BTC/USDT ret_1" in got.requests[0][1]["text"]
        assert marker.read_text() == "x"  # the retrain command ran once

        done = _drift(env, "check")  # within the cooldown: alert again, no second retrain
        assert done.returncode == 1 and "retrain started" not in done.stdout
        time.sleep(1.0)
        assert marker.read_text() == "x"
        assert len((settings.data_dir / "drift" / "history.jsonl").read_text().splitlines()) == 2


def test_no_drift_when_live_features_match_training_and_probabilities_are_honest(tmp_path: Path) -> None:
    env = _env(tmp_path)
    settings = load_settings(env=env)
    register(settings)
    fill(settings, shift=0.0, prob=0.5)
    done = _drift(env, "check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no drift past the thresholds" in done.stdout


def test_a_missing_model_or_reference_window_is_named(tmp_path: Path) -> None:
    env = _env(tmp_path)
    done = _drift(env, "check")
    assert done.returncode == 2 and "no registered lightgbm model" in done.stderr
    settings = load_settings(env=env)
    register(settings)
    done = _drift(env, "reference")
    assert done.returncode == 2 and "training window" in done.stderr and "backfill" in done.stderr
    fill(settings)
    done = _drift(env, "reference")
    assert done.returncode == 0 and "2 symbols, 4 features" in done.stdout
    assert LIVE_START.year == 2024


def test_watch_serves_the_gauges_for_prometheus(tmp_path: Path) -> None:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _env(tmp_path, CRYPTOSTREAM_DRIFT__METRICS_PORT=str(port), CRYPTOSTREAM_DRIFT__EVERY_S="600")
    settings = load_settings(env=env)
    register(settings)
    fill(settings, shift=2.0, prob=0.9)
    proc = subprocess.Popen([sys.executable, "-m", "training.drift", "watch"], env=env, cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        body, deadline = "", time.monotonic() + 60
        while "cryptostream_feature_psi{" not in body and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    body = r.read().decode()
            except OSError:
                pass
            time.sleep(0.2)
        assert 'cryptostream_feature_psi_max{symbol="BTC/USDT"}' in body
        assert "cryptostream_drift_psi_threshold 0.25" in body and "cryptostream_drift_ece_threshold 0.1" in body
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_decision_table_read_from_a_time_on_equals_the_whole_table_cut_there(tmp_path: Path) -> None:
    import pandas as pd

    from flows.stores import open_stores

    settings = load_settings(env=_env(tmp_path))
    fill(settings, live_bars=1500)  # predictions over two UTC days
    reader = open_stores(settings).decision_reader()
    whole = reader.table("predictions")
    since = pd.Timestamp("2024-01-06 00:30", tz="UTC")
    part = reader.table("predictions", since)
    assert 0 < len(part) < len(whole)
    pd.testing.assert_frame_equal(part, whole[whole["ts"] >= since].reset_index(drop=True))
