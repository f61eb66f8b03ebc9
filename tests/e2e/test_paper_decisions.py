"""Paper mode end to end on a replay of real 5m candles (local profile).

Models are trained by the CLI on the candles *before* the replay window; the live
flow (``flows.live.build_flow`` under ``run_main``) then streams the window from the
replay exchange.  The test recomputes every stored prediction independently (the
registry's ensemble scorer fed the stored feature rows bar time by bar time) and,
when the risk and execution packages are installed, checks the stored fills and
portfolio rows against a cash/position ledger rebuilt from the fills alone.
"""

from __future__ import annotations

import gc
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bytewax.testing import run_main

from flows import feast_store
from flows.live import build_flow
from flows.monitoring import metrics as monitoring
from flows.operators.features import WARMUP
from flows.operators.model_bank import feed_features, services
from flows.records import Bar
from flows.settings import load_settings
from inference.runners import EnsembleScorer
from inference.scorer import to_signal
from infra.replay_exchange.server import running_replay
from tests.kit.paper import (
    LIVE,
    SYMBOLS,
    registry,  # noqa: F401  (fixtures)
)
from tests.kit.paper import candle_files as _files
from tests.kit.paper import decision_table as _table
from tests.kit.prometheus import free_port, scrape, total
from tests.kit.replay import history_klines, with_history
from tests.kit.repo import copy_feature_repo
from training.backfill import bars_from_frame


@pytest.fixture(scope="module")
def paper_run(shared_data, registry, tmp_path_factory) -> Path:  # noqa: F811
    """Run the live flow in paper mode over the replay window; return its data dir."""
    tmp = tmp_path_factory.mktemp("paper")
    with running_replay(_files(shared_data), speed=0, end=LIVE[1], **with_history(LIVE[0], "5m"), seed=5) as ex:
        ex.engine.wait_for_streams = len(SYMBOLS)
        env = {"CRYPTOSTREAM_DATA_DIR": str(tmp / "var"), "CRYPTOSTREAM_FEAST_REPO": str(copy_feature_repo(tmp)),
               "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS), "CRYPTOSTREAM_BARS__TIMEFRAMES": "5m",
               "CRYPTOSTREAM_SCORING__REGISTRY": str(registry), "CRYPTOSTREAM_SCORING__POLICY_FAMILY": "",
               "CRYPTOSTREAM_SCORING__CONFIDENCE_THRESHOLD": "0",
               "CRYPTOSTREAM_RISK__SIZING__MIN_REBALANCE_FRACTION": "0",
               "CRYPTOSTREAM_EXCHANGE__HTTP_URL": ex.http_url, "CRYPTOSTREAM_EXCHANGE__WS_URL": ex.ws_url,
               "CRYPTOSTREAM_EXCHANGE__API_KEY": "replay", "CRYPTOSTREAM_EXCHANGE__IDLE_STOP_S": "3",
               "CRYPTOSTREAM_MONITORING__METRICS_PORT": str(port := free_port())}
        settings = load_settings(env=env)
        feast_store.apply(settings)
        gc.unfreeze()
        try:
            run_main(build_flow(settings))
            METRICS.update(scrape(port))
        finally:
            monitoring.stop()
        HISTORY.update({s: history_klines(ex, s, "5m", LIVE[0], settings.exchange.warmup_klines) for s in SYMBOLS})
        FROZEN["objects"] = gc.get_freeze_count()
        gc.unfreeze()
    return tmp / "var"


METRICS: dict[str, float] = {}  # /metrics of the paper run, read when it ended
# The klines before the run the flow warmed up on (exchange.warmup_klines), as the exchange serves them
HISTORY: dict[str, list[Bar]] = {}


def test_metrics_of_the_run_match_its_stored_orders_fills_and_portfolio(paper_run) -> None:
    m, total_ = METRICS, lambda name, **labels: total(METRICS, name, **labels)
    fills, orders = _table(paper_run, "fills"), _table(paper_run, "orders")
    port = _table(paper_run, "portfolio_state").sort_values("ts")
    assert total_("cryptostream_fills_total") == len(fills) >= 10
    assert total_("cryptostream_orders_total", status="NEW") == len(orders)
    assert total_("cryptostream_closes_total") == len(port)
    assert total_("cryptostream_equity") == pytest.approx(port.equity.iloc[-1])
    assert total_("cryptostream_drawdown") == pytest.approx(port.drawdown.iloc[-1])
    assert total_("cryptostream_kill_switch_engaged") == 0 and "cryptostream_kill_switch_engaged{}" in m
    for stage in ("scoring", "decision"):
        assert total_("cryptostream_stage_seconds_count", stage=stage) > 0, stage
    assert total_("cryptostream_sink_seconds_count", sink="decisions") > 0
    assert total_("cryptostream_model_version_info", family="ensemble") == 1


FROZEN: dict[str, int] = {}  # objects the flow's workers froze once their models were loaded (flows.heap)


