"""Settings: defaults, sources, and one clear message per invalid field."""

from __future__ import annotations

import pytest

from flows.settings import SettingsError, load_settings, timeframe_ms


def test_defaults_are_the_embedded_local_profile() -> None:
    s = load_settings(env={})
    assert s.profile == "local"
    assert s.mode == "paper"
    assert s.bars.timeframes == ("1m",)
    assert s.exchange.http_url is None


def test_environment_and_yaml_are_read_and_env_wins(tmp_path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("symbols: [BTC/USDT]\nreplay:\n  speed: 10\nbars:\n  timeframes: [1m, 5m]\n")
    env = {"CRYPTOSTREAM_REPLAY__SPEED": "120", "TIMESCALE_DSN": "postgresql://u:pw@h/db"}
    s = load_settings(cfg, env=env)
    assert s.symbols == ("BTC/USDT",)
    assert s.replay.speed == 120.0
    assert s.bars.timeframes == ("1m", "5m")
    assert s.timescale_dsn is not None and s.timescale_dsn.get_secret_value() == "postgresql://u:pw@h/db"


@pytest.mark.parametrize(
    ("env", "field", "hint"),
    [
        ({"CRYPTOSTREAM_PROFILE": "cloud"}, "profile (env CRYPTOSTREAM_PROFILE)", "'local' or 'timescale'"),
        ({"CRYPTOSTREAM_MODE": "yolo"}, "mode (env CRYPTOSTREAM_MODE)", "'paper' or 'live'"),
        ({"CRYPTOSTREAM_SYMBOLS": "BTCUSDT"}, "symbols (env CRYPTOSTREAM_SYMBOLS)", "BASE/QUOTE"),
        ({"CRYPTOSTREAM_BARS__TIMEFRAMES": "1m,7x"}, "bars.timeframes", "<n><s|m|h|d>"),
        ({"CRYPTOSTREAM_REPLAY__SPEED": "-1"}, "replay.speed (env CRYPTOSTREAM_REPLAY__SPEED)", "greater than or equal to 0"),
        ({"CRYPTOSTREAM_REPLAY__PORT": "70000"}, "replay.port", "less than or equal to 65535"),
        ({"CRYPTOSTREAM_EXCHANGE__WS_URL": "localhost"}, "exchange.ws_url", "must be a URL"),
        ({"CRYPTOSTREAM_BARS__ALLOWED_LATENESS_MS": "soon"}, "bars.allowed_lateness_ms", "valid integer"),
        ({"CRYPTOSTREAM_COLOUR": "blue"}, "colour (env CRYPTOSTREAM_COLOUR)", "not a known setting"),
    ],
)
def test_each_invalid_field_is_named_with_accepted_values(env, field, hint) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(env=env)
    msg = str(err.value)
    assert field in msg
    assert hint in msg


def test_every_bad_field_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(env={"CRYPTOSTREAM_PROFILE": "x", "CRYPTOSTREAM_MODE": "y"})
    assert "profile" in str(err.value) and "mode" in str(err.value)


def test_bad_yaml_and_missing_file_are_named(tmp_path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml", env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("symbols: [\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(bad, env={})


def test_secrets_never_in_repr_or_errors() -> None:
    env = {
        "TIMESCALE_DSN": "postgresql://u:hunter2@h/db",
        "CRYPTOSTREAM_EXCHANGE__API_KEY": "AKIAKEY123",
        "CRYPTOSTREAM_EXCHANGE__API_SECRET": "s3cr3tvalue",
    }
    s = load_settings(env=env)
    text = repr(s) + str(s) + str(s.model_dump())
    for secret in ("hunter2", "AKIAKEY123", "s3cr3tvalue"):
        assert secret not in text
    with pytest.raises(SettingsError) as err:
        load_settings(env={**env, "CRYPTOSTREAM_PROFILE": "bad", "CRYPTOSTREAM_REDIS_URL": 5})
    assert "hunter2" not in str(err.value)


def test_timescale_profile_requires_connection_settings() -> None:
    s = load_settings(env={"CRYPTOSTREAM_PROFILE": "timescale"})
    with pytest.raises(SettingsError, match="TIMESCALE_DSN, REDIS_URL"):
        s.require_servers()


def test_run_id_is_stable_and_ignores_secrets() -> None:
    a = load_settings(env={"CRYPTOSTREAM_EXCHANGE__API_KEY": "k1"})
    b = load_settings(env={"CRYPTOSTREAM_EXCHANGE__API_KEY": "k2"})
    c = load_settings(env={"CRYPTOSTREAM_REPLAY__SEED": "8"})
    assert a.run_id() == b.run_id() != c.run_id()


def test_timeframe_ms() -> None:
    assert timeframe_ms("1m") == 60_000
    assert timeframe_ms("4h") == 4 * 3_600_000
    with pytest.raises(SettingsError):
        timeframe_ms("0m")
