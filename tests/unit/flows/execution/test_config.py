"""Execution settings: validation at the edge, environment nesting, the live guard reading them."""

from __future__ import annotations

import pytest

from flows.execution.config import ExecutionConfig
from flows.settings import SettingsError, check_live_guard, load_settings


def test_defaults_are_paper_with_binance_fees() -> None:
    cfg = load_settings(env={"CRYPTOSTREAM_EXECUTION__LATENCY_MS": "0"}).execution
    assert isinstance(cfg, ExecutionConfig) and cfg == ExecutionConfig()
    assert (cfg.broker, cfg.default_order_type, cfg.taker_fee, cfg.maker_fee) == ("paper", "market", 0.001, 0.001)
    assert cfg.stop_loss_pct is None and cfg.live.confirm is False and cfg.live.max_capital is None


def test_environment_nests_with_double_underscores() -> None:
    env = {"CRYPTOSTREAM_EXECUTION__SLIPPAGE__BASE_BPS": "3", "CRYPTOSTREAM_EXECUTION__LATENCY_MS": "250",
           "CRYPTOSTREAM_EXECUTION__STOP_LOSS_PCT": "0.02", "CRYPTOSTREAM_EXECUTION__LIVE__MAX_CAPITAL": "500"}
    cfg = load_settings(env=env).execution
    assert (cfg.slippage.base_bps, cfg.latency_ms, cfg.stop_loss_pct, cfg.live.max_capital) == (3.0, 250, 0.02, 500.0)


@pytest.mark.parametrize(("name", "value", "field"), [
    ("BROKER", "simulated", "broker"), ("TAKER_FEE", "-0.1", "taker_fee"), ("SLIPPAGE__MAX_BPS", "x", "max_bps"),
    ("STOP_LOSS_PCT", "1.5", "stop_loss_pct"), ("LIVE__MAX_CAPITAL", "0", "max_capital"), ("COLOUR", "red", "colour"),
])
def test_bad_values_stop_at_start_naming_the_field(name: str, value: str, field: str) -> None:
    with pytest.raises(SettingsError, match=field):
        load_settings(env={f"CRYPTOSTREAM_EXECUTION__{name}": value})


def test_the_live_guard_reads_these_fields(tmp_path) -> None:
    base = {"CRYPTOSTREAM_MODE": "live", "CRYPTOSTREAM_EXECUTION__BROKER": "live"}
    with pytest.raises(SettingsError) as err:
        check_live_guard(load_settings(env=base))
    for needed in ("execution.live.confirm", "execution.live.max_capital", "api_key"):
        assert needed in str(err.value)
    secrets = tmp_path / "keys.json"
    secrets.write_text('{"api_key": "k", "api_secret": "s"}')
    ok = {**base, "CRYPTOSTREAM_EXECUTION__LIVE__CONFIRM": "true", "CRYPTOSTREAM_EXECUTION__LIVE__MAX_CAPITAL": "100",
          "CRYPTOSTREAM_EXECUTION__LIVE__SECRETS_FILE": str(secrets)}
    check_live_guard(load_settings(env=ok))
    with pytest.raises(SettingsError, match="needs mode=live"):
        check_live_guard(load_settings(env={"CRYPTOSTREAM_EXECUTION__BROKER": "live"}))
