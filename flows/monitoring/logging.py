"""Logging setup: a readable console and a rotating file ``<data_dir>/trading.log`` (text or JSON lines).

The flow's per-bar output is log records, so levels choose how much shows:

- ``flows.status`` at INFO: one status line per bar close (equity, drawdown, fills,
  positions, signals);
- ``flows.bars`` at DEBUG: each closed bar of every timeframe;
- warnings and errors (reconnects, dead letters, failures) at WARNING and above.

The console is quiet by default (``log.level=WARNING``); ``CRYPTOSTREAM_LOG__LEVEL=INFO`` shows
the status lines, ``DEBUG`` every bar.  The file keeps the status lines (``log.file_level=INFO``),
for ``tail -f var/trading.log``; ``log.format=json`` writes one JSON object a line
(``ts``, ``level``, ``logger``, ``msg`` and the record's extra fields).  Every secret setting's
value, and the password inside a DSN or URL, is replaced by ``<secret>`` in both outputs.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TextIO
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

Level = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
MASK = "<secret>"
_HANDLER_NAME = "cryptostream"  # marks the handlers this module installed (replaced on a second call)
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class LogSettings(BaseModel):
    """Where the logs go and how much of the per-bar output they show."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    level: Level = Field("WARNING", description="console level: WARNING = quiet, INFO = a status line per "
                         "bar close, DEBUG = also every closed bar")
    file_level: Level = Field("INFO", description="level of the log file")
    file: Path | None = Field(None, description="log file; unset = <data_dir>/trading.log")
    format: Literal["text", "json"] = Field("text", description="the file's format: text, or JSON lines")
    max_bytes: int = Field(10_000_000, ge=10_000, description="rotate the file at this size")
    backups: int = Field(5, ge=0, description="rotated files kept (trading.log.1 ...)")

    @field_validator("level", "file_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


def model_secrets(model: BaseModel) -> list[SecretStr]:
    """Return every ``SecretStr`` value set in a settings object, at any depth."""
    out: list[SecretStr] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            out.append(value)
        elif isinstance(value, BaseModel):
            out += model_secrets(value)
    return out


def secret_values(secrets: Iterable[SecretStr | str | None]) -> list[str]:
    """Return the strings to mask: each secret's value and the password inside a DSN or URL."""
    out: set[str] = set()
    for s in secrets:
        value = s.get_secret_value() if isinstance(s, SecretStr) else s
        if not value:
            continue
        out.add(value)
        try:
            password = urlsplit(value).password if "://" in value else None
        except ValueError:
            password = None
        match = re.search(r"(?:^|\s)password=(\S+)", value)
        for p in (password, match.group(1) if match else None):
            if p and len(p) >= 4:  # a short password would mask ordinary words
                out.add(p)
    return sorted(out, key=len, reverse=True)  # longest first: a DSN before the password inside it


class Redactor:
    """Replace secret values in text."""

    def __init__(self, values: Iterable[str]) -> None:
        self.values = [v for v in values if v]

    def __call__(self, text: str) -> str:
        for v in self.values:
            if v in text:
                text = text.replace(v, MASK)
        return text


class TextFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL logger: message`` (the file adds the date), secrets masked."""

    def __init__(self, redact: Redactor, datefmt: str) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt)
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        """Format the record and mask secrets in the result (message, arguments, traceback)."""
        return self.redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (UTC ISO 8601), level, logger, msg, extra fields, exc; secrets masked."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as one line of JSON."""
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "msg": self.redact(record.getMessage())}
        for k, v in vars(record).items():
            if k not in _STANDARD and not k.startswith("_"):
                doc[k] = self.redact(v) if isinstance(v, str) else v
        if record.exc_info:
            doc["exc"] = self.redact(self.formatException(record.exc_info))
        return self.redact(json.dumps(doc, default=str))


def log_file(settings: LogSettings, data_dir: Path) -> Path:
    """Return the log file of these settings (``<data_dir>/trading.log`` unless set)."""
    return settings.file or data_dir / "trading.log"


def configure_logging(settings: LogSettings, data_dir: Path, secrets: Iterable[SecretStr | str | None] = (),
                      console: TextIO | None = None) -> Path:
    """Install the console and rotating-file handlers on the root logger; return the file's path.

    Calling it again replaces the handlers it installed before (tests, a second run in-process).
    """
    redact = Redactor(secret_values(secrets))
    root = logging.getLogger()
    for h in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(h)
        h.close()
    path = log_file(settings, data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.handlers.RotatingFileHandler(path, maxBytes=settings.max_bytes, backupCount=settings.backups,
                                                   encoding="utf-8")
    to_file.setLevel(settings.file_level)
    to_file.setFormatter(JsonFormatter(redact) if settings.format == "json"
                         else TextFormatter(redact, "%Y-%m-%dT%H:%M:%S"))
    to_console = logging.StreamHandler(console or sys.stderr)
    to_console.setLevel(settings.level)
    to_console.setFormatter(TextFormatter(redact, "%H:%M:%S"))
    for h in (to_file, to_console):
        h.set_name(_HANDLER_NAME)
        root.addHandler(h)
    lowest = min(logging.getLevelName(settings.level), logging.getLevelName(settings.file_level))
    root.setLevel(max(lowest, logging.INFO))  # DEBUG is for this project's loggers, not every library's
    logging.getLogger("flows").setLevel(lowest)
    logging.captureWarnings(True)
    return path
