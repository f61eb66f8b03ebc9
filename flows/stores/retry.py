"""Retry a store's write through a server outage (a TimescaleDB restart, a dropped connection).

Every write of the stores is an idempotent upsert in one transaction, so a batch whose
connection broke (before, during or even after its commit) can simply be written again on
a new connection.  :func:`retry_through_outage` does that with a doubling pause until
``StoreConfig.write_retry_s`` has passed since the first failure, then raises the last error.
The caller's thread waits meanwhile: the flow applies back-pressure instead of buffering rows
that a crash would lose (Bytewax commits an epoch only after its sinks returned).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from flows.stores.config import StoreConfig

log = logging.getLogger(__name__)
T = TypeVar("T")


def retry_through_outage(what: str, attempt: Callable[[], T], is_outage: Callable[[BaseException], bool],
                         reset: Callable[[], None], config: StoreConfig,
                         sleep: Callable[[float], None] = time.sleep,
                         clock: Callable[[], float] = time.monotonic) -> T:
    """Return ``attempt()``, calling ``reset()`` and trying again while it fails with an outage.

    Args:
        what: names the store in the log lines (``"TimescaleDB history"``).
        attempt: writes the batch (one transaction); safe to repeat.
        is_outage: whether an error is the server being unreachable (anything else raises at once).
        reset: drops the broken connection, so the next attempt opens a new one.
        config: how long to keep trying and the longest pause.
        sleep, clock: injected for tests.
    """
    first: float | None = None
    pause, tries = 0.2, 0
    while True:
        try:
            out = attempt()
        except Exception as exc:
            if not is_outage(exc):
                raise
            now = clock()
            first = now if first is None else first
            tries += 1
            if now - first >= config.write_retry_s:
                log.error("%s: still unreachable after %.0f s (%d attempts), giving up: %s",
                          what, now - first, tries, exc)
                raise
            if tries == 1 or tries % 10 == 0:
                log.warning("%s unreachable (%s); retrying the batch for up to %.0f s",
                            what, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                            config.write_retry_s)
            try:
                reset()
            except Exception as close_exc:  # closing a broken connection may fail too; the next attempt reconnects
                log.debug("%s: closing the broken connection: %s", what, close_exc)
            sleep(pause)
            pause = min(pause * 2, config.retry_backoff_max_s)
            continue
        if tries:
            log.warning("%s reachable again: the batch is stored after %d failed attempts (%.1f s)",
                        what, tries, clock() - (first or 0.0))
        return out


def pg_outage(exc: BaseException) -> bool:
    """Return whether a psycopg error means the server is unreachable or went away (not a bad statement)."""
    import psycopg

    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
