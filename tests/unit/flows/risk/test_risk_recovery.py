"""Recovery: the decision step's snapshot pickled mid-run (as Bytewax keeps it) and restored with fresh components
(portfolio, risk engine, paper broker from ``build_deps``) goes on exactly like an uninterrupted run; the
stored ``portfolio_state`` rows rebuild the portfolio's exact state."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import orjson
import pytest

from flows.operators.decisions import DecisionStep
from flows.portfolio import state_from_rows
from flows.records import PortfolioRow
from flows.risk.engine import Rejection
from flows.settings import load_settings
from flows.wiring import build_deps
from tests.kit import risk_stream as stream

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
N, CUT = 120, 70


def signal(c: int, i: int) -> int:
    return ((c // 9 + i) % 3) - 1  # none, bearish, bullish in turns: buys, sells, flips


def test_restored_step_continues_exactly(tmp_path: Path) -> None:
    settings = load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp_path), "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS),
                                  "CRYPTOSTREAM_RISK__SIZING__METHOD": "fixed_fraction",
                                  "CRYPTOSTREAM_RISK__SIZING__FIXED_FRACTION": "0.3",
                                  "CRYPTOSTREAM_RISK__SIZING__VOL_TARGET": "5",
                                  "CRYPTOSTREAM_RISK__LIMITS__MAX_GROSS_LEVERAGE": "0.6"})
    ref, cut = DecisionStep(SYMBOLS, stream.TF, build_deps(settings)), DecisionStep(SYMBOLS, stream.TF,
                                                                                     build_deps(settings))
    want: list[Any] = []
    got: list[Any] = []
    states: list[dict[str, Any]] = []  # every row's stored state, through JSON as the sinks store it
    for c, bars, preds in stream.closes(SYMBOLS, N, signal):
        if c == CUT:
            cut = DecisionStep.from_snapshot(pickle.loads(pickle.dumps(cut.snapshot())))
            cut.attach(build_deps(settings))
        for step, out in ((ref, want), (cut, got)):
            items = [x for b in bars for x in step.on_bar(b)] + step.on_predictions(preds)
            if c >= CUT:
                out += items
            if step is ref:
                states += [orjson.loads(orjson.dumps(r.state["full"])) for r in items if isinstance(r, PortfolioRow)]
    assert got == want
    rows = [r for r in want if isinstance(r, PortfolioRow)]
    assert len(rows) == N - CUT + 1 and len({round(r.state["equity"], 6) for r in rows}) > 10, "the book moved"
    assert any(isinstance(r, Rejection) and r.rule == "max_gross_leverage" for r in want), "a limit was exercised"
    full = ref.deps.portfolio.to_state()
    assert len(full["hist_ts"]) > 100, "a day of marks: the rows carry them as a delta"
    assert state_from_rows(states) == full
    assert state_from_rows(states[-len(full["hist_ts"]):]) == full, "the rows since the oldest mark kept suffice"
    with pytest.raises(ValueError, match="equity marks"):
        state_from_rows(states[-10:])
