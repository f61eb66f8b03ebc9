"""SIGKILL in the middle of a replay with scoring and decisions, restart from Bytewax recovery.

Reference: one uninterrupted ``python -m bytewax.run flows.live`` over 10 hours of
real 5m candles with models in the registry.  Then the same replay at 3600x with
the flow killed (SIGKILL) twice after the models warmed up and restarted from its
recovery snapshots.  The stored predictions must equal the reference exactly (the
streaming LSTM and GNN state comes back from the snapshot); with the risk and
execution packages installed, no client order id is stored twice and the last
portfolio row equals the reference's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from flows import feast_store
from flows.settings import load_settings
from infra.replay_exchange.server import running_replay
from tests.conftest import copy_feature_repo
from tests.e2e.test_paper_decisions import LIVE, SYMBOLS, _files, _table, registry  # noqa: F401
from tests.e2e.test_recovery import _flow, kill_at_and_finish

KILLS = (0.7, 0.85)  # models score from ~61 of 120 bars: both kills land after warm-up


def _env(var: Path, repo: Path, ex, reg: Path) -> dict[str, str]:
    return {**os.environ, "CRYPTOSTREAM_DATA_DIR": str(var), "CRYPTOSTREAM_FEAST_REPO": str(repo),
            "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS), "CRYPTOSTREAM_BARS__TIMEFRAMES": "5m",
            "CRYPTOSTREAM_SCORING__REGISTRY": str(reg), "CRYPTOSTREAM_SCORING__POLICY_FAMILY": "",
            "CRYPTOSTREAM_SCORING__CONFIDENCE_THRESHOLD": "0",
            "CRYPTOSTREAM_RISK__SIZING__MIN_REBALANCE_FRACTION": "0",
            "CRYPTOSTREAM_EXCHANGE__HTTP_URL": ex.http_url, "CRYPTOSTREAM_EXCHANGE__WS_URL": ex.ws_url,
            "CRYPTOSTREAM_EXCHANGE__API_KEY": "replay", "CRYPTOSTREAM_EXCHANGE__FILL_SINCE": LIVE[0].isoformat(),
            "CRYPTOSTREAM_EXCHANGE__IDLE_STOP_S": "4"}


def _predictions(var: Path) -> pd.DataFrame:
    cols = ["symbol", "ts", "model_version", "prob_up", "confidence", "signal", "payload"]
    return _table(var, "predictions")[cols].sort_values(["ts", "symbol"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(shared_data, registry, tmp_path_factory) -> Path:  # noqa: F811
    tmp = tmp_path_factory.mktemp("reference")
    with running_replay(_files(shared_data), speed=0, start=LIVE[0], end=LIVE[1], seed=5) as ex:
        ex.engine.wait_for_streams = len(SYMBOLS)
        env = _env(tmp / "var", copy_feature_repo(tmp), ex, registry)
        feast_store.apply(load_settings(env=env))
        proc = _flow(env)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-3000:]
    return tmp / "var"


def test_sigkill_twice_and_restart_gives_the_same_decisions(shared_data, registry, reference,  # noqa: F811
                                                           tmp_path) -> None:
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True)
    with running_replay(_files(shared_data), speed=3600, start=LIVE[0], end=LIVE[1], seed=5) as ex:
        ex.engine.wait_for_streams = len(SYMBOLS)
        env = _env(tmp_path / "var", copy_feature_repo(tmp_path), ex, registry)
        feast_store.apply(load_settings(env=env))
        kill_at_and_finish(ex, env, recovery, KILLS)
    got, want = _predictions(tmp_path / "var"), _predictions(reference)
    assert len(want) > 3 * 40
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=0, atol=1e-12)
    orders = _table(tmp_path / "var", "orders")
    assert orders.client_order_id.is_unique, "a replayed decision placed a second order"
    ref_port = _table(reference, "portfolio_state").sort_values("ts").iloc[-1]
    port = _table(tmp_path / "var", "portfolio_state").sort_values("ts").iloc[-1]
    assert port.ts == ref_port.ts and port.cash == pytest.approx(ref_port.cash, rel=1e-12)
    assert port.positions == ref_port.positions
