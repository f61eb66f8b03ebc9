"""How the stores ride out an outage of their servers (``Settings.stores``).

The environment sets them with ``CRYPTOSTREAM_STORES__<FIELD>``, e.g.
``CRYPTOSTREAM_STORES__WRITE_RETRY_S=600``.  This module imports only pydantic.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class StoreConfig(BaseModel):
    """Retries of the database writers and the event bus's backlog while a server is down."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    write_retry_s: float = Field(
        300.0, gt=0.0, description="how long a TimescaleDB write (history, decisions, the Feast online store) "
        "keeps reconnecting and retrying its batch before it raises (the flow then stops, and a restart "
        "resumes from its last snapshot); the flow waits meanwhile, so nothing is lost or reordered")
    retry_backoff_max_s: float = Field(
        5.0, gt=0.0, description="longest pause between two attempts (the pause doubles from 0.2 s)")
    event_backlog: int = Field(
        100_000, ge=0, description="event-bus documents kept in memory while Redis is unreachable and "
        "published, oldest first, once it answers again; beyond this the oldest are dropped and counted")
    redis_timeout_s: float = Field(
        2.0, gt=0.0, description="socket timeout of the event bus, kill switch and swap key: a hung Redis "
        "blocks a publish or a read for at most this long")


class BackupConfig(BaseModel):
    """Where ``python -m infra.db backup`` writes and how many it keeps (``Settings.backup``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dir: str | None = Field(None, description="backup directory; unset = <data_dir>/backups (put it on another "
                            "disk: a backup beside the data dies with it)")
    keep: int = Field(7, ge=1, le=10_000, description="complete backups of a profile kept; older ones are deleted")
