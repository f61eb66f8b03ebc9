"""The exchange side of the live broker: keys, the signed ccxt client, and reading exchange orders back.

Keys come from ``ExchangeSettings`` (the environment) or ``execution.live.secrets_file``
(JSON or TOML with ``api_key`` and ``api_secret``); they are handed to the ccxt
client only, and :class:`Redact` masks them in ccxt's own debug log (which
prints request headers).  :func:`intent_from_report` recognises our orders by
their client ids (see :func:`~flows.execution.orders.client_order_id`).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import ccxt

from flows.execution.config import ExecutionConfig
from flows.execution.orders import LEG_CODES, client_order_id
from flows.records import OrderIntent
from flows.settings import ExchangeSettings, SettingsError

_FROM_BINANCE = {"STOP_LOSS": "stop_market", "STOP_LOSS_LIMIT": "stop_limit", "TAKE_PROFIT": "take_profit",
                 "TAKE_PROFIT_LIMIT": "take_profit_limit", "LIMIT_MAKER": "limit"}
_LEG_BY_CODE = {v: k for k, v in LEG_CODES.items()}
_HASHED_ID = re.compile(r"^[A-Za-z0-9_-]{1,8}\.[0-9a-f]{27}$")


def load_keys(exchange: ExchangeSettings, secrets_file: Path | None) -> tuple[str, str]:
    """Return (api_key, api_secret) from the environment settings, else from the secrets file.

    Raises:
        SettingsError: naming the missing setting or the file's missing field (never a value).
    """
    if exchange.api_key is not None and exchange.api_secret is not None:
        return exchange.api_key.get_secret_value(), exchange.api_secret.get_secret_value()
    if secrets_file is None:
        raise SettingsError("live broker: set CRYPTOSTREAM_EXCHANGE__API_KEY and CRYPTOSTREAM_EXCHANGE__API_SECRET "
                            "or execution.live.secrets_file")
    import tomllib  # stdlib from Python 3.11

    path = Path(secrets_file)
    try:
        text = path.read_text()
        doc = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, ValueError) as exc:
        raise SettingsError(f"execution.live.secrets_file {path}: cannot read it as "
                            f"{'TOML' if path.suffix == '.toml' else 'JSON'} ({type(exc).__name__})") from None
    missing = [k for k in ("api_key", "api_secret") if not isinstance(doc.get(k), str) or not doc[k].strip()]
    if missing:
        raise SettingsError(f"execution.live.secrets_file {path}: missing {' and '.join(missing)}")
    return doc["api_key"], doc["api_secret"]


class Redact(logging.Filter):
    """Mask the given strings in log records (ccxt logs request headers, the API key among them, at DEBUG)."""

    def __init__(self, *secrets: str) -> None:
        """Mask ``secrets`` (empty strings are ignored)."""
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message without the secrets; never drop the record."""
        msg = record.getMessage()
        if any(s in msg for s in self.secrets):
            for s in self.secrets:
                msg = msg.replace(s, "***")
            record.msg, record.args = msg, ()
        return True


def make_client(config: ExecutionConfig, exchange: ExchangeSettings) -> ccxt.Exchange:
    """Return the signed ccxt binance client (on the replay exchange when ``exchange.http_url`` is set)."""
    from flows.exchange.binance import make_binance

    key, secret = load_keys(exchange, config.live.secrets_file)
    ccxt_log, redact = logging.getLogger("ccxt.base.exchange"), Redact(key, secret)
    if not any(isinstance(f, Redact) and f.secrets == redact.secrets for f in ccxt_log.filters):
        ccxt_log.addFilter(redact)
    return make_binance(exchange.http_url, exchange.ws_url, apiKey=key, secret=secret, enableRateLimit=True,
                        timeout=config.live.timeout_ms,
                        options={"recvWindow": config.live.recv_window_ms,
                                 "warnOnFetchOpenOrdersWithoutSymbol": False})


def intent_from_report(report: dict[str, Any]) -> OrderIntent:
    """Rebuild the intent of an exchange order (strategy, bar and leg from our client id when it is one)."""
    info = report.get("info", {})
    cid = str(report.get("clientOrderId") or info.get("clientOrderId") or "")
    strategy, bar_ts, leg = "external", int(report.get("timestamp") or 0), "entry"
    parts = cid.split(".")
    if len(parts) == 4 and parts[3] in _LEG_BY_CODE:
        try:
            parsed = (parts[0], int(parts[2], 36), _LEG_BY_CODE[parts[3]])
            if client_order_id(parsed[0], str(report["symbol"]), parsed[1], parsed[2]) == cid:
                strategy, bar_ts, leg = parsed
        except ValueError:
            pass  # not an id of ours
    elif _HASHED_ID.match(cid):  # ours, too long to spell out: bar and leg are not recoverable
        strategy = parts[0]
    kind = _FROM_BINANCE.get(str(info.get("type", "")).upper(), str(report.get("type") or "market"))
    stop = float(info["stopPrice"]) if float(info.get("stopPrice") or 0) > 0 else None
    price = report.get("price") if kind in ("limit", "stop_limit", "take_profit_limit") else None
    return OrderIntent(strategy, str(report["symbol"]), str(report["side"]), float(report["amount"]), kind,
                       float(price) if price else None, stop, bar_ts, leg, "adopted from the exchange")
