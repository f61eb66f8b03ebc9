"""A user's strategy, selected by dotted path, trades the same fills in the live paper flow and the backtest.

Development data only: 1h candles of 2023 (``binance-spot-1h``).  Models are trained by
the CLI on 2023-01-01 .. 2023-05-01; the live flow (``flows.live`` in paper mode) then
streams 2023-05-01 .. 2023-05-06 from the replay exchange with
``CRYPTOSTREAM_STRATEGY__NAME=tests.kit.strategies:SignHold``; ``training.backtest``'s
``run_backtest`` replays the bars the live run stored with the same settings, bar by bar
and in chunks, and must produce the same fills.
"""

from __future__ import annotations

import gc
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
from bytewax.testing import run_main

from flows import feast_store
from flows.live import build_flow
from flows.settings import load_settings
from infra.replay_exchange.server import running_replay
from tests.kit.paper import SYMBOLS, decision_table, train_registry
from tests.kit.replay import history_klines, with_history
from tests.kit.repo import copy_feature_repo
from training.backfill import bars_from_frame

TRAIN = (datetime(2023, 1, 1, tzinfo=timezone.utc), datetime(2023, 5, 1, tzinfo=timezone.utc))
LIVE = (datetime(2023, 5, 1, tzinfo=timezone.utc), datetime(2023, 5, 6, tzinfo=timezone.utc))
STRATEGY = {"CRYPTOSTREAM_STRATEGY__NAME": "tests.kit.strategies:SignHold",
            "CRYPTOSTREAM_STRATEGY__PARAMS__HOLD_BARS": "3", "CRYPTOSTREAM_STRATEGY__PARAMS__SIZE": "0.15"}
COMMON = {"CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS), "CRYPTOSTREAM_SCORING__POLICY_FAMILY": "",
          "CRYPTOSTREAM_SCORING__CONFIDENCE_THRESHOLD": "0", "CRYPTOSTREAM_RISK__SIZING__MIN_REBALANCE_FRACTION": "0",
          **STRATEGY}


def files(shared: Path) -> list[Path]:
    return [shared / "binance-spot-1h" / f"{s.replace('/', '_')}-1h.parquet" for s in SYMBOLS]


@pytest.fixture(scope="module")
def registry_1h(shared_data, tmp_path_factory) -> Path:
    return train_registry(tmp_path_factory.mktemp("train1h"), files(shared_data), "1h", TRAIN)


@pytest.fixture(scope="module")
def user_paper_run(shared_data, registry_1h, tmp_path_factory) -> Path:
    """Run the live flow in paper mode with the user's strategy over the replay window; return its data dir."""
    tmp = tmp_path_factory.mktemp("paper1h")
    with running_replay(files(shared_data), speed=0, end=LIVE[1], **with_history(LIVE[0], "1h"), seed=5) as ex:
        ex.engine.wait_for_streams = len(SYMBOLS)
        env = {**COMMON, "CRYPTOSTREAM_DATA_DIR": str(tmp / "var"),
               "CRYPTOSTREAM_FEAST_REPO": str(copy_feature_repo(tmp)), "CRYPTOSTREAM_BARS__TIMEFRAMES": "1h",
               "CRYPTOSTREAM_SCORING__REGISTRY": str(registry_1h),
               "CRYPTOSTREAM_EXCHANGE__HTTP_URL": ex.http_url, "CRYPTOSTREAM_EXCHANGE__WS_URL": ex.ws_url,
               "CRYPTOSTREAM_EXCHANGE__API_KEY": "replay", "CRYPTOSTREAM_EXCHANGE__IDLE_STOP_S": "3"}
        settings = load_settings(env=env)
        assert settings.strategy.name == "tests.kit.strategies:SignHold"
        feast_store.apply(settings)
        gc.unfreeze()
        run_main(build_flow(settings))
        gc.unfreeze()
        HISTORY.update({s: history_klines(ex, s, "1h", LIVE[0], settings.exchange.warmup_klines) for s in SYMBOLS})
    return tmp / "var"


HISTORY: dict[str, list] = {}  # the klines before the run the flow warmed up on (exchange.warmup_klines)


def test_a_users_strategy_gives_the_same_fills_in_the_backtest_as_in_the_live_paper_flow(
        registry_1h, user_paper_run, tmp_path) -> None:
    from training.backtest import run_backtest

    env = {**COMMON, "CRYPTOSTREAM_DATA_DIR": str(tmp_path / "var"), "CRYPTOSTREAM_SCORING__REGISTRY": str(registry_1h)}
    settings = load_settings(env=env)
    files_ = sorted((user_paper_run / "offline" / "bars_1h").glob("*.parquet"))
    stored = pd.concat([pd.read_parquet(f) for f in files_]).sort_values("ts")
    stored["ts"] = (stored.ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)

    def streams() -> dict:  # the warm-up klines, then the run's bars: the first with features is the run's first
        return {s: [*HISTORY[s], *bars_from_frame(s, "1h", stored[stored.symbol == s].reset_index(drop=True))]
                for s in SYMBOLS}

    live = decision_table(user_paper_run, "fills").sort_values(["ts", "symbol"])
    want = sorted((int(t.timestamp() * 1000), s, side, q, p, fee) for t, s, side, q, p, fee in
                  zip(live.ts, live.symbol, live.side, live.qty, live.price, live.fee, strict=True))
    assert len(want) >= 6, "the user's strategy traded in the paper flow"
    port = decision_table(user_paper_run, "portfolio_state").sort_values("ts")
    first = [w for w in want if w[0] == want[0][0]]  # SignHold's entries: 0.15 of the 10,000 equity each
    assert [q * p for _, _, _, q, p, _ in first] == pytest.approx([1500.0] * len(first), rel=0.01)

    one = run_backtest(settings, streams(), "1h", None)
    assert sorted((f.ts, f.symbol, f.side, f.qty, f.price, f.fee) for f in one.fills) == want
    assert one.equity[-1] == pytest.approx(port.equity.iloc[-1], rel=1e-12)
    chunked = run_backtest(settings, streams(), "1h", None, chunk=16)
    got = sorted((f.ts, f.symbol, f.side, f.qty, f.price, f.fee) for f in chunked.fills)
    assert [g[:3] for g in got] == [w[:3] for w in want]
    assert [x for g in got for x in g[3:]] == pytest.approx([x for w in want for x in w[3:]], rel=1e-9)
    plain = {k: v for k, v in env.items() if k not in STRATEGY}  # the default setting: legacy
    legacy = run_backtest(load_settings(env=plain), streams(), "1h", None)
    assert sorted((f.ts, f.symbol, f.side, f.qty) for f in legacy.fills) != [w[:4] for w in want]
