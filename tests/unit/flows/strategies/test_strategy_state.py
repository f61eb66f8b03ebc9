"""A strategy's state lives in the decision step's snapshot: a restored step trades exactly like an uninterrupted one."""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import pytest

from flows.operators.decisions import DecisionStep
from flows.records import Bar, Decided, Fill, Prediction
from flows.settings import Settings, load_settings
from flows.snapshots import SnapshotError, plain_violations
from flows.wiring import build_deps

TF = 60_000
SYMBOLS = ("BTC/USDT", "ETH/USDT")


def settings(tmp: Path, name: str, **params: str) -> Settings:
    env = {"CRYPTOSTREAM_DATA_DIR": str(tmp / "var"), "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS),
           "CRYPTOSTREAM_STRATEGY__NAME": name}
    return load_settings(env={**env, **{f"CRYPTOSTREAM_STRATEGY__PARAMS__{k.upper()}": v for k, v in params.items()}})


def events(n: int) -> list[tuple[list[Bar], list[Prediction]]]:
    out = []
    for k in range(n):
        bars, preds = [], []
        for i, sym in enumerate(SYMBOLS):
            px = 100.0 * (i + 1) * (1 + 0.01 * math.sin(k / 3 + i))
            bars.append(Bar(sym, "1m", k * TF, px, px * 1.002, px * 0.998, px, 50.0, 50.0 * px, 10, px, 25.0))
            p = 0.5 + 0.3 * math.sin(k / 2 + 2 * i)
            preds.append(Prediction(sym, "1m", (k + 1) * TF, {}, p, abs(p - 0.5) * 2, int(p > 0.5), math.nan, {},
                                    0.001 * math.cos(k / 2 + 2 * i), 0.004))
        out.append((bars, preds))
    return out


def feed(step: DecisionStep, evs: list[tuple[list[Bar], list[Prediction]]]) -> list[Any]:
    out: list[Any] = []
    for bars, preds in evs:
        for b in bars:
            out += step.on_bar(b)
        out += step.on_predictions(preds)
    return out


def fills(out: list[Any]) -> list[tuple[Any, ...]]:
    return [tuple(f) for f in out if isinstance(f, Fill)]


@pytest.mark.parametrize(("name", "params"), [("tests.kit.strategies:SignHold", {"hold_bars": "3"}),
                                              ("cost_aware", {"min_hold_bars": "2", "enter_multiple": "0.2"}),
                                              ("trend", {"fast_bars": "2", "slow_bars": "4", "band": "0"}),
                                              ("flows.strategies.template:MyStrategy", {"min_hold_bars": "2"})])
def test_a_step_restored_from_its_pickled_snapshot_trades_exactly_like_an_uninterrupted_one(
        tmp_path: Path, name: str, params: dict[str, str]) -> None:
    evs = events(40)
    s = settings(tmp_path, name, **params)
    want = feed(DecisionStep(SYMBOLS, TF, build_deps(s)), evs)
    assert len(fills(want)) >= 4, "the strategy trades"
    cut = DecisionStep(SYMBOLS, TF, build_deps(s))
    got = feed(cut, evs[:17])
    snap = cut.snapshot()
    assert plain_violations(snap) == [] and snap["version"] == 2 and snap["strategy"]["state"]
    again = DecisionStep.from_snapshot(pickle.loads(pickle.dumps(snap)), build_deps(s))
    got += feed(again, evs[17:])
    assert fills(got) == fills(want)
    assert [(d.target_fraction, d.reasons) for d in got if isinstance(d, Decided)] == \
        [(d.target_fraction, d.reasons) for d in want if isinstance(d, Decided)]


def test_an_older_snapshot_is_refused_and_another_strategys_state_is_not_restored(tmp_path: Path,
                                                                                   capsys: Any) -> None:
    s = settings(tmp_path, "tests.kit.strategies:SignHold")
    step = DecisionStep(SYMBOLS, TF, build_deps(s))
    feed(step, events(5))
    snap = step.snapshot()
    with pytest.raises(SnapshotError, match="version 2; got kind 'decisions', version 1"):
        DecisionStep.from_snapshot({**snap, "version": 1})
    other = build_deps(settings(tmp_path, "trend"))
    DecisionStep.from_snapshot(snap, other)
    assert other.strategy.to_state() == {"avg": {}, "side": {}}
    assert "tests.kit.strategies:SignHold is not flows.strategies.trend:Trend" in capsys.readouterr().err
    same = build_deps(s)
    DecisionStep.from_snapshot(snap, same)
    assert same.strategy.to_state() == snap["strategy"]["state"] != {"since": {}}
