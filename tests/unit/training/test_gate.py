"""python -m training.gate: the checklist judged on a walk-forward result, written into the deployed versions."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from flows.go_live import check_go_live, decision_config_hash
from flows.settings import SettingsError
from inference.manifest import resolve_version_dir
from inference.verdict import list_verdicts
from tests.kit.verdicts import deployment, live_settings
from tests.kit.walkforward_dir import write_run
from training.gate import GateConfig, Trials, backtest_criteria, main, read_run
from training.paper_record import breaches_of, covered_days


def _by_name(criteria) -> dict:
    return {c.name: c for c in criteria}


def test_a_steady_winner_passes_every_backtest_criterion(tmp_path: Path) -> None:
    crit = _by_name(backtest_criteria(*read_run(write_run(tmp_path, 0.0004)), Trials(), GateConfig()))
    assert {n for n, c in crit.items() if not c.passed} == set()
    assert crit["sharpe"].value > 1.5 and crit["max_drawdown"].value < 0.15 and crit["win_rate"].value == 0.8
    assert crit["positive_windows"].value == 1.0
    assert any(n.startswith("regime bull/") for n in crit) and any(n.startswith("regime bear/") for n in crit)


def test_the_gate_judges_the_regimes_the_run_recorded(tmp_path: Path) -> None:
    run = write_run(tmp_path, 0.0004)
    eq = pd.read_csv(run / "equity.csv")
    eq["regime"] = ["" if i < 100 else "sideways/low vol" if i % 2000 < 1000 else "bear/high vol"
                    for i in range(len(eq))]
    eq.to_csv(run / "equity.csv", index=False)
    crit = _by_name(backtest_criteria(*read_run(run), Trials(), GateConfig(regime_model="no-such-file.json")))
    assert sorted(n for n in crit if n.startswith("regime ")) == ["regime bear/high vol return",
                                                                  "regime sideways/low vol return"]


def test_a_regime_model_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="--regime-model: regime model no-such-file.json"):
        backtest_criteria(*read_run(write_run(tmp_path, 0.0004)), Trials(), GateConfig(regime_model="no-such-file.json"))


def test_a_loser_fails_sharpe_drawdown_win_rate_and_stability(tmp_path: Path) -> None:
    crit = _by_name(backtest_criteria(*read_run(write_run(tmp_path, -0.0002)), Trials(), GateConfig()))
    failed = {n for n, c in crit.items() if not c.passed}
    assert {"sharpe", "deflated_sharpe", "max_drawdown", "win_rate", "positive_windows"} <= failed


def test_many_trials_deflate_a_good_looking_sharpe(tmp_path: Path) -> None:
    run = read_run(write_run(tmp_path, 0.00006, bars=24 * 200))
    alone = _by_name(backtest_criteria(*run, Trials(), GateConfig()))
    tuned = _by_name(backtest_criteria(*run, Trials(1000, 3.0, "1000 trials"), GateConfig()))
    assert alone["sharpe"].value == tuned["sharpe"].value
    assert alone["deflated_sharpe"].passed and not tuned["deflated_sharpe"].passed
    assert tuned["deflated_sharpe_probability"].value < alone["deflated_sharpe_probability"].value


def test_the_gate_writes_a_failing_verdict_that_live_then_names(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "registry"
    deployment(root)
    settings = live_settings(root)
    wf = write_run(tmp_path / "wf", 0.0004, config_hash=decision_config_hash(settings))
    for k, v in {"CRYPTOSTREAM_BARS__TIMEFRAMES": "1h", "CRYPTOSTREAM_SCORING__REGISTRY": str(root),
                 "CRYPTOSTREAM_DATA_DIR": str(tmp_path / "var")}.items():
        monkeypatch.setenv(k, v)
    assert main(["--walkforward", str(wf), "--no-paper"]) == 1  # paper trading not checked: FAIL
    gate = json.loads((wf / "gate.json").read_text())
    assert not gate["passed"] and [c["name"] for c in gate["criteria"] if not c["passed"]] == ["paper_days"]
    assert "| paper_days | n/a | >= 14 | FAIL |" in (wf / "gate.md").read_text()
    for family in ("ensemble", "rl_tactical"):
        assert [v.passed for v in list_verdicts(resolve_version_dir(root, family))] == [False]
    with pytest.raises(SettingsError, match="failed paper_days = n/a"):
        check_go_live(settings)


def test_the_gate_refuses_a_walkforward_run_with_other_settings(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "registry"
    deployment(root)
    wf = write_run(tmp_path / "wf", 0.0004, config_hash="0" * 64)
    monkeypatch.setenv("CRYPTOSTREAM_SCORING__REGISTRY", str(root))
    monkeypatch.setenv("CRYPTOSTREAM_BARS__TIMEFRAMES", "1h")
    assert main(["--walkforward", str(wf), "--no-paper", "--dry-run"]) == 2
    assert not list_verdicts(resolve_version_dir(root, "ensemble"))


def test_paper_days_are_the_union_of_the_runs_and_breaches_are_portfolio_halts() -> None:
    t = pd.Timestamp("2024-01-01", tz="UTC")
    port = pd.DataFrame({"run_id": ["a", "a", "b", "b", "c"],
                         "ts": [t, t + pd.Timedelta(days=3), t + pd.Timedelta(days=2), t + pd.Timedelta(days=5), t]})
    assert covered_days(port, ["a", "b"]) == 5.0
    assert covered_days(port, ["b"]) == 3.0
    events = pd.DataFrame({"run_id": ["a", "a", "a", "b"], "symbol": ["*", "*", "BTC/USDT", "*"],
                           "ts": [t] * 4, "rule": ["max_drawdown:halt", "kelly:halt", "max_position", "max_daily_loss:halt"],
                           "reason": ["dd 15%", "no edge", "cap", "loss 5%"]})
    assert [b.split(" ", 1)[1] for b in breaches_of(events, ["a"])] == ["max_drawdown:halt: dd 15%"]
    assert len(breaches_of(events, ["a", "b"])) == 2
