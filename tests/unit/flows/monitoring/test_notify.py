"""Notifiers against a real HTTP receiver on loopback (flows/monitoring/notify.py)."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest

from flows.monitoring.alerts import Alert, AlertSettings
from flows.monitoring.notify import (
    AlertLogHandler,
    Alerts,
    DeliveryError,
    Dispatcher,
    TelegramNotifier,
    TokenBucket,
    WebhookNotifier,
    notifiers_from,
)
from flows.records import Fill
from flows.risk.engine import Rejection
from flows.settings import load_settings
from flows.sinks.decisions import DecisionSink
from tests.kit.http_receiver import receiver

ALERT = Alert("halt", 1_700_000_000_000, "max_drawdown halt", "drawdown 15% reached the limit", {"rule": "x"})


def test_webhook_posts_the_alert_as_json() -> None:
    with receiver() as got:
        WebhookNotifier(got.url + "/hook").send(ALERT)
        got.replies.append((500, {"error": "down"}))
        with pytest.raises(DeliveryError, match="HTTP 500"):
            WebhookNotifier(got.url + "/hook").send(ALERT)
    path, body = got.requests[0]
    assert path == "/hook"
    assert body == {"event": "halt", "ts": 1_700_000_000_000, "time": "2023-11-14 22:13 UTC",
                    "title": "max_drawdown halt", "text": "drawdown 15% reached the limit", "fields": {"rule": "x"}}


def test_telegram_sendmessage_format_and_retry_after() -> None:
    waits: list[float] = []
    with receiver() as got:
        got.replies.append((429, {"ok": False, "error_code": 429, "parameters": {"retry_after": 3}}))
        TelegramNotifier("123:ABC", "-1001", got.url, sleep=waits.append).send(ALERT)
    assert waits == [3.0]
    assert [p for p, _ in got.requests] == ["/bot123:ABC/sendMessage"] * 2
    body = got.requests[1][1]
    assert body["chat_id"] == "-1001" and body["text"] == "[halt] max_drawdown halt\ndrawdown 15% reached the limit"


def test_rate_limit_suppresses_and_reports_the_count() -> None:
    now = [0.0]
    with receiver() as got:
        d = Dispatcher([WebhookNotifier(got.url)], rate_per_minute=2, clock=lambda: now[0])
        d.submit([ALERT] * 5)
        d.close()
        assert len(got.requests) == 2 and d.stats()["webhook"] == {"sent": 2, "failed": 0, "suppressed": 3}
        now[0] = 30.0  # one token back
        d = Dispatcher([WebhookNotifier(got.url)], rate_per_minute=2, clock=lambda: now[0])
        d.destinations[0].bucket.tokens, d.destinations[0].suppressed = 0.0, 3
        d.destinations[0].bucket.at = 0.0
        d.submit([ALERT])
        d.close()
    last = got.requests[-1][1]
    assert last["fields"]["suppressed"] == 3 and "3 earlier alerts suppressed" in last["text"]


def test_token_bucket_refills_at_the_rate() -> None:
    now = [0.0]
    b = TokenBucket(60, clock=lambda: now[0])
    assert sum(b.take() for _ in range(100)) == 60
    now[0] = 10.0
    assert sum(b.take() for _ in range(100)) == 10


def test_an_unreachable_receiver_is_logged_without_its_url(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    d = Dispatcher([TelegramNotifier("999:SECRETTOKEN", "1", f"http://127.0.0.1:{port}", timeout=2)])
    with caplog.at_level(logging.WARNING):
        d.submit([ALERT])
        d.close()
    assert d.stats()["telegram"]["failed"] == 1
    assert "alert to telegram failed" in caplog.text and "SECRETTOKEN" not in caplog.text


def test_error_logs_become_alerts() -> None:
    with receiver() as got:
        alerts = Alerts(AlertSettings(webhook_url=got.url), notifiers=[WebhookNotifier(got.url)])
        logger = logging.getLogger("flows.test_notify")
        handler = AlertLogHandler(alerts, clock=lambda: 1_700_000_000.0)
        logger.addHandler(handler)
        try:
            logger.warning("not sent")
            logger.error("store write failed: %s", "connection refused")
        finally:
            logger.removeHandler(handler)
        alerts.close()
    assert [b["event"] for _, b in got.requests] == ["error"]
    assert got.requests[0][1]["text"] == "store write failed: connection refused"


def test_decision_sink_sends_alerts_for_its_records(tmp_path: Path) -> None:
    """The flow's own decision sink (local profile) routes its records to both destinations."""
    with receiver() as got:
        settings = load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp_path),
                                      "CRYPTOSTREAM_ALERTS__WEBHOOK_URL": got.url + "/hook",
                                      "CRYPTOSTREAM_ALERTS__TELEGRAM_TOKEN": "1:T",
                                      "CRYPTOSTREAM_ALERTS__TELEGRAM_CHAT_ID": "7",
                                      "CRYPTOSTREAM_ALERTS__TELEGRAM_API": got.url})
        assert [n.name for n in notifiers_from(settings.alerts)] == ["webhook", "telegram"]
        ts = 1_700_000_000_000
        part = DecisionSink(settings).open()
        part.write_batch([Fill("t9", "cid-9", ts, "ETH/USDT", "sell", 0.5, 2_000.0, 1.0, "USDT", "taker"),
                          Rejection("*", ts, "max_drawdown:halt", "drawdown 15.1% reached the limit 15.00%",
                                    0.0, 0.0),
                          Rejection("ETH/USDT", ts, "max_position", "cut", 1.0, 0.5)])
        part.close()
        deadline = time.monotonic() + 5
        while len(got.requests) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    hooks = [b for p, b in got.requests if p == "/hook"]
    texts = [b["text"] for p, b in got.requests if p.endswith("/sendMessage")]
    assert [h["event"] for h in hooks] == ["fill", "halt"]
    assert texts[0].startswith("[fill] paper sell 0.5 ETH/USDT @ 2000") and texts[1].startswith("[halt]")
    assert (tmp_path / "decisions" / "fills").is_dir()  # the records were stored as well
