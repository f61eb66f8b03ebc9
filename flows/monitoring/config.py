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


class DriftConfig(BaseModel):
    """Drift checks of the deployed models (``drift.*``; ``python -m training.drift``).

    Feature drift: the population stability index (PSI) of each feature of ``family``'s
    feature list, per symbol, between its training window (the reference, saved beside the
    model version as ``drift_reference.json``) and the last ``live_bars`` stored feature rows.
    Calibration drift: the expected calibration error (ECE) and Brier score of the ensemble's
    P(up) over its last ``calibration_window`` predictions whose label horizon has passed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    family: str = Field("lightgbm", min_length=1, description="registry family whose features and training "
                        "window define the reference")
    bins: int = Field(10, ge=2, le=100, description="quantile bins of the reference (PSI)")
    live_bars: int = Field(1440, ge=10, description="newest feature rows per symbol compared with the reference")
    min_rows: int = Field(100, ge=1, description="fewer live rows (or settled predictions) than this: not judged")
    psi_alert: float = Field(0.25, gt=0.0, description="PSI above this is drift (0.1-0.25: watch; >0.25: shifted)")
    calibration_window: int = Field(2000, ge=10, description="newest settled ensemble predictions judged")
    calibration_bins: int = Field(10, ge=2, le=50, description="equal-width probability bins of the ECE")
    ece_alert: float = Field(0.1, gt=0.0, lt=1.0, description="ECE above this is calibration drift")
    every_s: float = Field(3600.0, gt=0.0, description="seconds between checks of `python -m training.drift watch`")
    metrics_port: int = Field(0, ge=0, le=65535, description="loopback port where `watch` serves /metrics; 0 = none")
    retrain_command: str = Field("", description="run (detached) on drift, e.g. `python -m training.retrain daily`; "
                                 "empty = only alert")
    retrain_cooldown_s: float = Field(86400.0, ge=0.0, description="at most one retrain trigger per this many seconds")
