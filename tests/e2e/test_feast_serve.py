"""`feast serve` serves the flow's features over HTTP, equal to the SDK's online read."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from bytewax.testing import TestingSource, run_main

from flows import feast_store
from flows.feature_catalog import BAR_FEATURES
from flows.live import build_flow
from flows.operators.features import WARMUP
from tests.kit.live_flow import (
    REPO,  # noqa: F401  (the module's repo registry)
    SYMBOLS,
    applied_settings,
    apply_once,
    market,
    settings_for,
)
from tests.kit.repo import copy_feature_repo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def feast_applied(tmp_path_factory) -> Path:
    """One ``feast apply`` whose Feast state the serve and ui tests start with (materialize applies its own)."""
    return apply_once(tmp_path_factory.mktemp("feast"))


def test_feast_serve_returns_online_features(tmp_path, feast_applied) -> None:
    settings = applied_settings(tmp_path / "var", feast_applied)
    run_main(build_flow(settings, TestingSource(market(minutes=WARMUP + 40, seed=4))))
    sdk = feast_store.open_store(settings).get_online_features(
        features=[f"bar_features_1m:{f}" for f in BAR_FEATURES], entity_rows=[{"symbol": s} for s in SYMBOLS]).to_dict()

    port = _free_port()
    env = {**os.environ, **feast_store.feast_environment(settings)}
    feast = str(Path(sys.executable).with_name("feast"))
    proc = subprocess.Popen([feast, "-c", str(settings.feast_repo), "-f", str(feast_store.profile_yaml(settings)),
                             "serve", "-h", "127.0.0.1", "-p", str(port), "--no-access-log"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        body = {"feature_service": "lstm_1m_v1", "entities": {"symbol": list(SYMBOLS)}}
        deadline = time.monotonic() + 120
        while True:
            try:
                reply = requests.post(f"http://127.0.0.1:{port}/get-online-features", json=body, timeout=5)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "feast serve did not come up"
                time.sleep(0.5)
        assert reply.status_code == 200, reply.text
        doc = reply.json()
        names = doc["metadata"]["feature_names"]
        served = {n: r["values"] for n, r in zip(names, doc["results"], strict=True)}
        assert served["symbol"] == list(SYMBOLS)
        for f in BAR_FEATURES:
            assert served[f] == sdk[f], f
        assert all(v is not None for v in served["rsi_14"]), "features must be warm after 100 bars"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_feast_ui_starts_and_lists_the_project(tmp_path, feast_applied) -> None:
    """`feast ui` comes up (it used to die: No module named 'grpc_health') and shows the project's views."""
    settings = applied_settings(tmp_path / "var", feast_applied)
    port = _free_port()
    env = {**os.environ, **feast_store.feast_environment(settings)}
    feast = str(Path(sys.executable).with_name("feast"))
    proc = subprocess.Popen([feast, "-c", str(settings.feast_repo), "-f", str(feast_store.profile_yaml(settings)),
                             "ui", "-h", "127.0.0.1", "-p", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                projects = requests.get(f"http://127.0.0.1:{port}/projects-list.json", timeout=5)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "feast ui did not come up"
                time.sleep(0.5)
        assert projects.status_code == 200 and projects.json()["projects"][0]["id"] == "cryptostream"
        page = requests.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert page.status_code == 200 and "<html" in page.text.lower()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_feast_materialize_serves_a_backfill_online(tmp_path) -> None:
    """The README's step after a backfill: Feast's own `materialize` loads the offline history online.

    Only the 1h views have history; the others (never written) materialize nothing instead of failing.
    """
    REPO["path"] = copy_feature_repo(tmp_path)
    settings = settings_for(tmp_path / "var")
    feast_store.apply(settings)
    rng = np.random.default_rng(3)
    times = pd.date_range("2024-01-01", periods=WARMUP + 87, freq="1h", tz="UTC")  # 88 rows after the warm-up
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(times))))
    candles = pd.DataFrame({"date": times, "open": close, "high": close * 1.002, "low": close * 0.998,
                            "close": close, "volume": rng.uniform(1, 5, len(times))})
    candles.to_parquet(tmp_path / "BTC_USDT-1h.parquet")
    env = {**os.environ, **feast_store.feast_environment(settings), "CRYPTOSTREAM_SYMBOLS": "BTC/USDT",
           "CRYPTOSTREAM_BARS__TIMEFRAMES": "1h"}
    subprocess.run([sys.executable, "-m", "training.backfill", "files", str(tmp_path / "BTC_USDT-1h.parquet")],
                   env=env, check=True, capture_output=True)
    feast = str(Path(sys.executable).with_name("feast"))
    done = subprocess.run([feast, "-c", str(settings.feast_repo), "-f", str(feast_store.profile_yaml(settings)),
                           "materialize", "2023-12-31T00:00:00", "2024-01-20T00:00:00"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    online = feast_store.open_store(settings).get_online_features(
        features=["bar_features_1h:rsi_14", "bar_features_1h:ret_1"], entity_rows=[{"symbol": "BTC/USDT"}]).to_dict()
    offline = pd.read_parquet(settings.data_dir / "offline" / "bar_features_1h")
    last = offline.sort_values("ts").iloc[-1]
    assert online["rsi_14"] == [pytest.approx(last["rsi_14"], rel=1e-12)]
    assert online["ret_1"] == [pytest.approx(last["ret_1"], rel=1e-12)]
