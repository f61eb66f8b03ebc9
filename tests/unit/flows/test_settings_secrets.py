"""Configuration errors never print a secret value (issue 17, defect 3)."""

from __future__ import annotations

import pytest

from flows.settings import SettingsError, load_settings

SECRET = "987654321zz"


def _error(tmp_path, yaml_text: str | None = None, env: dict[str, str] | None = None) -> str:
    config = None
    if yaml_text is not None:
        config = tmp_path / "c.yaml"
        config.write_text(yaml_text)
    with pytest.raises(SettingsError) as err:
        load_settings(config, env=env or {})
    return str(err.value)


@pytest.mark.parametrize(("yaml_text", "field"), [
    ("exchange: {api_secret: 987654321}", "exchange.api_secret"),
    ("exchange: {api_key: 987654321}", "exchange.api_key"),
    ("exchange: {api_secret: [987654321]}", "exchange.api_secret"),
    ("timescale_dsn: 987654321", "timescale_dsn"),
    ("redis_url: {x: 987654321}", "redis_url"),
])
def test_a_badly_typed_secret_is_named_but_not_shown(tmp_path, yaml_text: str, field: str) -> None:
    msg = _error(tmp_path, yaml_text)
    assert field in msg and "987654321" not in msg, msg


@pytest.mark.parametrize("name", [
    "CRYPTOSTREAM_EXCHANGE__SECRET", "CRYPTOSTREAM_EXCHANGE__APISECRET", "CRYPTOSTREAM_EXCHANGE__PASSWORD",
    "CRYPTOSTREAM_API_TOKEN", "CRYPTOSTREAM_EXCHANGE__PRIVATE_KEY", "CRYPTOSTREAM_DB_DSN",
    "CRYPTOSTREAM_EXCHANGE__PASSPHRASE", "CRYPTOSTREAM_EXCHANGE__CREDENTIALS",
])
def test_an_unknown_setting_whose_name_looks_secret_is_named_but_not_shown(tmp_path, name: str) -> None:
    msg = _error(tmp_path, env={name: SECRET})
    assert "is not a known setting" in msg and name in msg
    assert SECRET not in msg, msg


def test_a_secret_nested_under_an_unknown_section_is_masked(tmp_path) -> None:
    msg = _error(tmp_path, "exchange: {creds: {secret: 987654321, user: bob}}")
    assert "exchange.creds" in msg and "987654321" not in msg and "bob" in msg, msg


def test_a_blank_secret_is_refused_without_echoing_it(tmp_path) -> None:
    msg = _error(tmp_path, env={"CRYPTOSTREAM_EXCHANGE__API_SECRET": "  "})
    assert "exchange.api_secret" in msg and "<secret>" in msg


def test_other_bad_values_are_still_shown(tmp_path) -> None:
    msg = _error(tmp_path, env={"CRYPTOSTREAM_SYMBOLZ": "BTC/USDT", "CRYPTOSTREAM_REPLAY__SPEED": "fast"})
    assert "'BTC/USDT'" in msg and "'fast'" in msg
