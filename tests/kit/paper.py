"""The paper-trading replay fixtures: real 5m candles, a registry trained by the CLI, stored decision tables."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from flows import feast_store
from flows.settings import load_settings
from infra.replay_exchange.server import running_replay
from tests.kit.recovery import run_flow
from tests.kit.replay import with_history
from tests.kit.repo import copy_feature_repo
from training.backfill import bars_from_frame, run_backfill

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
TRAIN = (datetime(2024, 5, 20, tzinfo=timezone.utc), datetime(2024, 6, 1, tzinfo=timezone.utc))
LIVE = (datetime(2024, 6, 1, tzinfo=timezone.utc), datetime(2024, 6, 1, 10, tzinfo=timezone.utc))


def candle_files(shared: Path) -> list[Path]:
    return [shared / "binance-spot-5m-2024" / f"{s.replace('/', '_')}-5m.parquet" for s in SYMBOLS]


_BUILT: dict[str, Path] = {}  # trained (and replayed) once a session: four modules import these fixtures


@pytest.fixture(scope="module")
def registry(shared_data, tmp_path_factory) -> Path:
    """A module's own copy of the registry trained by CLI on the backfilled training window (trained once a session)."""
    if "registry" not in _BUILT:
        _BUILT["registry"] = train_registry(tmp_path_factory.mktemp("train"), candle_files(shared_data), "5m", TRAIN)
    own = tmp_path_factory.mktemp("registry") / "registry"
    shutil.copytree(_BUILT["registry"], own)
    return own


def train_registry(tmp: Path, files: list[Path], timeframe: str, span: tuple[datetime, datetime]) -> Path:
    """Backfill ``span`` of the candle files into a scratch store and train every model on it by CLI."""
    from training.train import main as train

    env = {"CRYPTOSTREAM_DATA_DIR": str(tmp / "var"), "CRYPTOSTREAM_FEAST_REPO": str(copy_feature_repo(tmp)),
           "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS)}
    settings = load_settings(env=env)
    streams = {}
    for s, f in zip(SYMBOLS, files, strict=True):
        df = pd.read_parquet(f)
        df = df[(df.ts >= span[0]) & (df.ts < span[1])].copy()
        df["ts"] = (df.ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
        streams[s] = bars_from_frame(s, timeframe, df.reset_index(drop=True))
    run_backfill(settings, streams, timeframe)
    feast_store.apply(settings)
    root = tmp / "registry"
    window = ["--symbols", *SYMBOLS, "--timeframe", timeframe, "--start", span[0].isoformat(),
              "--end", span[1].isoformat(), "--registry", str(root), "--seed", "3", "--folds", "2"]
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    try:
        assert train(["lightgbm", *window]) == 0
        assert train(["lstm", *window, "--epochs", "2", "--hidden", "8", "--bptt", "8", "--burn-in", "8",
                      "--segment", "64"]) == 0
        assert train(["gnn", *window, "--epochs", "2", "--hidden", "8", "--graph-window", "30"]) == 0
        assert train(["ensemble", "--registry", str(root), "--method", "fixed"]) == 0
    finally:
        mp.undo()
    return root


def decision_table(var: Path, table: str) -> pd.DataFrame:
    files = sorted((var / "decisions" / table).glob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files]).reset_index(drop=True) if files else pd.DataFrame()


KILLS = (0.7, 0.85)  # models score from the first of 120 bars (warm-up from the replay's klines): both kills land mid-run


def paper_env(var: Path, repo: Path, ex, reg: Path) -> dict[str, str]:
    return {**os.environ, "CRYPTOSTREAM_DATA_DIR": str(var), "CRYPTOSTREAM_FEAST_REPO": str(repo),
            "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS), "CRYPTOSTREAM_BARS__TIMEFRAMES": "5m",
            "CRYPTOSTREAM_SCORING__REGISTRY": str(reg), "CRYPTOSTREAM_SCORING__POLICY_FAMILY": "",
            "CRYPTOSTREAM_SCORING__CONFIDENCE_THRESHOLD": "0",
            "CRYPTOSTREAM_RISK__SIZING__MIN_REBALANCE_FRACTION": "0",
            "CRYPTOSTREAM_EXCHANGE__HTTP_URL": ex.http_url, "CRYPTOSTREAM_EXCHANGE__WS_URL": ex.ws_url,
            "CRYPTOSTREAM_EXCHANGE__API_KEY": "replay", "CRYPTOSTREAM_EXCHANGE__FILL_SINCE": LIVE[0].isoformat(),
            "CRYPTOSTREAM_EXCHANGE__IDLE_STOP_S": "4"}


def stored_predictions(var: Path) -> pd.DataFrame:
    cols = ["symbol", "ts", "model_version", "prob_up", "confidence", "signal", "payload"]
    return decision_table(var, "predictions")[cols].sort_values(["ts", "symbol"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(shared_data, registry, tmp_path_factory) -> Path:  # noqa: F811
    """The data directory of an uninterrupted paper run over the live window (run once a session; tests read it)."""
    if "reference" not in _BUILT:
        _BUILT["reference"] = _reference(shared_data, registry, tmp_path_factory)
    return _BUILT["reference"]


def _reference(shared_data: Path, registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("reference")
    with running_replay(candle_files(shared_data), speed=0, end=LIVE[1], **with_history(LIVE[0], "5m"), seed=5) as ex:
        ex.engine.wait_for_streams = len(SYMBOLS)
        env = paper_env(tmp / "var", copy_feature_repo(tmp), ex, registry)
        feast_store.apply(load_settings(env=env))
        proc = run_flow(env)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-3000:]
    return tmp / "var"
