"""Risk settings through the project's settings loader: environment names, bad values named, groups."""

from __future__ import annotations

import pytest

from flows.risk.config import RiskConfig
from flows.settings import SettingsError, load_settings


def test_environment_sets_nested_risk_fields() -> None:
    s = load_settings(env={"CRYPTOSTREAM_RISK__LIMITS__MAX_POSITION_FRACTION": "0.2",
                           "CRYPTOSTREAM_RISK__SIZING__METHOD": "quarter_kelly",
                           "CRYPTOSTREAM_RISK__LIMITS__GROUPS": "BTC/USDT=majors, ETH/USDT=majors,SOL/USDT=alts",
                           "CRYPTOSTREAM_RISK__KILL_SWITCH__FLATTEN": "true"})
    assert isinstance(s.risk, RiskConfig)
    assert s.risk.limits.max_position_fraction == 0.2 and s.risk.sizing.method == "quarter_kelly"
    assert s.risk.limits.groups == {"BTC/USDT": "majors", "ETH/USDT": "majors", "SOL/USDT": "alts"}
    assert s.risk.kill_switch.flatten and s.risk.kill_switch.redis_key == "cryptostream:kill"


@pytest.mark.parametrize(("env", "named"), [
    ({"CRYPTOSTREAM_RISK__LIMITS__MAX_POSITION_FRACTION": "-1"}, "risk.limits.max_position_fraction"),
    ({"CRYPTOSTREAM_RISK__SIZING__METHOD": "double_kelly"}, "risk.sizing.method"),
    ({"CRYPTOSTREAM_RISK__LIMITS__GROUPS": "BTC/USDT"}, "SYMBOL=group"),
    ({"CRYPTOSTREAM_RISK__BREAKERS__FAST_HALFLIFE_BARS": "200"}, "fast_halflife_bars"),
    ({"CRYPTOSTREAM_RISK__SIGNALS__ML_WEIGHT": "0", "CRYPTOSTREAM_RISK__SIGNALS__RL_WEIGHT": "0"}, "ml_weight"),
    ({"CRYPTOSTREAM_RISK__LIMITS__MAX_LEVERAGE": "2"}, "is not a known setting"),
])
def test_bad_values_stop_at_start_naming_the_field(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named.replace(".", r"\.")):
        load_settings(env=env)


def test_config_is_frozen_and_round_trips_through_json() -> None:
    cfg = RiskConfig.model_validate({"limits": {"groups": {"BTC/USDT": "majors"}}, "kill_switch": {"file": "/tmp/K"}})
    assert RiskConfig.model_validate_json(cfg.model_dump_json()) == cfg
    with pytest.raises(ValueError, match="frozen"):
        cfg.limits.max_drawdown = 0.5  # type: ignore[misc]
