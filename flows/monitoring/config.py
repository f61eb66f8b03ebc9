"""Settings of the flow's monitoring (``monitoring.*``; env ``CRYPTOSTREAM_MONITORING__*``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

LOOPBACK = ("127.0.0.1", "::1", "localhost")


class MonitoringConfig(BaseModel):
    """Where the flow serves Prometheus metrics.

    ``metrics_port`` 0 (the default) serves nothing and leaves the flow uninstrumented.
    A cluster of Bytewax processes (``-i``/``-a``) serves process ``i`` on
    ``metrics_port + i``; the worker threads of one process (``-w``) share its registry.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    metrics_port: int = Field(0, ge=0, le=65535, description="loopback port of /metrics; 0 = no metrics")
    metrics_host: str = Field("127.0.0.1", description="loopback address to bind (127.0.0.1, ::1 or localhost)")

    @field_validator("metrics_host")
    @classmethod
    def _loopback(cls, value: str) -> str:
        if value not in LOOPBACK:
            raise ValueError(f"{value!r} is not a loopback address; accepted: {', '.join(LOOPBACK)} "
                             "(put a reverse proxy or Prometheus agent on the host to reach it from elsewhere)")
        return value
