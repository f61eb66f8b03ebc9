"""mode=live obeys the go-live gate: a passing verdict bound to the deployed versions, strategy and config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.decisions_flow import _with_override
from flows.go_live import (
    OVERRIDE_RULE,
    GoLive,
    check_go_live,
    decision_config_hash,
    deployed_versions,
    strategy_name,
)
from flows.records import Status
from flows.risk.engine import Rejection
from flows.settings import SettingsError, load_settings
from inference.manifest import resolve_version_dir
from inference.verdict import list_verdicts, write_verdict
from tests.kit.verdicts import deployment, live_settings, verdict

ROOT_DIR = Path(__file__).resolve().parents[3]


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    root = tmp_path / "registry"
    deployment(root)
    return root


def _judge(root: Path, settings, sharpe: float = 2.0, strategy: str | None = None,
           versions: dict[str, str] | None = None) -> None:
    v = verdict(versions or deployed_versions(settings), strategy or strategy_name(settings),
                decision_config_hash(settings), sharpe)
    write_verdict([resolve_version_dir(root, f) for f in ("ensemble", "rl_tactical")], v)


def test_paper_mode_needs_no_verdict(registry: Path) -> None:
    assert check_go_live(live_settings(registry, CRYPTOSTREAM_MODE="paper",
                                       CRYPTOSTREAM_EXECUTION__BROKER="paper")) is None


def test_live_refuses_without_a_verdict(registry: Path) -> None:
    with pytest.raises(SettingsError, match="ensemble .* has no go-live verdict") as err:
        check_go_live(live_settings(registry))
    assert "rl_tactical" in str(err.value) and "python -m training.gate" in str(err.value)


def test_live_refuses_a_failing_verdict_naming_each_failed_criterion(registry: Path) -> None:
    s = live_settings(registry)
    _judge(registry, s, sharpe=0.4)
    with pytest.raises(SettingsError) as err:
        check_go_live(s)
    text = str(err.value)
    assert "failed sharpe = 0.4 (needs > 1.5): FAIL" in text
    assert "max_drawdown" not in text  # it passed


def test_live_starts_with_a_passing_verdict_for_exactly_this_deployment(registry: Path) -> None:
    s = live_settings(registry)
    _judge(registry, s)
    assert check_go_live(s) == GoLive(True)
    assert [v.passed for v in list_verdicts(resolve_version_dir(registry, "ensemble"))] == [True]


def test_a_verdict_made_for_other_versions_does_not_count(registry: Path) -> None:
    s = live_settings(registry)
    _judge(registry, s)
    judged = deployed_versions(s)
    new = deployment(registry, day=2)  # retrained: latest points at new versions without a verdict
    assert new["ensemble"] != judged["ensemble"]
    with pytest.raises(SettingsError, match="has no go-live verdict"):
        check_go_live(s)
    # a verdict copied onto the new versions still names the versions it judged
    old = list_verdicts(resolve_version_dir(registry, "ensemble", judged["ensemble"]))[0]
    write_verdict([resolve_version_dir(registry, "ensemble"), resolve_version_dir(registry, "rl_tactical")], old)
    with pytest.raises(SettingsError, match=f"judged ensemble {judged['ensemble']}, {new['ensemble']} is deployed"):
        check_go_live(s)


def test_a_verdict_made_for_another_strategy_or_config_does_not_count(registry: Path) -> None:
    s = live_settings(registry)
    _judge(registry, s, strategy="trend")
    with pytest.raises(SettingsError, match=f"no go-live verdict for strategy '{strategy_name(s)}'"):
        check_go_live(s)
    _judge(registry, s)
    changed = live_settings(registry, CRYPTOSTREAM_SCORING__CONFIDENCE_THRESHOLD="0.3")
    assert decision_config_hash(changed) != decision_config_hash(s)
    with pytest.raises(SettingsError, match="has no go-live verdict"):
        check_go_live(changed)


def test_the_broker_keys_and_capital_are_not_part_of_the_decision_config(registry: Path) -> None:
    paper = live_settings(registry, CRYPTOSTREAM_MODE="paper", CRYPTOSTREAM_EXECUTION__BROKER="paper")
    assert decision_config_hash(paper) == decision_config_hash(
        live_settings(registry, CRYPTOSTREAM_EXECUTION__LIVE__MAX_CAPITAL="900"))


def test_an_override_needs_a_reason_and_is_recorded_once_and_shown(registry: Path) -> None:
    with pytest.raises(SettingsError, match="gate_override_reason"):
        live_settings(registry, CRYPTOSTREAM_EXECUTION__LIVE__GATE_OVERRIDE_REASON="because")
    s = live_settings(registry, CRYPTOSTREAM_EXECUTION__LIVE__GATE_OVERRIDE_REASON="small canary, ticket 42")
    go = check_go_live(s)
    assert go is not None and go.overridden and "has no go-live verdict" in go.event_reason()
    holder: dict = {}
    first = _with_override([Status(1, 1.0, 0.0, 0, (), ())], go, holder)
    later = _with_override([Status(2, 1.0, 0.0, 0, (), (), (("max_drawdown", "cooldown"),))], go, holder)
    events = [r for r in first + later if isinstance(r, Rejection)]
    assert [(e.symbol, e.bar_ts, e.rule) for e in events] == [("*", 1, OVERRIDE_RULE)]
    assert "ticket 42" in events[0].reason
    assert later[-1].halts == (("go_live", "override"), ("max_drawdown", "cooldown"))
    assert "HALTS[go_live=override max_drawdown=cooldown]" in later[-1].text


def test_the_live_flow_command_refuses_and_names_the_gate(registry: Path) -> None:
    s = live_settings(registry)
    _judge(registry, s, sharpe=0.2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOSTREAM_")}
    env.update({"CRYPTOSTREAM_MODE": "live", "CRYPTOSTREAM_EXECUTION__BROKER": "live",
                "CRYPTOSTREAM_EXECUTION__LIVE__CONFIRM": "true", "CRYPTOSTREAM_EXECUTION__LIVE__MAX_CAPITAL": "500",
                "CRYPTOSTREAM_EXCHANGE__API_KEY": "k", "CRYPTOSTREAM_EXCHANGE__API_SECRET": "s",
                "CRYPTOSTREAM_BARS__TIMEFRAMES": "1h", "CRYPTOSTREAM_SCORING__REGISTRY": str(registry),
                "CRYPTOSTREAM_DATA_DIR": str(registry.parent / "var"), "PYTHONPATH": str(ROOT_DIR)})
    proc = subprocess.run([sys.executable, "-m", "bytewax.run", "flows.live"], env=env, cwd=ROOT_DIR,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "refused by the go-live gate" in proc.stderr and "failed sharpe = 0.2" in proc.stderr
    assert load_settings(env={}).mode == "paper"
