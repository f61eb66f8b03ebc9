"""training.backtest's summary: the performance module's figures, the three benchmarks and the halts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flows.records import Fill
from flows.risk.engine import PORTFOLIO, Rejection
from training import performance as perf
from training.backtest import BacktestResult

H = 3_600_000


def _fill(ts: int, side: str, qty: float, price: float) -> Fill:
    fields = {name: None for name in Fill._fields}
    fields.update(ts=ts, symbol="BTC/USDT", side=side, qty=qty, price=price, fee=0.5, client_order_id=f"c{ts}",
                  liquidity="taker")
    return Fill(**fields)


def test_the_summary_uses_the_performance_module_and_names_every_halt() -> None:
    rng = np.random.default_rng(3)
    n = 1000
    res = BacktestResult(run_id="abc")
    res.times = [i * H for i in range(n)]
    res.equity = list(10_000 * np.cumprod(1 + rng.normal(0, 0.002, n)))
    res.benchmark = list(np.cumprod(1 + rng.normal(0, 0.004, n)) / 1.0)
    res.benchmark = [b / res.benchmark[0] for b in res.benchmark]
    res.fills = [_fill(10 * H, "buy", 1.0, 100.0), _fill(20 * H, "sell", 1.0, 103.0),
                 _fill(30 * H, "buy", 1.0, 100.0), _fill(31 * H, "sell", 1.0, 99.0)]
    res.halts = [Rejection(PORTFOLIO, 500 * H, "max_drawdown:halt", "drawdown 15.2% reached the limit", 0.0, 0.0)]
    s = res.summary("1h")
    index = pd.DatetimeIndex(pd.to_datetime(res.times, unit="ms", utc=True))
    want = perf.metrics(pd.Series(res.equity, index=index), "1h")
    assert s["strategy"]["sharpe"] == pytest.approx(want.sharpe) and s["strategy"]["cagr"] == pytest.approx(want.cagr)
    assert s["cash"]["total_return"] == 0.0 and s["cash"]["max_drawdown"] == 0.0
    assert s["buy_and_hold"]["total_return"] == pytest.approx(res.benchmark[-1] - 1)
    assert s["vol_target_buy_and_hold"]["volatility"] < s["buy_and_hold"]["volatility"]
    assert s["strategy"]["round_trips"] == 2 and s["strategy"]["win_rate"] == 0.5
    assert s["halts"] == [{"ts": "1970-01-21 20:00:00+00:00", "rule": "max_drawdown:halt",
                           "reason": "drawdown 15.2% reached the limit"}]
    assert s["run_id"] == "abc"


def test_the_regime_the_decision_step_knew_goes_into_equity_csv_and_the_breakdown(tmp_path) -> None:
    from flows.records import Bar, Close, PortfolioRow
    from training.backtest import _record, write_outputs
    from training.walkforward import combine

    res = BacktestResult(run_id="abc")
    labels = [None, None, "bull/low vol", "bear/high vol"]
    for i, label in enumerate(labels):
        bar = Bar("BTC/USDT", "1h", i * H, 100.0, 101.0, 99.0, 100.0 + i, 1.0, 100.0, 1, 100.0, 0.5)
        _record(res, [Close((i + 1) * H, (bar,), ())],
                [PortfolioRow((i + 1) * H, {"equity": 1000.0 + i, "positions": {}, "regime": label})],
                {"BTC/USDT": 100.0})
    assert res.regimes == labels
    write_outputs(tmp_path, res, {"timeframe": "1h"})
    eq = pd.read_csv(tmp_path / "equity.csv", parse_dates=["ts"]).set_index("ts")
    assert perf.regime_labels(eq).tolist() == ["warm-up", "warm-up", "bull/low vol", "bear/high vol"]

    class W:
        result = res

    assert combine([W(), W()]).regimes == labels * 2
    plain = BacktestResult(run_id="off", times=[H], equity=[1000.0], benchmark=[1.0], positions=[{}], regimes=[None])
    write_outputs(tmp_path / "off", plain, {"timeframe": "1h"})  # regime off: no column
    assert (tmp_path / "off" / "equity.csv").read_text().splitlines()[0] == "ts,equity,strategy_growth,buy_and_hold_growth"
