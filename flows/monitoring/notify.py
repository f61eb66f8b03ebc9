"""Notifiers: send alerts to a webhook or a Telegram bot, rate-limited, off the flow's thread.

- :class:`WebhookNotifier` POSTs :meth:`Alert.doc` as JSON.
- :class:`TelegramNotifier` POSTs Telegram Bot API's ``sendMessage``
  (``{api}/bot<token>/sendMessage`` with ``chat_id`` and ``text``), honouring a 429's
  ``parameters.retry_after`` once.
- :class:`Dispatcher` queues alerts and sends them from one daemon thread, so a slow or
  unreachable receiver never stalls the flow.  Each destination has a token bucket of
  ``rate_per_minute``; alerts over it are dropped and counted, and the next message
  sent says how many were suppressed.  A failed send is logged (without the URL: it
  may hold a token) and counted, never raised.
- :class:`AlertLogHandler` turns ERROR log records into ``error`` alerts.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import orjson

from flows.monitoring.alerts import Alert, AlertRouter, AlertSettings

log = logging.getLogger(__name__)


class Notifier(Protocol):
    """Something that delivers one alert (raises on failure)."""

    name: str

    def send(self, alert: Alert) -> None:
        """Deliver ``alert`` or raise."""


def _post(url: str, body: dict[str, Any], timeout: float) -> tuple[int, bytes]:
    """POST ``body`` as JSON; return (status, reply body) for any HTTP status, raise on a network error."""
    req = urllib.request.Request(url, data=orjson.dumps(body), method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "cryptostream-alerts"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (scheme checked by AlertSettings)
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class DeliveryError(RuntimeError):
    """A receiver refused or did not answer (the message names the destination kind, never its URL)."""


@dataclass
class WebhookNotifier:
    """POST each alert's JSON document to ``url``."""

    url: str
    timeout: float = 5.0
    name: str = "webhook"

    def send(self, alert: Alert) -> None:
        """POST the alert; raise :class:`DeliveryError` on a non-2xx reply."""
        status, _ = _post(self.url, alert.doc(), self.timeout)
        if not 200 <= status < 300:
            raise DeliveryError(f"webhook answered HTTP {status}")


@dataclass
class TelegramNotifier:
    """Send each alert's text with the Bot API's ``sendMessage``."""

    token: str
    chat_id: str
    api: str = "https://api.telegram.org"
    timeout: float = 5.0
    name: str = "telegram"
    sleep: Callable[[float], None] = time.sleep

    def send(self, alert: Alert) -> None:
        """Send the alert; on HTTP 429 wait ``retry_after`` (at most 30 s) and try once more."""
        url = f"{self.api.rstrip('/')}/bot{self.token}/sendMessage"
        body = {"chat_id": self.chat_id, "text": alert.line()[:4096], "disable_web_page_preview": True}
        for attempt in (0, 1):
            status, raw = _post(url, body, self.timeout)
            if 200 <= status < 300:
                return
            if status == 429 and attempt == 0:
                try:
                    wait = float(orjson.loads(raw).get("parameters", {}).get("retry_after", 1))
                except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                    wait = 1.0
                self.sleep(min(max(wait, 0.0), 30.0))
                continue
            raise DeliveryError(f"telegram answered HTTP {status}")


