"""Timeframes such as ``1m`` or ``4h``: the pattern and their length, for pure operators.

Standard library only, so that bars, features and the paper broker import no
configuration machinery (pydantic, yaml); ``flows.settings`` validates its
``bars.timeframes`` with the same :data:`TIMEFRAME_RE`.
"""

from __future__ import annotations

import re

from flows.errors import SettingsError

TIMEFRAME_RE = re.compile(r"^[1-9][0-9]*[smhd]$")
_TIMEFRAME_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def timeframe_ms(timeframe: str) -> int:
    """Return the length of a timeframe such as ``"1m"`` or ``"4h"`` in milliseconds.

    Raises:
        SettingsError: If ``timeframe`` is not ``<n><s|m|h|d>`` with n >= 1.
    """
    if not TIMEFRAME_RE.match(timeframe):
        raise SettingsError(f"timeframe {timeframe!r} is invalid; use <n><s|m|h|d>, e.g. 1m, 5m, 1h")
    return int(timeframe[:-1]) * _TIMEFRAME_UNIT_MS[timeframe[-1]]
