"""End to end through the replay exchange: the live flow over a candle replay equals the backfill.

The live flow streams trades over the websocket (the real source, gap filling on),
builds 5m bars and features; the backfill fetches the same replay's klines through
ccxt REST and runs the same operators.  Bars and features must agree, and a replay
with forced disconnects must give the same tables (REST fills the gaps).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bytewax.testing import run_main

from flows.live import build_flow
from flows.settings import load_settings
from infra.replay_exchange.faults import FaultConfig
from infra.replay_exchange.server import running_replay
from tests.kit.replay import with_history
from tests.kit.repo import applied_data_dir, copy_applied_feast, copy_feature_repo
from training.backfill import run_backfill
from training.klines import exchange_streams

START = datetime(2024, 3, 1, tzinfo=timezone.utc)
END = datetime(2024, 3, 1, 16, tzinfo=timezone.utc)  # 16 hours of 5m candles: 192 bars a symbol
SYMBOLS = ("BTC/USDT", "ETH/USDT")
TF_MS = 300_000


def _settings(var: Path, repo: Path, ex, **extra: str):
    env = {"CRYPTOSTREAM_DATA_DIR": str(var), "CRYPTOSTREAM_FEAST_REPO": str(repo),
           "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS), "CRYPTOSTREAM_BARS__TIMEFRAMES": "5m",
           "CRYPTOSTREAM_EXCHANGE__HTTP_URL": ex.http_url, "CRYPTOSTREAM_EXCHANGE__WS_URL": ex.ws_url,
           "CRYPTOSTREAM_EXCHANGE__FILL_SINCE": START.isoformat(), "CRYPTOSTREAM_EXCHANGE__IDLE_STOP_S": "3",
           "CRYPTOSTREAM_EXCHANGE__API_KEY": "replay",
           **extra}
    return load_settings(env=env)


def _read(var: Path, name: str) -> pd.DataFrame:
    files = sorted((var / "offline" / name).glob("*.parquet"))
    df = pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame()
    return df.sort_values(["symbol", "ts"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def files(shared_data) -> list[Path]:
    return [shared_data / "binance-spot-5m-2024" / f"{s.replace('/', '_')}-5m.parquet" for s in SYMBOLS]


def _live(tmp: Path, files: list[Path], applied: Path, faults: FaultConfig | None = None) -> tuple[Path, int]:
    """Run the live flow over the replay, starting with the Feast state of data directory ``applied``."""
    repo = copy_feature_repo(tmp)
    with running_replay(files, speed=0, end=END, seed=3, faults=faults or FaultConfig(), **with_history(START, "5m")
                        ) as ex:
        ex.engine.wait_for_streams = len(SYMBOLS)  # one connection per symbol: start when all are in
        settings = _settings(tmp / "var", repo, ex)
        copy_applied_feast(applied, tmp / "var")
        run_main(build_flow(settings))
        return tmp / "var", len(ex.faults)


def test_live_flow_equals_backfill_and_survives_disconnects(tmp_path, files) -> None:
    applied = applied_data_dir(tmp_path / "applied")  # one feast apply for both live runs
    live_var, _ = _live(tmp_path / "live", files, applied)
    repo = copy_feature_repo(tmp_path / "bf")
    with running_replay(files, speed=0, end=END, seed=3, rest_horizon="all", **with_history(START, "5m")) as ex:
        settings = _settings(tmp_path / "bf" / "var", repo, ex)
        # the backfill starts where the live flow's warm-up klines do (exchange.warmup_klines before START), so
        # both feed the features the same bars; a replay serving all its data (rest_horizon all) has no
        # meaningful "now": take every bar
        first = int(START.timestamp() * 1000) - settings.exchange.warmup_klines * TF_MS
        streams = exchange_streams(settings, SYMBOLS, "5m", first, None, closed_only=False)
        run_backfill(settings, streams, "5m")
    bf_var = tmp_path / "bf" / "var"
    for table in ("bars_5m", "bar_features_5m", "cross_asset_features_5m"):
        live, bf = _read(live_var, table), _read(bf_var, table)
        # the live flow cannot close the last bar of the replay (no trade after it): drop it from the backfill
        bf = bf[bf.groupby("symbol").ts.transform("max") > bf.ts]
        # nor does it store the warm-up klines or rows of them: the backfill's bars opening before START, rows
        # (stamped with their bar's close) of those bars
        bf = bf[bf.ts >= START] if table == "bars_5m" else bf[bf.ts > START]
        assert len(live) > 100
        common = live.merge(bf, on=["symbol", "timeframe", "ts"], suffixes=("", "_bf"))
        assert len(common) == len(live) == len(bf), f"{table}: {len(live)} live rows, {len(bf)} backfilled"
        cols = [c for c in live.columns if c not in ("symbol", "timeframe", "ts", "created_at")]
        # same bars and features up to float summation order (the exchange sums kline volume its own way)
        np.testing.assert_allclose(common[cols].to_numpy(float), common[[c + "_bf" for c in cols]].to_numpy(float),
                                   rtol=1e-9, atol=1e-12, err_msg=table)

    dropped_var, n_faults = _live(tmp_path / "dropped", files, applied, FaultConfig(drop_every=200))
    assert n_faults >= 2, "the replay must actually have dropped connections (REST fills what they missed)"
    for table in ("bars_5m", "bar_features_5m", "cross_asset_features_5m"):
        pd.testing.assert_frame_equal(_read(dropped_var, table), _read(live_var, table))
