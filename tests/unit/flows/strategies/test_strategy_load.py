"""Selecting a strategy by setting: built-ins by name, a user's class by path; bad ones stop at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.execution.costs import round_trip_cost
from flows.settings import SettingsError, load_settings
from flows.strategies.cost_aware import CostAware
from flows.strategies.legacy import Legacy
from flows.strategies.load import build_strategy, strategy_env
from flows.strategies.trend import Trend
from flows.wiring import build_deps
from tests.kit.strategies import SignHold

N = "CRYPTOSTREAM_STRATEGY__NAME"
P = "CRYPTOSTREAM_STRATEGY__PARAMS__"


def test_built_ins_by_name_and_a_users_class_by_dotted_path_with_params_from_the_environment() -> None:
    assert type(build_strategy(load_settings(env={}))) is Legacy  # the default setting
    assert type(build_strategy(load_settings(env={N: "cost_aware"}))) is CostAware
    s = build_strategy(load_settings(env={N: "trend", P + "FAST_BARS": "5", P + "ALLOW_SHORT": "true"}))
    assert type(s) is Trend and s.params.fast_bars == 5 and s.params.allow_short is True  # type: ignore[attr-defined]
    user = build_strategy(load_settings(env={N: "tests.kit.strategies:SignHold", P + "HOLD_BARS": "7"}))
    assert type(user) is SignHold and user.params.hold_bars == 7  # type: ignore[attr-defined]


def test_the_strategy_compares_with_the_configured_fees_and_slippage() -> None:
    env = strategy_env(load_settings(env={"CRYPTOSTREAM_EXECUTION__TAKER_FEE": "0.0004",
                                          "CRYPTOSTREAM_EXECUTION__SLIPPAGE__BASE_BPS": "2",
                                          "CRYPTOSTREAM_BARS__TIMEFRAMES": "5m"}))
    assert env.round_trip_cost == pytest.approx(round_trip_cost(0.0004, 2.0)) == pytest.approx(0.0012)
    assert env.timeframe_ms == 300_000 and env.bars_per_year == pytest.approx(105_120)


@pytest.mark.parametrize(("env", "names"), [
    ({N: "momentum"}, ["strategy.name (env CRYPTOSTREAM_STRATEGY__NAME) = 'momentum'", "cost_aware, legacy, trend"]),
    ({N: "no_such_module:X"}, ["strategy.name", "cannot import module 'no_such_module'"]),
    ({N: "tests.kit.strategies:Missing"}, ["strategy.name", "has no 'Missing'"]),
    ({N: "tests.kit.strategies:NotAStrategy"}, ["strategy.name", "not a subclass"]),
    ({N: "cost_aware", P + "HORIZON": "0"},
     ["strategy.params.horizon (env CRYPTOSTREAM_STRATEGY__PARAMS__HORIZON) = '0'", "greater than or equal to 1"]),
    ({N: "cost_aware", P + "ENTER_MULTIPL": "2"},
     ["strategy.params.enter_multipl (env CRYPTOSTREAM_STRATEGY__PARAMS__ENTER_MULTIPL)", "not a parameter"]),
    ({N: "trend", P + "FAST_BARS": "50"}, ["strategy.params", "fast_bars (50) must be below slow_bars (48)"]),
    ({N: "tests.kit.strategies:SignHold", P + "SIZE": "2"}, ["strategy.params.size", "less than or equal to 1"]),
    ({N: "default"}, ["strategy.name (env CRYPTOSTREAM_STRATEGY__NAME) = 'default'", "renamed 'cost_aware'",
                      "CRYPTOSTREAM_STRATEGY__NAME=cost_aware"]),
    ({N: "not a name"}, ["strategy.name (env CRYPTOSTREAM_STRATEGY__NAME)", "should match pattern"]),
])
def test_an_unknown_strategy_or_a_bad_parameter_stops_at_start_naming_the_field(env: dict[str, str],
                                                                                names: list[str]) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(env=env)
    for name in names:
        assert name in str(err.value)


def test_a_strategy_that_sizes_itself_gets_vol_target_sizing_and_the_configured_limits(tmp_path: Path) -> None:
    base = {"CRYPTOSTREAM_DATA_DIR": str(tmp_path), "CRYPTOSTREAM_RISK__LIMITS__MAX_DRAWDOWN": "0.1"}
    legacy = build_deps(load_settings(env=base))
    assert legacy.risk.config.sizing.method == "half_kelly"
    cost = build_deps(load_settings(env={**base, N: "cost_aware"}))
    assert cost.risk.config.sizing.method == "vol_target"
    assert cost.risk.config.limits == legacy.risk.config.limits and cost.risk.config.limits.max_drawdown == 0.1
