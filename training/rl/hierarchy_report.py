"""The three registered policies composed on real data: ``python -m training.rl evaluate hierarchy``.

The strategic policy's assets (hourly, its regime inputs) over the part of its test
slice that the 5-minute candles also cover; the tactical policy proposes a position
per asset, capped by the strategic weights; position changes are worked by the
execution policy on 5-minute bars where a symbol has them (else filled at the next
hourly open).  Compared with the same system filling every order at the next open
(what execution adds) and equal-weight buy-and-hold.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flows.settings import Settings
from inference.policy import PolicyRunner
from training.metrics import periods_per_year
from training.plots import plot_curves
from training.render import markdown_table
from training.rl.agents import FAMILIES
from training.rl.data import MarketData
from training.rl.evaluate import (
    buy_and_hold,
    equity_metrics,
    first_test_row,
    policy_data,
    write_report,
)
from training.rl.hierarchy import HierarchicalSystem, HierarchyConfig, HierarchyResult
from training.rl.job import RlJob
from training.rl.runs import candle_source, env_configs


def _summary(res: HierarchyResult, periods: float) -> dict[str, Any]:
    fees = sum(o.fees for o in res.orders)
    traded = sum(o.filled * o.avg_price for o in res.orders)
    worked = [o for o in res.orders if o.worked]
    e = res.equity * (1.0 / res.equity[0])
    decided = slice(0, len(res.equity) - 1)
    binding = np.abs(res.proposed[decided]) > res.caps[decided] + 1e-12
    return {**equity_metrics(e, periods, fees / res.equity[0], traded / res.equity[0]),
            "parent_orders": len(res.orders), "worked_by_agent": len(worked),
            "mean_shortfall_bps": float(np.mean([o.shortfall_bps for o in res.orders])) if res.orders else 0.0,
            "caps_binding_pct": 100.0 * float(binding.mean())}


def evaluate_hierarchy(strategic: PolicyRunner, tactical: PolicyRunner, execution: PolicyRunner, md: MarketData,
                       md_exec: MarketData) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Run the composed system and its baselines on ``md`` (already the evaluation window)."""
    if tuple(tactical.features) != md.feature_names:
        raise ValueError(f"tactical features {tactical.features} differ from the strategic data's {md.feature_names}")
    s_cfg = env_configs("strategic")[1]
    cfg = HierarchyConfig(rebalance_bars=s_cfg.rebalance_bars, long_only=s_cfg.long_only, gross_cap=s_cfg.gross_cap,
                          logit_scale=s_cfg.logit_scale, use_regime=s_cfg.use_regime)
    x_cfg = env_configs("execution")[1]
    periods = periods_per_year(md.timeframe)
    with_exec = HierarchicalSystem(strategic.act, tactical.act, execution.act, cfg, x_cfg).run(md, md_exec)
    at_open = HierarchicalSystem(strategic.act, tactical.act, None, cfg, x_cfg).run(md)
    bh, bh_metrics = buy_and_hold(md, slice(1, None), cfg.fee_rate, cfg.slippage, periods)
    table = {"hierarchy (execution agent)": _summary(with_exec, periods),
             "hierarchy (fills at next open)": _summary(at_open, periods),
             "buy_and_hold equal weight": bh_metrics}
    curves = {"hierarchy (execution agent)": with_exec.equity / with_exec.equity[0],
              "hierarchy (fills at next open)": at_open.equity / at_open.equity[0], "buy_and_hold": bh}
    return table, curves


def hierarchy_cli(a: RlJob, settings: Settings) -> Path:
    """Load the three latest policies and their data, evaluate, and add a section to the report."""
    runners = {lv: PolicyRunner.from_registry(a.registry, FAMILIES[lv]) for lv in ("strategic", "tactical", "execution")}
    s, x = runners["strategic"], runners["execution"]
    md = policy_data(s, a, settings)
    test_start = max(s.manifest.extra["split"]["test_start"], runners["tactical"].manifest.extra["split"]["test_start"])
    tf_x = str(x.manifest.extra["timeframe"])
    src = candle_source(a.data_dir, ("BTC/USDT",), tf_x) if a.data_dir is not None else None
    have = [sym for sym in md.symbols if src is None or any(src.glob(f"{sym.replace('/', '_')}-{tf_x}.*"))]
    warm = (pd.Timestamp(test_start) - pd.Timedelta(days=2)).isoformat()
    md_x = policy_data(x, a, settings, symbols=tuple(have), timeframe=tf_x, start=warm)
    i0 = first_test_row(md, test_start)
    i1 = int(np.searchsorted(md.decision_times, md_x.decision_times[-1] - 2 * md.tf_ns, side="right"))
    if i1 - i0 < 48:
        raise ValueError(f"the {tf_x} data ends before the test slice of {md.timeframe} ({test_start}): no overlap")
    window = md.take(slice(i0, i1))
    table, curves = evaluate_hierarchy(s, runners["tactical"], x, window, md_x)
    out = Path(a.report_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_curves(curves, out / "hierarchy_equity.png", "strategic caps -> tactical -> execution (test)", "bar")
    ts = pd.to_datetime(window.decision_times[[0, -1]], utc=True)
    body = (f"## Hierarchy (strategic {s.manifest.version}, tactical {runners['tactical'].manifest.version}, "
            f"execution {x.manifest.version})\n\n"
            f"- {', '.join(window.symbols)} 1h from {ts[0]:%Y-%m-%d %H:%M} to {ts[1]:%Y-%m-%d %H:%M} UTC "
            f"({window.n_bars} bars: the strategic test slice where {tf_x} candles exist); execution on {tf_x} "
            f"bars for {', '.join(have)}, the other symbols fill at the next hourly open\n"
            f"- strategic weights every 24 bars cap each asset's tactical position (long-only); a position "
            f"change above 1 % of equity is a parent order, worked over the next hour\n\n"
            + markdown_table(table) + "\n\n![hierarchy](hierarchy_equity.png)\n")
    (out / "hierarchy.json").write_text(json.dumps(table, indent=2, sort_keys=True, default=float))
    report = write_report(out, "hierarchy", body)
    print(f"hierarchy: {report}")
    return report
