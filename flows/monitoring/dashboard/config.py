"""The dashboard's settings (``dashboard.*`` of :class:`flows.settings.Settings`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class DashboardConfig(BaseModel):
    """Where the dashboard listens, how often it looks for new records, how much a page shows."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    address: str = Field("127.0.0.1", description="address Streamlit listens on (loopback by default)")
    port: int = Field(8501, ge=1, le=65535, description="port Streamlit listens on")
    refresh_s: float = Field(2.0, gt=0.0, description="how often a page checks the store (or the Redis streams) "
                             "for new records")
    points: int = Field(1500, ge=10, le=100_000, description="points at most in a time-series chart "
                        "(the store aggregates to this many)")
    rows: int = Field(200, ge=1, le=100_000, description="rows at most in a table of recent records")
    report_dirs: tuple[Path, ...] = Field((), description="where backtest, walk-forward and gate reports are "
                                          "looked for (default: training/reports and data_dir)")

    @field_validator("report_dirs", mode="before")
    @classmethod
    def _dirs(cls, value: Any) -> Any:
        if isinstance(value, str):  # the environment: comma-separated
            return tuple(p.strip() for p in value.split(",") if p.strip())
        return value
