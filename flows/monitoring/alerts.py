"""Alerts: which decision records deserve a message, as a pure state machine.

:class:`AlertRouter` takes the records the decision sink writes (fills, risk events,
portfolio rows) and returns :class:`Alert` values for the events an operator wants
pushed to them:

- ``fill``: every fill;
- ``halt`` / ``release``: a drawdown, daily-loss or Kelly halt, a move to probation, a
  release, and a live run's gate override (``<rule>:<kind>`` risk events);
- ``breaker``: a circuit breaker tripping (``stale_data``, ``price_gap``,
  ``volatility_spike``) for a symbol;
- ``kill_switch``: the kill switch seen engaged at a close;
- ``daily_summary``: at the first portfolio row of a new UTC day, the previous day's
  equity, P&L, fills and fees;
- ``error``: sent by :class:`flows.monitoring.notify.AlertLogHandler` from ERROR logs;
- ``drift``: sent by ``python -m training.drift`` when features or calibration drift;
- ``model``: a retraining step, a promotion or a refused challenger (sent by ``training.retrain``,
  :func:`model_alert`).

Breakers and the kill switch refuse a decision at every close while they hold, so the
router reports a (symbol, rule) only when it was quiet for ``repeat_after_s`` of bar
time before: a trip, not each bar of it.  Sending (rate limits, HTTP) is
:mod:`flows.monitoring.notify`'s job.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from flows.records import Fill, PortfolioRow

Event = Literal["fill", "halt", "release", "breaker", "kill_switch", "error", "daily_summary", "drift", "model"]
EVENTS: tuple[Event, ...] = ("fill", "halt", "release", "breaker", "kill_switch", "error", "daily_summary", "drift",
                              "model")
BREAKERS = frozenset({"stale_data", "price_gap", "volatility_spike"})
_HALT = re.compile(r"^(?P<rule>[a-z_]+):(?P<kind>halt|probation|release|override)$")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class AlertSettings(BaseModel):
    """Where alerts go, which events, and how many per minute (``CRYPTOSTREAM_ALERTS__...``).

    No destination set means no alerts.  A Telegram bot needs ``telegram_token`` (secret)
    and ``telegram_chat_id``; ``telegram_api`` is Telegram's Bot API over HTTPS (plain
    HTTP is accepted only on loopback, for tests).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    webhook_url: SecretStr | None = Field(None, description="POST each alert as JSON here (may carry a token)")
    telegram_token: SecretStr | None = Field(None, description="Telegram bot token")
    telegram_chat_id: str | None = Field(None, description="Telegram chat to send to")
    telegram_api: str = Field("https://api.telegram.org", description="Telegram Bot API base URL")
    events: tuple[Event, ...] = Field(EVENTS, description="which events are sent")
    rate_per_minute: int = Field(20, ge=1, le=600, description="at most this many messages a minute per "
                                 "destination; the rest are counted and reported with the next one sent")
    repeat_after_s: float = Field(3600.0, ge=0.0, description="a breaker or the kill switch is reported again "
                                  "only after this much bar time without it")
    timeout_s: float = Field(5.0, gt=0.0, le=60.0, description="HTTP timeout per message")

    @model_validator(mode="after")
    def _check(self) -> AlertSettings:
        if (self.telegram_token is None) != (self.telegram_chat_id is None):
            raise ValueError("telegram_token and telegram_chat_id go together: set both or neither")
        if self.webhook_url is not None:
            _check_url(self.webhook_url.get_secret_value(), "webhook_url")
        if self.telegram_token is not None:
            _check_url(self.telegram_api, "telegram_api")
            if not self.telegram_token.get_secret_value().strip():
                raise ValueError("telegram_token is empty")
        return self

    @property
    def enabled(self) -> bool:
        """Whether any destination is set."""
        return self.webhook_url is not None or self.telegram_token is not None


