"""Caps finite and positive, keys non-empty: the live guard cannot be passed with inf or '' (issue 17, defect 2)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from flows.execution.config import ExecutionConfig, LiveConfig
from flows.settings import Settings, SettingsError, check_live_guard, load_settings

LIVE = {"CRYPTOSTREAM_MODE": "live", "CRYPTOSTREAM_EXECUTION__BROKER": "live",
        "CRYPTOSTREAM_EXECUTION__LIVE__CONFIRM": "true", "CRYPTOSTREAM_EXECUTION__LIVE__MAX_CAPITAL": "500",
        "CRYPTOSTREAM_EXCHANGE__API_KEY": "k-123", "CRYPTOSTREAM_EXCHANGE__API_SECRET": "s-456"}


def _start(env: dict[str, str]) -> Settings:
    """Load the settings and check the live guard, as flows.live and flows.main do at start."""
    s = load_settings(env=env)
    s.require_live_guard()
    return s


def test_the_live_guard_passes_with_every_field_set() -> None:
    assert _start(LIVE).execution.live.max_capital == 500.0


@pytest.mark.parametrize(("name", "value", "field"), [
    ("CRYPTOSTREAM_EXECUTION__LIVE__MAX_CAPITAL", "inf", "execution.live.max_capital"),
    ("CRYPTOSTREAM_EXECUTION__LIVE__MAX_CAPITAL", "Infinity", "execution.live.max_capital"),
    ("CRYPTOSTREAM_EXECUTION__LIVE__MAX_CAPITAL", "nan", "execution.live.max_capital"),
    ("CRYPTOSTREAM_EXECUTION__LIVE__MAX_CAPITAL", "0", "execution.live.max_capital"),
    ("CRYPTOSTREAM_EXCHANGE__API_SECRET", "", "exchange.api_secret"),
    ("CRYPTOSTREAM_EXCHANGE__API_SECRET", "   ", "exchange.api_secret"),
    ("CRYPTOSTREAM_EXCHANGE__API_KEY", "", "exchange.api_key"),
    ("CRYPTOSTREAM_INITIAL_CASH", "inf", "initial_cash"),
    ("CRYPTOSTREAM_INITIAL_CASH", "-inf", "initial_cash"),
])
def test_live_start_refuses_an_infinite_cap_or_an_empty_key(name: str, value: str, field: str) -> None:
    with pytest.raises(SettingsError) as err:
        _start({**LIVE, name: value})
    assert field in str(err.value)
    assert "k-123" not in str(err.value) and "s-456" not in str(err.value)


def _float_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Return the dotted names of every float setting, nested models included."""
    out = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _float_fields(ann, f"{prefix}{name}.")
        elif ann is float or ann == float | None:
            out.append(prefix + name)
    return out


FLOATS = _float_fields(Settings)


def test_there_are_float_settings_to_check() -> None:
    assert {"initial_cash", "execution.live.max_capital", "risk.limits.max_drawdown"} <= set(FLOATS)


@pytest.mark.parametrize("field", FLOATS)
@pytest.mark.parametrize("value", ["inf", "nan"])
def test_every_float_setting_refuses_inf_and_nan_naming_the_field(field: str, value: str) -> None:
    env = {"CRYPTOSTREAM_" + field.upper().replace(".", "__"): value}
    with pytest.raises(SettingsError, match=field.replace(".", r"\.") + " "):
        load_settings(env=env)


def test_a_config_built_in_code_cannot_carry_an_infinite_cap_past_the_guard() -> None:
    s = load_settings(env=LIVE)
    bypass = ExecutionConfig.model_construct(broker="live", live=LiveConfig.model_construct(
        confirm=True, max_capital=float("inf"), secrets_file=None))
    with pytest.raises(SettingsError, match="execution.live.max_capital"):
        check_live_guard(s, bypass)