class TokenBucket:
    """``rate`` tokens a minute, at most ``rate`` stored; ``take`` spends one if there is one."""

    def __init__(self, rate_per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        """Start full."""
        self.rate, self.clock = rate_per_minute / 60.0, clock
        self.capacity = float(rate_per_minute)
        self.tokens, self.at = self.capacity, clock()

    def take(self) -> bool:
        """Return True and spend a token if one is available."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class _Destination:
    notifier: Notifier
    bucket: TokenBucket
    suppressed: int = 0
    sent: int = 0
    failed: int = 0


_STOP = object()


class Dispatcher:
    """Send alerts to every destination from one background thread, rate-limited per destination."""

    def __init__(self, notifiers: Iterable[Notifier], rate_per_minute: int = 20,
                 clock: Callable[[], float] = time.monotonic, max_queue: int = 10_000) -> None:
        """Start the sending thread."""
        self.destinations = [_Destination(n, TokenBucket(rate_per_minute, clock)) for n in notifiers]
        self.queue: queue.Queue[Any] = queue.Queue(max_queue)
        self.dropped = 0  # the queue was full (the receiver is far behind)
        self.thread = threading.Thread(target=self._run, name="alerts", daemon=True)
        self.thread.start()

    def submit(self, alerts: Iterable[Alert]) -> None:
        """Queue alerts (never blocks: a full queue drops and counts them)."""
        for a in alerts:
            try:
                self.queue.put_nowait(a)
            except queue.Full:
                self.dropped += 1

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is _STOP:
                return
            for d in self.destinations:
                self._deliver(d, item)

    def _deliver(self, d: _Destination, alert: Alert) -> None:
        if not d.bucket.take():
            d.suppressed += 1
            return
        if d.suppressed:
            alert = replace(alert, text=f"{alert.text}\n({d.suppressed} earlier alerts suppressed by the rate limit)",
                            fields={**alert.fields, "suppressed": d.suppressed})
        try:
            d.notifier.send(alert)
        except (OSError, DeliveryError) as exc:  # URLError, timeouts, refused: log, count, go on
            d.failed += 1
            log.warning("alert to %s failed: %s", d.notifier.name, _safe(exc))
            return
        d.sent += 1
        d.suppressed = 0

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (waiting at most ``timeout`` seconds), then stop the thread."""
        self.queue.put(_STOP)
        self.thread.join(timeout)

    def stats(self) -> dict[str, dict[str, int]]:
        """Return sent / failed / suppressed counts per destination."""
        return {d.notifier.name: {"sent": d.sent, "failed": d.failed, "suppressed": d.suppressed}
                for d in self.destinations}


def _safe(exc: BaseException) -> str:
    """Describe a delivery failure without the URL (a Telegram URL holds the bot token)."""
    if isinstance(exc, urllib.error.URLError):
        return f"unreachable ({type(exc.reason).__name__ if not isinstance(exc.reason, str) else exc.reason})"
    return str(exc) if isinstance(exc, DeliveryError) else type(exc).__name__


def notifiers_from(settings: AlertSettings) -> list[Notifier]:
    """Build the destinations the settings name."""
    out: list[Notifier] = []
    if settings.webhook_url is not None:
        out.append(WebhookNotifier(settings.webhook_url.get_secret_value(), settings.timeout_s))
    if settings.telegram_token is not None and settings.telegram_chat_id is not None:
        out.append(TelegramNotifier(settings.telegram_token.get_secret_value(), settings.telegram_chat_id,
                                    settings.telegram_api, settings.timeout_s))
    return out


class Alerts:
    """The router and the dispatcher of one run: ``on_records`` from the decision sink, ``close`` at the end."""

    def __init__(self, settings: AlertSettings, mode: str = "paper",
                 notifiers: Iterable[Notifier] | None = None) -> None:
        """Route the configured events to the configured destinations."""
        self.router = AlertRouter(settings.events, settings.repeat_after_s, mode)
        self.dispatcher = Dispatcher(notifiers_from(settings) if notifiers is None else notifiers,
                                     settings.rate_per_minute)

    def on_records(self, items: Iterable[Any]) -> None:
        """Route one batch of decision records and queue the alerts."""
        alerts = self.router.route(items)
        if alerts:
            self.dispatcher.submit(alerts)

    def close(self) -> None:
        """Deliver what is queued, then stop."""
        self.dispatcher.close()


def open_alerts(settings: AlertSettings, mode: str = "paper") -> Alerts | None:
    """Return the run's :class:`Alerts`, or None when no destination is set."""
    return Alerts(settings, mode) if settings.enabled else None


class AlertLogHandler(logging.Handler):
    """Send ERROR (and worse) log records as ``error`` alerts, through the same dispatcher."""

    def __init__(self, alerts: Alerts, clock: Callable[[], float] = time.time) -> None:
        """Forward to ``alerts`` if it reports ``error`` events."""
        super().__init__(level=logging.ERROR)
        self.alerts, self.clock = alerts, clock

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the record as an alert (formatting errors are the logging module's to report)."""
        if "error" not in self.alerts.router.events:
            return
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            self.handleError(record)
            return
        self.alerts.dispatcher.submit([Alert("error", int(self.clock() * 1000), f"{record.levelname} in "
                                             f"{record.name}", text[:2000], {"logger": record.name})])