def _check_url(url: str, name: str) -> None:
    """Require http(s) with a host; plain http only on loopback (the value is never echoed: it may hold a token)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name} must be an http(s) URL with a host")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise ValueError(f"{name} must use https (plain http only on loopback)")


@dataclass(frozen=True)
class Alert:
    """One message: ``event`` (one of :data:`EVENTS`), a one-line ``title``, a ``text`` and its figures."""

    event: str
    ts: int  # ms, the bar close (or wall clock for errors)
    title: str
    text: str
    fields: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """Return the plain-text form (Telegram's message, a log line)."""
        return f"[{self.event}] {self.title}\n{self.text}" if self.text else f"[{self.event}] {self.title}"

    def doc(self) -> dict[str, Any]:
        """Return the JSON form (the webhook's body)."""
        return {"event": self.event, "ts": self.ts, "time": _when(self.ts), "title": self.title, "text": self.text,
                "fields": self.fields}


def _when(ms: int) -> str:
    return f"{datetime.fromtimestamp(ms / 1000, tz=timezone.utc):%Y-%m-%d %H:%M} UTC"


@dataclass
class _Day:
    day: int | None = None  # UTC day number of the rows seen
    open_equity: float | None = None
    equity: float | None = None
    fills: int = 0
    fees: float = 0.0
    notional: float = 0.0
    events: list[str] = field(default_factory=list)


class AlertRouter:
    """Turn decision records into alerts (pure: no clock, no I/O)."""

    def __init__(self, events: Iterable[str] = EVENTS, repeat_after_s: float = 3600.0, mode: str = "paper") -> None:
        """Report the ``events`` named; a breaker or kill switch again after ``repeat_after_s`` of bar time."""
        self.events = frozenset(events)
        self.repeat_ms = int(repeat_after_s * 1000)
        self.mode = mode
        self.last_seen: dict[tuple[str, str], int] = {}
        self.today = _Day()

    def route(self, items: Iterable[Any]) -> list[Alert]:
        """Return the alerts for one batch of decision records, in record order."""
        out: list[Alert] = []
        for it in items:
            if isinstance(it, Fill):
                self._fill(it, out)
            elif isinstance(it, PortfolioRow):
                self._portfolio(it, out)
            elif hasattr(it, "rule") and hasattr(it, "allowed"):  # flows.risk.engine.Rejection
                self._risk(it, out)
        return [a for a in out if a.event in self.events]

    def _fill(self, f: Fill, out: list[Alert]) -> None:
        d = self.today
        d.fills += 1
        d.fees += f.fee
        d.notional += f.qty * f.price
        out.append(Alert("fill", f.ts, f"{self.mode} {f.side} {f.qty:.6g} {f.symbol} @ {f.price:.6g}",
                         f"fee {f.fee:.4f} ({f.liquidity}), order {f.client_order_id}",
                         {"symbol": f.symbol, "side": f.side, "qty": f.qty, "price": f.price, "fee": f.fee,
                          "client_order_id": f.client_order_id}))

    def _risk(self, r: Any, out: list[Alert]) -> None:
        rule, ts = str(r.rule), int(r.bar_ts)
        m = _HALT.match(rule)
        if m:
            kind = m["kind"]
            event = "halt" if kind in ("halt", "override") else "release"
            self.today.events.append(rule)
            out.append(Alert(event, ts, f"{m['rule']} {kind}", str(r.reason), {"rule": rule, "symbol": r.symbol}))
            return
        if rule not in BREAKERS and rule != "kill_switch":
            return  # limits cutting a decision are routine, not alerts
        key = (str(r.symbol), rule)
        last = self.last_seen.get(key)
        self.last_seen[key] = ts
        if last is not None and ts - last <= self.repeat_ms:
            return
        if rule == "kill_switch":
            out.append(Alert("kill_switch", ts, "kill switch engaged", str(r.reason), {"rule": rule}))
        else:
            out.append(Alert("breaker", ts, f"{rule} tripped on {r.symbol}", str(r.reason),
                             {"rule": rule, "symbol": r.symbol}))

    def _portfolio(self, p: PortfolioRow, out: list[Alert]) -> None:
        d = self.today
        day = p.ts // 86_400_000
        equity = float(p.state["equity"])
        if d.day is not None and day != d.day and d.open_equity is not None and d.equity is not None:
            out.append(self._summary(d, p.ts))
            self.today = d = _Day(open_equity=d.equity)
        if d.day is None or day != d.day:
            d.day = day
            if d.open_equity is None:
                d.open_equity = equity
        d.equity = equity

    def _summary(self, d: _Day, ts: int) -> Alert:
        assert d.day is not None and d.open_equity is not None and d.equity is not None
        pnl = d.equity - d.open_equity
        date = f"{datetime.fromtimestamp(d.day * 86_400, tz=timezone.utc):%Y-%m-%d}"
        halts = ", ".join(d.events) if d.events else "none"
        text = (f"equity {d.equity:,.2f} ({pnl:+,.2f}, {pnl / d.open_equity:+.2%}); {d.fills} fills, "
                f"{d.notional:,.2f} traded, fees {d.fees:,.2f}; halts/releases: {halts}")
        return Alert("daily_summary", ts, f"{self.mode} day {date}", text,
                     {"date": date, "equity": d.equity, "pnl": pnl, "fills": d.fills, "fees": d.fees,
                      "notional": d.notional, "risk_events": list(d.events)})


def model_alert(kind: str, timeframe: str, ok: bool, text: str, ts_ms: int, fields: dict[str, Any]) -> Alert:
    """Return the ``model`` alert of one registry event (a retraining step, a promotion, a refusal)."""
    return Alert("model", ts_ms, f"{timeframe} {kind}{'' if ok else ' FAILED'}", text, fields)
