"""Settings: defaults, sources, and one clear message per invalid field."""

from __future__ import annotations

import pytest

from flows.settings import SettingsError, load_settings
from flows.timeframes import timeframe_ms


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


def test_scoring_defaults_and_registry_root(tmp_path) -> None:
    s = load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp_path), "CRYPTOSTREAM_SCORING__POLICY_FAMILY": ""})
    assert s.registry_root() == tmp_path / "registry"
    assert s.trading_timeframe() == "1m" and s.scoring.policy_family is None
    with pytest.raises(SettingsError, match="scoring.confidence_threshold"):
        load_settings(env={"CRYPTOSTREAM_SCORING__CONFIDENCE_THRESHOLD": "2"})


def _Execution(broker="paper", **live):  # noqa: N802 - reads like the config it builds
    from flows.execution.config import ExecutionConfig, LiveConfig

    return ExecutionConfig(broker=broker, live=LiveConfig(**live))


def test_paper_is_the_default_and_a_live_broker_needs_mode_live() -> None:
    from flows.settings import check_live_guard

    s = load_settings(env={})
    check_live_guard(s, _Execution())
    with pytest.raises(SettingsError, match="needs mode=live"):
        check_live_guard(s, _Execution("live", confirm=True, max_capital=100.0))


def test_live_needs_confirmation_capital_and_keys_and_names_each_field(tmp_path) -> None:
    from flows.settings import check_live_guard

    s = load_settings(env={"CRYPTOSTREAM_MODE": "live"})
    with pytest.raises(SettingsError) as err:
        check_live_guard(s, _Execution("live"))
    msg = str(err.value)
    for field in ("execution.live.confirm", "execution.live.max_capital", "exchange.api_key"):
        assert field in msg
    keyed = load_settings(env={"CRYPTOSTREAM_MODE": "live", "CRYPTOSTREAM_EXCHANGE__API_KEY": "k-123-secret",
                               "CRYPTOSTREAM_EXCHANGE__API_SECRET": "s-456-secret"})
    with pytest.raises(SettingsError) as err:
        check_live_guard(keyed, _Execution("live", max_capital=500.0))
    assert "confirm" in str(err.value) and "k-123" not in str(err.value) and "s-456" not in str(err.value)
    check_live_guard(keyed, _Execution("live", confirm=True, max_capital=500.0))
    with pytest.raises(SettingsError, match="secrets_file"):
        check_live_guard(s, _Execution("live", confirm=True, max_capital=5.0, secrets_file=tmp_path / "none"))
    (tmp_path / "keys").write_text("x")
    check_live_guard(s, _Execution("live", confirm=True, max_capital=5.0, secrets_file=tmp_path / "keys"))


def test_risk_and_execution_embed_their_components_configs() -> None:
    s = load_settings(env={})
    for field, module in (("risk", "flows.risk.config"), ("execution", "flows.execution.config")):
        assert type(getattr(s, field)).__module__ == module
        with pytest.raises(SettingsError, match=field):
            load_settings(env={f"CRYPTOSTREAM_{field.upper()}__NO_SUCH_FIELD": "1"})


@pytest.mark.parametrize(("env", "names"), [
    ({"CRYPTOSTREAM_BARS__TIMEFRAMES": "1m,2m"}, ["bars.timeframes: 2m has no feature views", "1m, 5m, 1h"]),
    ({"CRYPTOSTREAM_BARS__TIMEFRAMES": "5m", "CRYPTOSTREAM_SCORING__TIMEFRAME": "1m"},
     ["scoring.timeframe: 1m is not built", "bars.timeframes is 5m"]),
])
def test_cross_field_checks(env: dict[str, str], names: list[str]) -> None:
    """Timeframes without Feast views, and a scored timeframe that is not built, stop at start (issue 18)."""
    with pytest.raises(SettingsError) as err:
        load_settings(env=env)
    text = str(err.value)
    assert all(n in text for n in names) and "CRYPTOSTREAM_ =" not in text
    assert load_settings(env={"CRYPTOSTREAM_BARS__TIMEFRAMES": "1m,1h",
                              "CRYPTOSTREAM_SCORING__TIMEFRAME": "1h"}).trading_timeframe() == "1h"