def test_the_flow_freezes_its_start_up_heap_once_the_models_are_loaded(paper_run) -> None:
    assert FROZEN["objects"] > 10_000  # models, settings, operators: out of the cyclic collector's walks




def _offline(var: Path, view: str) -> pd.DataFrame:
    files = sorted((var / "offline" / f"{view}_5m").glob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files])


def test_stored_predictions_equal_an_independent_recomputation(paper_run, registry) -> None:  # noqa: F811
    preds = _table(paper_run, "predictions").sort_values(["ts", "symbol"]).reset_index(drop=True)
    feats = _offline(paper_run, "bar_features").merge(
        _offline(paper_run, "cross_asset_features").drop(columns=["created_at", "timeframe"]), on=["symbol", "ts"])
    feats = feats.sort_values(["ts", "symbol"])
    scorer = EnsembleScorer.from_registry(registry, services("5m"), feed=feed_features())
    want = []
    for ts, bar in feats.groupby("ts", sort=True):
        rows = {s: r for s, r in zip(bar.symbol, bar[feed_features()].to_numpy(np.float64), strict=True)}
        rows = {s: rows[s] for s in SYMBOLS if s in rows}
        out = scorer.score(rows)["ensemble"]
        signal = to_signal(out.probability, 0.0)[1]  # the run's scoring.confidence_threshold
        want += [(ts, s, out.probability[i], int(signal[i])) for i, s in enumerate(rows)]
    assert len(preds) == len(want) > 3 * 30, "every bar time with all features scored, for 30+ bar times"
    assert list(zip(preds.ts, preds.symbol, strict=True)) == [(t, s) for t, s, _, _ in want]
    np.testing.assert_allclose(preds.prob_up.to_numpy(float), [w[2] for w in want], rtol=0, atol=1e-9)
    assert preds.signal.tolist() == [w[3] for w in want]
    members = [json.loads(p)["members"] for p in preds.payload]
    assert all(set(m) == {"lightgbm", "lstm", "gnn"} for m in members)


def test_orders_fills_and_portfolio_agree_with_predictions_bars_and_a_ledger(paper_run) -> None:
    """Recompute what was traded from the stored tables alone.

    Orders come from predictions of their bar and point the position the
    prediction's way within the sizing cap; each fill is at the next bar's open
    moved against the order by at most the slippage cap, with the taker fee; cash
    and positions rebuilt from the fills equal the stored portfolio.
    """
    from flows.execution.config import ExecutionConfig
    from flows.risk.config import RiskConfig

    xc, rc = ExecutionConfig(), RiskConfig()
    fills = _table(paper_run, "fills").sort_values(["ts", "fill_id"])
    orders = _table(paper_run, "orders")
    port = _table(paper_run, "portfolio_state").sort_values("ts").set_index("ts")
    preds = _table(paper_run, "predictions").set_index(["symbol", "ts"])
    bars = _offline(paper_run, "bars").set_index(["symbol", "ts"])
    assert len(orders) >= 10 and len(fills) >= 10, "the run traded"
    assert len(port) >= len(preds.index.get_level_values("ts").unique()), "a portfolio row per decided bar"
    assert set(fills.client_order_id) <= set(orders.client_order_id), "every fill belongs to a stored order"
    tf = pd.Timedelta(minutes=5)
    for o in orders.itertuples():
        p = preds.loc[(o.symbol, o.ts)]  # the order's prediction: same symbol, same bar close
        direction = {1: 1, 0: -1}.get(int(p.signal), 0)
        row = port.loc[o.ts]
        held = json.loads(row.positions).get(o.symbol, 0.0)
        target = held + (o.qty if o.side == "buy" else -o.qty)
        assert np.sign(round(target, 12)) in (direction, 0), (o, direction)
        close = bars.loc[(o.symbol, o.ts - tf), "close"]
        assert abs(target) * close <= rc.sizing.max_position_fraction * row.equity * (1 + 1e-9)
    by_order = orders.set_index("client_order_id")
    for f in fills.itertuples():
        decided = by_order.loc[f.client_order_id, "ts"]
        opened = bars.loc[(f.symbol, decided), "open"]  # the bar that opens at the decision's close
        slip = (f.price / opened - 1.0) * (1 if f.side == "buy" else -1)
        assert 0.0 <= slip <= xc.slippage.max_bps / 1e4 + 1e-12, (f, opened)
        assert f.fee == pytest.approx(f.qty * f.price * xc.taker_fee, rel=1e-9)
    cash = load_settings(env={}).initial_cash
    pos: dict[str, float] = {}
    for f in fills.itertuples():
        sign = 1.0 if f.side == "buy" else -1.0
        cash -= sign * f.qty * f.price + f.fee
        pos[f.symbol] = pos.get(f.symbol, 0.0) + sign * f.qty
    last = port.iloc[-1]
    assert last.cash == pytest.approx(cash, rel=1e-9, abs=1e-6)
    held = {k: v for k, v in json.loads(last.positions).items() if abs(v) > 1e-12}
    assert held == pytest.approx({k: v for k, v in pos.items() if abs(v) > 1e-12}, rel=1e-9)


