"""``python -m flows.monitoring.dashboard``: settings checked before Streamlit starts; the dashboard's settings."""

from __future__ import annotations

import pytest

from flows.monitoring.dashboard.__main__ import APP, main, streamlit_argv
from flows.settings import SettingsError, load_settings


def test_a_bad_port_stops_the_launcher_with_exit_2_naming_the_setting(capsys: pytest.CaptureFixture[str],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRYPTOSTREAM_DASHBOARD__PORT", raising=False)
    assert main(["--port", "70000"]) == 2
    assert "CRYPTOSTREAM_DASHBOARD__PORT" in capsys.readouterr().err


def test_the_timescale_profile_without_servers_stops_the_launcher_with_exit_2(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYPTOSTREAM_PROFILE", "timescale")
    monkeypatch.delenv("TIMESCALE_DSN", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main([]) == 2
    assert "TIMESCALE_DSN" in capsys.readouterr().err


def test_streamlit_serves_the_app_on_the_configured_loopback_port_headless() -> None:
    argv = streamlit_argv("127.0.0.1", 8501)
    assert argv[:3] == ["streamlit", "run", str(APP)] and APP.is_file()
    flags = dict(zip(argv[3::2], argv[4::2], strict=True))
    assert flags["--server.address"] == "127.0.0.1" and flags["--server.port"] == "8501"
    assert flags["--server.headless"] == "true" and flags["--browser.gatherUsageStats"] == "false"


def test_dashboard_settings_default_to_loopback_8501_and_stay_out_of_the_run_id() -> None:
    default = load_settings(env={})
    moved = load_settings(env={"CRYPTOSTREAM_DASHBOARD__PORT": "9000", "CRYPTOSTREAM_DASHBOARD__REPORT_DIRS": "/a,/b"})
    assert (default.dashboard.address, default.dashboard.port) == ("127.0.0.1", 8501)
    assert moved.dashboard.port == 9000 and [str(p) for p in moved.dashboard.report_dirs] == ["/a", "/b"]
    assert moved.run_id() == default.run_id()
    with pytest.raises(SettingsError, match="CRYPTOSTREAM_DASHBOARD__REFRESH_S"):
        load_settings(env={"CRYPTOSTREAM_DASHBOARD__REFRESH_S": "0"})
