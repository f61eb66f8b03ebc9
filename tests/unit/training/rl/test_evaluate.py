"""Evaluation: baselines computed by hand on a synthetic market, the report written, execution baselines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inference.policy import PolicyRunner
from tests.kit.rl import tiny
from training.plots import plot_curves
from training.render import markdown_table
from training.rl.agents import FAMILIES, make_agent
from training.rl.data import MarketData, synthetic_market_data
from training.rl.evaluate import (
    evaluate_execution,
    evaluate_strategic,
    evaluate_tactical,
    write_report,
)
from training.rl.export import export_policy, register_policy
from training.rl.runs import make_env, rollout_observations


def _iso(md: MarketData, i: int) -> str:
    return pd.Timestamp(int(md.decision_times[i]), tz="UTC").isoformat()


def _registered(level: str, md: MarketData, root: Path) -> PolicyRunner:
    env, _ = make_env(level, md, seed=0, evaluation=False, quick=True)  # type: ignore[arg-type]
    model = make_agent(tiny(level), env)
    obs = rollout_observations(env, lambda o: model.predict(o, deterministic=True)[0], 64)
    split = {"valid_start": _iso(md, int(md.n_bars * 0.6)), "test_start": _iso(md, int(md.n_bars * 0.8)),
             "test_end": _iso(md, md.n_bars - 1)}
    register_policy(root, FAMILIES[level], model, export_policy(model, obs), feature_service="lightgbm_1h_v1",
                    features=md.feature_names, train_start=_iso(md, 0), train_end=split["valid_start"],
                    data_hash="-", seeds={"seed": 0}, config={}, metrics={},
                    extra={"split": split, "symbols": list(md.symbols), "timeframe": md.timeframe})
    return PolicyRunner.from_registry(root, FAMILIES[level])


@pytest.fixture(scope="module")
def hourly() -> MarketData:
    return synthetic_market_data(seed=21, n_bars=900, n_assets=2, n_features=6, timeframe="1h")


def test_tactical_baselines_by_hand(hourly: MarketData, tmp_path: Path) -> None:
    runner = _registered("tactical", hourly, tmp_path)
    table, curves = evaluate_tactical(runner, hourly, runner.manifest.extra["split"]["test_start"])
    i0 = int(hourly.n_bars * 0.8)
    for a, sym in enumerate(hourly.symbols):
        assert table["flat"][sym]["total_return"] == 0.0 and table["flat"][sym]["fees_pct"] == 0.0
        # buy and hold = target +1 at every next open (tiny rebalances keep the exposure at 1), by hand
        cash, units, fees = 10_000.0, 0.0, 0.0
        for t in range(i0, hourly.n_bars - 1):
            po = hourly.open[t + 1, a]
            delta = (cash + units * po) / po - units
            fill = po * (1 + 0.0005 * np.sign(delta))
            fees += 0.001 * abs(delta) * fill
            cash -= delta * fill + 0.001 * abs(delta) * fill
            units += delta
        end = cash + units * hourly.close[-1, a]
        assert table["buy_and_hold"][sym]["total_return"] == pytest.approx(end / 10_000.0 - 1.0, rel=1e-9)
        assert table["buy_and_hold"][sym]["fees_pct"] == pytest.approx(100 * fees / 10_000.0, rel=1e-9)
        assert np.isfinite(table["policy"][sym]["total_return"])
    assert set(curves) == {"policy", "buy_and_hold", "flat", "lightgbm", "lightgbm_sign"}
    assert len(curves["flat"]) == hourly.n_bars - i0  # reset + one step per bar but the last
    plot_curves(curves, tmp_path / "t.png", "t", "bar")
    assert (tmp_path / "t.png").stat().st_size < 100_000
    body = "## Tactical\n\n" + markdown_table({k: v[hourly.symbols[0]] for k, v in table.items()})
    report = write_report(tmp_path / "rep", "tactical", body)
    text = report.read_text()
    assert "## Tactical" in text and "| buy_and_hold |" in text and "test slice" in text


def test_strategic_baselines(hourly: MarketData, tmp_path: Path) -> None:
    runner = _registered("strategic", hourly, tmp_path)
    table, curves = evaluate_strategic(runner, hourly, runner.manifest.extra["split"]["test_start"])
    assert table["cash"]["total_return"] == pytest.approx(0.0, abs=1e-3)  # softmax leaves ~e-10 in assets
    i0 = int(hourly.n_bars * 0.8)
    steps = len(curves["policy"]) - 1
    units = 0.5 / (hourly.open[i0 + 1] * 1.0005 * 1.001)
    assert curves["buy_and_hold"][-1] == pytest.approx(float(units @ hourly.close[i0 + steps * 24]), rel=1e-12)
    assert len(curves["buy_and_hold"]) == len(curves["equal_weight_1/N"])


def test_execution_baselines(tmp_path: Path) -> None:
    minutes = synthetic_market_data(seed=22, n_bars=1_500, n_assets=1, n_features=6, timeframe="5m")
    runner = _registered("execution", minutes, tmp_path)
    table, shortfalls = evaluate_execution(runner, minutes, runner.manifest.extra["split"]["test_start"],
                                           per_asset=20)
    assert table["immediate_market"]["mean_bars_used"] == 1.0
    assert table["twap"]["mean_bars_used"] == 12.0 and table["twap"]["mean_leftover_pct"] == pytest.approx(0.0)
    assert table["twap"]["beats_twap_pct"] == 0.0
    assert all(len(s) == 20 for s in shortfalls.values())
    # immediate market pays the spread + impact + taker fee at once: at least the fee (10 bps) on average
    assert table["immediate_market"]["mean_bps"] > 10.0 - 5.0


def test_hierarchy_of_registered_policies(tmp_path: Path) -> None:
    from training.rl.hierarchy_report import evaluate_hierarchy

    hourly = synthetic_market_data(seed=31, n_bars=150, n_assets=2, n_features=6, timeframe="1h")
    minutes = synthetic_market_data(seed=32, n_bars=5_400, n_assets=2, n_features=6, timeframe="5m")  # spans the hourly bars
    s, t = _registered("strategic", hourly, tmp_path / "s"), _registered("tactical", hourly, tmp_path / "t")
    x = _registered("execution", minutes, tmp_path / "x")
    if float(np.mean(t.act(np.zeros((1, t.observation_size), np.float32)))) < 0:
        # an untrained policy's sign is arbitrary; long-only caps would keep a short-leaning one flat (no orders)
        act = t.act
        t.act = lambda o: -act(o)  # type: ignore[method-assign]
    table, curves = evaluate_hierarchy(s, t, x, hourly, minutes)
    agent, at_open = table["hierarchy (execution agent)"], table["hierarchy (fills at next open)"]
    assert agent["parent_orders"] > 0 and 0 < agent["worked_by_agent"] <= agent["parent_orders"]
    assert at_open["worked_by_agent"] == 0
    assert len(curves["buy_and_hold"]) == len(curves["hierarchy (execution agent)"]) == hourly.n_bars
    assert "| hierarchy (execution agent) |" in markdown_table(table)
