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

import subprocess
import sys

import pandas as pd
import pytest

from flows import feast_store
from flows.settings import load_settings
from infra.replay_exchange.server import running_replay
from tests.kit.paper import (
    KILLS,
    LIVE,
    SYMBOLS,
    reference,  # noqa: F401  (fixtures)
    registry,  # noqa: F401  (fixtures)
)
from tests.kit.paper import candle_files as _files
from tests.kit.paper import decision_table as _table
from tests.kit.paper import paper_env as _env
from tests.kit.paper import stored_predictions as _predictions
from tests.kit.recovery import kill_at_and_finish
from tests.kit.replay import with_history
from tests.kit.repo import copy_feature_repo


def test_sigkill_twice_and_restart_gives_the_same_decisions(shared_data, registry, reference,  # noqa: F811
                                                           tmp_path) -> None:
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True)
    with running_replay(_files(shared_data), speed=3600, end=LIVE[1], **with_history(LIVE[0], "5m"), seed=5) as ex:
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
