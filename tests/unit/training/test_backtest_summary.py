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
