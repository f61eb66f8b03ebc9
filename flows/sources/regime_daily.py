"""The daily inputs of the regime classifier (funding, sentiment), point in time.

One function, :func:`load_daily_inputs`, reads the daily files (the layout of
``../shared/data/daily-onchain-sentiment``: ``funding_rates.csv`` with
``date,funding_mean``, ``fear_greed.csv`` with ``date,fng``) and stamps each value with
the moment it becomes known: **the end of its day plus the publication lag**
(``date + 1 day + lag``).  :meth:`DailyInputs.at` returns, at a time ``t``, the last
value known strictly before ``t``; a value not yet known is never used.  Missing files
leave their input out (the classifier then runs from prices alone).

This is the one seam to the daily sources: point it at another provider by building a
:class:`DailyInputs` from that provider's (known time, value) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DAY_MS = 86_400_000
# file -> (column, input name, scale): funding in basis points, Fear & Greed as fng / 100 - 0.5
DAILY_FILES: dict[str, tuple[str, str, float, float]] = {
    "funding_rates.csv": ("funding_mean", "funding", 1e4, 0.0),
    "fear_greed.csv": ("fng", "sentiment", 0.01, -0.5),
}


@dataclass(frozen=True, eq=False)
class DailyInputs:
    """Per input: the times its values become known (ms, increasing) and the values."""

    series: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def at(self, ts_ms: int) -> dict[str, float]:
        """Return each input's last value known strictly before ``ts_ms`` (inputs not yet known are absent)."""
        out = {}
        for name, (known, values) in self.series.items():
            i = int(np.searchsorted(known, ts_ms, side="left")) - 1
            if i >= 0:
                out[name] = float(values[i])
        return out

    @property
    def names(self) -> tuple[str, ...]:
        """The inputs present."""
        return tuple(self.series)


def load_daily_inputs(directory: str | Path | None, publication_lag_hours: float = 0.0) -> DailyInputs:
    """Read the daily files in ``directory`` into :class:`DailyInputs` (None or no file: no input).

    A value dated day D becomes known at ``D + 1 day + publication_lag_hours``.

    Raises:
        ValueError: naming the file and field of a bad column, date or value.
    """
    import pandas as pd

    if publication_lag_hours < 0 or not np.isfinite(publication_lag_hours):
        raise ValueError(f"publication_lag_hours must be >= 0, got {publication_lag_hours}")
    if directory is None:
        return DailyInputs()
    d = Path(directory)
    if not d.is_dir():
        raise ValueError(f"regime daily_dir {d} is not a directory")
    lag_ms = int(round(publication_lag_hours * 3_600_000))
    series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for fname, (col, name, scale, shift) in DAILY_FILES.items():
        path = d / fname
        if not path.is_file():
            continue
        df = pd.read_csv(path, float_precision="round_trip")  # the exact values written, not within an ulp
        missing = [c for c in ("date", col) if c not in df.columns]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}")
        try:
            dates = pd.DatetimeIndex(pd.to_datetime(df["date"], utc=True, format="%Y-%m-%d"))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: field 'date' must be YYYY-MM-DD ({exc})") from None
        if not dates.is_monotonic_increasing or dates.has_duplicates:
            raise ValueError(f"{path}: field 'date' must be strictly increasing")
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
        ok = np.isfinite(values)
        known = dates.as_unit("ms").asi8 + DAY_MS + lag_ms
        series[name] = (known[ok].astype(np.int64), values[ok] * scale + shift)
    return DailyInputs(series)