def test_backtest_of_the_same_candles_trades_exactly_like_the_live_paper_flow(shared_data, registry, paper_run,  # noqa: F811
                                                                               tmp_path) -> None:
    """``python -m training.backtest`` runs the flow's steps in-process: same bars in, same fills out.

    The bars are the ones the live run stored (built from the replayed trades, so with
    real trade counts, VWAP and taker volume, which candle files lack).
    """
    from training.backtest import main, run_backtest

    env = {"CRYPTOSTREAM_DATA_DIR": str(tmp_path / "var"), "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS),
           "CRYPTOSTREAM_SCORING__REGISTRY": str(registry), "CRYPTOSTREAM_SCORING__POLICY_FAMILY": "",
           "CRYPTOSTREAM_SCORING__CONFIDENCE_THRESHOLD": "0", "CRYPTOSTREAM_RISK__SIZING__MIN_REBALANCE_FRACTION": "0"}
    settings = load_settings(env=env)
    stored = _offline(paper_run, "bars").sort_values("ts")
    stored["ts"] = (stored.ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    streams = {s: bars_from_frame(s, "5m", stored[stored.symbol == s].reset_index(drop=True)) for s in SYMBOLS}
    assert {s: len(b) for s, b in HISTORY.items()} == dict.fromkeys(SYMBOLS, WARMUP - 1)
    streams = {s: [*HISTORY[s], *streams[s]] for s in SYMBOLS}  # the warm-up, then the run's bars
    result = run_backtest(settings, streams, "5m", int(LIVE[0].timestamp() * 1000))  # decided from the run's bars
    live = _table(paper_run, "fills").sort_values(["ts", "symbol"])
    got = sorted((f.ts, f.symbol, f.side, f.qty, f.price, f.fee) for f in result.fills)
    want = [(int(t.timestamp() * 1000), s, side, q, p, fee) for t, s, side, q, p, fee in
            zip(live.ts, live.symbol, live.side, live.qty, live.price, live.fee, strict=True)]
    assert len(got) >= 10 and got == sorted(want)
    port = _table(paper_run, "portfolio_state").sort_values("ts")
    assert result.equity[-1] == pytest.approx(port.equity.iloc[-1], rel=1e-12)
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    try:
        assert main([*map(str, _files(shared_data)), "--start", LIVE[0].isoformat(), "--end", LIVE[1].isoformat(),
                     "--out", str(tmp_path / "bt")]) == 0
    finally:
        mp.undo()
    summary = json.loads((tmp_path / "bt" / "summary.json").read_text())
    assert summary["fills"] > 0 and set(summary) >= {"strategy", "buy_and_hold", "fees"}
    assert (tmp_path / "bt" / "equity.png").stat().st_size > 1000


def test_the_gates_paper_record_finds_the_run_and_its_replay_fills_exactly(paper_run, registry,  # noqa: F811
                                                                          tmp_path) -> None:
    """training.paper_record: days, halts and a backtest replay of the bars the paper run stored.

    The store also holds the bars before the run (an operator's backfill of the exchange's
    klines: the ones the run warmed up on), which the replay warms up on.
    """
    from flows.sinks.history import HistorySink
    from flows.stores import open_stores
    from training.paper_record import paper_record

    var = tmp_path / "var"
    shutil.copytree(paper_run, var)
    sink = HistorySink(load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(var)})).build("backfill", 0, 1)
    sink.write_batch([b for s in SYMBOLS for b in HISTORY[s]])
    sink.close()
    env = {"CRYPTOSTREAM_DATA_DIR": str(var), "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS),
           "CRYPTOSTREAM_BARS__TIMEFRAMES": "5m", "CRYPTOSTREAM_SCORING__REGISTRY": str(registry),
           "CRYPTOSTREAM_SCORING__POLICY_FAMILY": "", "CRYPTOSTREAM_SCORING__CONFIDENCE_THRESHOLD": "0",
           "CRYPTOSTREAM_RISK__SIZING__MIN_REBALANCE_FRACTION": "0"}
    settings = load_settings(env=env)
    stores = open_stores(settings)
    decisions, history = stores.decision_reader(), stores.history_reader()
    version = str(_table(paper_run, "predictions").model_version.iloc[0])
    rec = paper_record(settings, decisions, history, version)
    port = _table(paper_run, "portfolio_state")
    span = (port.ts.max() - port.ts.min()) / pd.Timedelta(days=1)
    assert len(rec.runs) == 1 and rec.days == pytest.approx(span) and rec.breaches == ()
    assert rec.paper_fills >= 10 and rec.replay_fills == rec.paper_fills and rec.fill_deviation_bps == 0.0
    other = load_settings(env={**env, "CRYPTOSTREAM_RISK__SIZING__METHOD": "fixed_fraction"})
    assert paper_record(other, decisions, history, version).fill_deviation_bps > 1.0  # other sizing: other fills
    assert paper_record(settings, decisions, history, "not-deployed").runs == ()
