"""The alert router: which decision records become alerts (flows/monitoring/alerts.py)."""

from __future__ import annotations

import pytest

from flows.monitoring.alerts import AlertRouter, AlertSettings
from flows.records import Fill, PortfolioRow
from flows.risk.engine import Rejection
from flows.settings import SettingsError, load_settings

H = 3_600_000
DAY = 86_400_000


def _fill(ts: int, fee: float = 0.1) -> Fill:
    return Fill("t1", "cid-1", ts, "BTC/USDT", "buy", 0.01, 50_000.0, fee, "USDT", "taker")


def test_fills_halts_and_releases_are_alerts_limits_are_not() -> None:
    r = AlertRouter()
    alerts = r.route([
        _fill(H),
        Rejection("*", H, "max_drawdown:halt", "drawdown 15% reached the limit", 0.0, 0.0),
        Rejection("BTC/USDT", H, "max_position", "cut to the position cap", 1.0, 0.5),
        Rejection("*", 2 * H, "max_drawdown:probation", "cooldown over", 0.0, 0.0),
        Rejection("*", 3 * H, "kelly:release", "record positive again", 0.0, 0.0),
    ])
    assert [a.event for a in alerts] == ["fill", "halt", "release", "release"]
    assert "buy 0.01 BTC/USDT @ 50000" in alerts[0].title
    assert alerts[1].title == "max_drawdown halt" and "15%" in alerts[1].text


def test_a_breaker_is_reported_when_it_trips_not_at_every_close() -> None:
    r = AlertRouter(repeat_after_s=3 * 3600)
    per_close = [r.route([Rejection("ETH/USDT", k * H, "stale_data", "no bar for 3 bars", 1.0, 0.0)])
                 for k in range(1, 6)]
    assert [len(a) for a in per_close] == [1, 0, 0, 0, 0]
    assert per_close[0][0].event == "breaker" and per_close[0][0].title == "stale_data tripped on ETH/USDT"
    # another symbol trips on its own; the first trips again after a quiet spell longer than repeat_after_s
    assert len(r.route([Rejection("SOL/USDT", 5 * H, "stale_data", "x", 1.0, 0.0)])) == 1
    again = r.route([Rejection("ETH/USDT", 9 * H, "stale_data", "again", 1.0, 0.0)])
    assert [a.text for a in again] == ["again"]


def test_kill_switch_once_per_engagement() -> None:
    r = AlertRouter(repeat_after_s=0)
    a = r.route([Rejection("BTC/USDT", H, "kill_switch", "kill switch engaged: no new risk", 1.0, 0.0)])
    b = r.route([Rejection("BTC/USDT", H, "kill_switch", "kill switch engaged: no new risk", 1.0, 0.0)])
    assert [x.event for x in a] == ["kill_switch"] and b == []


def test_daily_summary_at_the_first_row_of_a_new_day() -> None:
    r = AlertRouter()
    start = 20_000 * DAY
    out = r.route([PortfolioRow(start + H, {"equity": 10_000.0}), _fill(start + 2 * H, fee=1.5),
                   Rejection("*", start + 3 * H, "max_daily_loss:halt", "loss", 0.0, 0.0),
                   PortfolioRow(start + 23 * H, {"equity": 10_250.0})])
    assert [a.event for a in out] == ["fill", "halt"]
    out = r.route([PortfolioRow(start + DAY + H, {"equity": 10_300.0})])
    assert [a.event for a in out] == ["daily_summary"]
    s = out[0]
    assert s.fields["pnl"] == pytest.approx(250.0) and s.fields["fills"] == 1 and s.fields["fees"] == 1.5
    assert s.fields["risk_events"] == ["max_daily_loss:halt"]
    assert "+2.50%" in s.text
    # the next day's P&L counts from the previous day's close
    out = r.route([PortfolioRow(start + 2 * DAY, {"equity": 10_100.0})])
    assert out[0].fields["pnl"] == pytest.approx(10_300.0 - 10_250.0)


def test_events_filter() -> None:
    r = AlertRouter(events=("halt",))
    out = r.route([_fill(H), Rejection("*", H, "max_drawdown:halt", "x", 0.0, 0.0)])
    assert [a.event for a in out] == ["halt"]


def test_settings_validate_and_never_echo_secrets() -> None:
    assert not load_settings(env={}).alerts.enabled
    s = load_settings(env={"CRYPTOSTREAM_ALERTS__TELEGRAM_TOKEN": "123:abcSECRET",
                           "CRYPTOSTREAM_ALERTS__TELEGRAM_CHAT_ID": "42"})
    assert s.alerts.enabled and "abcSECRET" not in repr(s)
    for env, needle in [
        ({"CRYPTOSTREAM_ALERTS__WEBHOOK_URL": "http://hooks.example.com/x?token=tok123SECRET"}, "https"),
        ({"CRYPTOSTREAM_ALERTS__WEBHOOK_URL": "ftp://tok123SECRET@example.com"}, "http(s) URL"),
        ({"CRYPTOSTREAM_ALERTS__TELEGRAM_TOKEN": "tok123SECRET"}, "telegram_chat_id"),
        ({"CRYPTOSTREAM_ALERTS__EVENTS": "fill,bogus"}, "alerts.events"),
        ({"CRYPTOSTREAM_ALERTS__RATE_PER_MINUTE": "0"}, "alerts.rate_per_minute"),
    ]:
        with pytest.raises(SettingsError) as err:
            load_settings(env=env)
        assert needle in str(err.value) and "tok123SECRET" not in str(err.value)


def test_alert_settings_do_not_change_the_run_id() -> None:
    plain = load_settings(env={})
    alerting = load_settings(env={"CRYPTOSTREAM_ALERTS__WEBHOOK_URL": "https://hooks.example.com/x"})
    assert plain.run_id() == alerting.run_id()
    assert AlertSettings().events[0] == "fill"
