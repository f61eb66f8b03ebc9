"""flows/cli.py: the ``cryptostream`` console script, its verbs, and --help with defaults and required flags."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys

import pytest
import tomllib

from flows.cli import VERBS, main
from tests.kit.repo import PROJECT_ROOT

ISSUE_VERBS = ("download-data", "backfill", "train", "backtest", "walkforward", "gate", "trade", "dashboard",
               "kill-switch", "registry", "db")


def _help(capsys, *args: str) -> str:
    assert main([*args, "--help"]) == 0
    return capsys.readouterr().out


def test_the_console_script_is_declared_and_resolves() -> None:
    scripts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, func = scripts["cryptostream"].partition(":")
    assert getattr(importlib.import_module(module), func) is main


def test_every_verb_of_the_issue_maps_to_a_module(capsys) -> None:
    assert set(ISSUE_VERBS) <= set(VERBS)
    for verb in ISSUE_VERBS:
        module = VERBS[verb][0]
        if verb != "dashboard":  # built by its own branch; until then the verb says so (test below)
            assert importlib.util.find_spec(module) is not None, verb
    assert main([]) == 2 and "download-data" in capsys.readouterr().out
    assert main(["--help"]) == 0 and "python -m training.walkforward" in capsys.readouterr().out
    assert main(["nope"]) == 2 and "unknown verb 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["backfill", "backtest", "walkforward", "tune", "gate", "trade", "live", "kill-switch",
                                  "registry", "db", "drift", "download-data"])
def test_each_verb_passes_help_through_to_its_module(capsys, verb: str) -> None:
    out = _help(capsys, verb)
    assert out.startswith("usage: python -m " + VERBS[verb][0].removesuffix(".__main__"))


def test_train_help_marks_the_window_required_and_shows_defaults(capsys) -> None:
    out = " ".join(_help(capsys, "train", "lightgbm").split())
    for flag in ("--symbols SYMBOLS [SYMBOLS ...] ccxt symbols (required)",
                 "--start START first bar time, ISO 8601 UTC (required)",
                 "--end END end (exclusive), ISO 8601 UTC (required)",
                 "--seed SEED default: 7", "--epochs EPOCHS lstm/gnn maximum epochs (default: 30)",
                 "--timeframe TIMEFRAME bar timeframe (members: default 1h; ensemble: default the members' one timeframe)"):
        assert flag in out, flag
    assert main(["train", "lightgbm", "--symbols", "BTC/USDT", "--end", "2024-02-01"]) == 2
    assert "the following arguments are required: --start" in capsys.readouterr().err
    ensemble = " ".join(_help(capsys, "train", "ensemble").split())
    assert "(required)" not in ensemble, "the ensemble combines registered members: no window"


def test_a_dsn_in_the_environment_never_shows_in_help(capsys, monkeypatch) -> None:
    monkeypatch.setenv("TIMESCALE_DSN", "postgresql://u:help-secret-pw@127.0.0.1/db")
    monkeypatch.setenv("REDIS_URL", "redis://:help-secret-redis@127.0.0.1/0")
    for sub in ("migrate", "env", "backup", "restore", "retention"):
        out = _help(capsys, "db", sub)
        assert "help-secret" not in out and "$TIMESCALE_DSN" in out


def test_the_dashboard_verb_runs_the_dashboard_or_says_it_is_not_built(capsys) -> None:
    if importlib.util.find_spec("flows.monitoring.dashboard") is None:
        assert main(["dashboard"]) == 2
        assert "not built yet" in capsys.readouterr().err
    else:
        assert "usage:" in _help(capsys, "dashboard")


def test_arguments_pass_through_and_the_exit_code_comes_back(tmp_path) -> None:
    env = {"CRYPTOSTREAM_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "flows.cli", "kill-switch"]
    on = subprocess.run([*cmd, "on", "--reason", "cli test"], env=env, cwd=PROJECT_ROOT, capture_output=True,
                        text=True, check=False)
    assert on.returncode == 0, on.stderr
    status = subprocess.run([*cmd, "status"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    assert status.returncode == 0 and "cli test" in status.stdout + status.stderr
    bad = subprocess.run([*cmd, "sideways"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "invalid choice: 'sideways'" in bad.stderr
