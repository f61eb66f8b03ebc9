"""flows/monitoring/logging.py: the rotating trading.log (text or JSON lines), console levels, secrets masked."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.monitoring.logging import LogSettings, configure_logging, model_secrets, secret_values
from flows.settings import load_settings

SECRETS = {"TIMESCALE_DSN": "postgresql://trader:pg-Pa55word-x@127.0.0.1:55432/cryptostream",
           "REDIS_URL": "redis://:redis-S3cret-y@127.0.0.1:6379/0",
           "CRYPTOSTREAM_EXCHANGE__API_KEY": "apikey-0123456789abcdef",
           "CRYPTOSTREAM_EXCHANGE__API_SECRET": "apisecret-fedcba9876543210"}
NEEDLES = (*SECRETS.values(), "pg-Pa55word-x", "redis-S3cret-y")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(h)
        h.close()
    root.setLevel(level)
    logging.getLogger("flows").setLevel(logging.NOTSET)


def _log_everything_secret(settings) -> None:
    """Log the secrets every way a careless line of code might: message, arguments, extra, traceback."""
    log = logging.getLogger("flows.sources.binance_ws")
    dsn = settings.timescale_dsn.get_secret_value()
    log.warning("connecting to %s", dsn)
    log.warning(f"redis at {settings.redis_url.get_secret_value()}")
    log.info("key %s secret %s", settings.exchange.api_key.get_secret_value(),
             settings.exchange.api_secret.get_secret_value(), extra={"dsn": dsn})
    try:
        raise ConnectionError(f"password authentication failed: {dsn}")
    except ConnectionError:
        log.exception("store down")
    log.info("the password alone: pg-Pa55word-x")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_secret_setting_reaches_the_log_file_or_the_console(tmp_path: Path, fmt: str) -> None:
    env = {**SECRETS, "CRYPTOSTREAM_DATA_DIR": str(tmp_path), "CRYPTOSTREAM_LOG__FORMAT": fmt}
    settings = load_settings(env=env)
    console = io.StringIO()
    path = configure_logging(settings.log, settings.data_dir, model_secrets(settings), console=console)
    _log_everything_secret(settings)
    text = path.read_text()
    assert path == tmp_path / "trading.log"
    assert text.count("<secret>") >= 6 and "store down" in text and "ConnectionError" in text
    for needle in NEEDLES:
        assert needle not in text, f"{needle} in the log file"
        assert needle not in console.getvalue(), f"{needle} on the console"
    if fmt == "json":
        rows = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert [r["level"] for r in rows][:2] == ["WARNING", "WARNING"]
        assert rows[2]["dsn"] == "<secret>" and "exc" in rows[3] and rows[0]["logger"].startswith("flows.")


def test_the_console_is_quiet_by_default_and_levels_choose_the_per_bar_output(tmp_path: Path) -> None:
    """Default: no status or bar line on the console, status lines in the file; INFO/DEBUG show more."""
    def run(level: str | None) -> tuple[str, str]:
        console = io.StringIO()
        settings = LogSettings(**({"level": level} if level else {}))
        path = configure_logging(settings, tmp_path / (level or "default"), console=console)
        logging.getLogger("flows.status").info("status 2024-01-01 00:01 equity=10,000.00")
        logging.getLogger("flows.bars").debug("bar  1m BTC/USDT ...")
        logging.getLogger("flows.sources").warning("websocket closed; reconnecting")
        return console.getvalue(), path.read_text()

    console, file = run(None)
    assert "status" not in console and "bar " not in console and "reconnecting" in console
    assert "status 2024-01-01" in file and "bar " not in file
    console, _ = run("info")
    assert "status 2024-01-01" in console and "bar " not in console
    console, _ = run("DEBUG")
    assert "status 2024-01-01" in console and "bar  1m BTC/USDT" in console
    assert logging.getLogger().level == logging.INFO, "DEBUG is for the project's loggers, not every library's"


def test_the_file_rotates_at_its_size(tmp_path: Path) -> None:
    path = configure_logging(LogSettings(max_bytes=10_000, backups=2), tmp_path, console=io.StringIO())
    for i in range(400):
        logging.getLogger("flows.status").info("status line %d %s", i, "x" * 60)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trading.log", "trading.log.1", "trading.log.2"]
    assert path.stat().st_size <= 10_000


def test_the_password_inside_a_dsn_is_masked_on_its_own() -> None:
    dsn, conninfo = "postgresql://u:longpassword@h/db", "host=h password=conninfo-pw user=u"
    got = secret_values([dsn, conninfo, None, ""])
    assert set(got) == {dsn, conninfo, "longpassword", "conninfo-pw"}
    assert got.index(dsn) < got.index("longpassword"), "a whole DSN is masked before the password inside it"


def test_a_bad_level_names_the_setting() -> None:
    from flows.settings import SettingsError

    with pytest.raises(SettingsError, match="CRYPTOSTREAM_LOG__LEVEL"):
        load_settings(env={"CRYPTOSTREAM_LOG__LEVEL": "loud"})
