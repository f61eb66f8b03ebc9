"""The report's in-process features equal the training path's (backfill -> Feast point-in-time join)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flows import feast_store
from flows.settings import load_settings
from tests.kit.repo import copy_feature_repo
from training.backfill import bars_from_frame, run_backfill
from training.walkforward_report import BOTH, feature_frame, load_candles

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")


@pytest.fixture()
def env(tmp_path, monkeypatch):
    repo = copy_feature_repo(tmp_path)
    envvars = {"CRYPTOSTREAM_DATA_DIR": str(tmp_path / "var"), "CRYPTOSTREAM_FEAST_REPO": str(repo)}
    for k, v in envvars.items():
        monkeypatch.setenv(k, v)
    return load_settings(env=envvars)


def test_report_features_equal_the_feast_training_set(shared_data, env) -> None:
    from training.datasets import build_training_set

    candles, tf = load_candles(shared_data / "binance-spot-1h", SYMBOLS, "2022-05-27", "2022-06-30")  # 313 warm-up bars, then 20 days
    run_backfill(env, {s: bars_from_frame(s, tf, df) for s, df in candles.items()}, tf)
    feast_store.apply(env)
    mine = feature_frame(candles, tf)
    start, end = mine.event_timestamp.min(), mine.event_timestamp.max() + pd.Timedelta(tf)
    theirs = build_training_set(env, SYMBOLS, tf, str(start), str(end), "lightgbm_1h_v1")
    theirs["event_timestamp"] = pd.to_datetime(theirs["event_timestamp"], utc=True).dt.as_unit("ns")
    keys = ["symbol", "event_timestamp"]
    joined = mine.merge(theirs, on=keys, suffixes=("", "_feast"), validate="one_to_one")
    assert len(joined) == len(mine) == len(theirs) > 3 * 300
    for col in [*BOTH, "fwd_ret", "label"]:
        np.testing.assert_allclose(joined[col].to_numpy(np.float64), joined[f"{col}_feast"].to_numpy(np.float64),
                                   rtol=1e-6, atol=1e-9, err_msg=col)
