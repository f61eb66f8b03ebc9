"""Names shared by the flow, the sinks, the Feast repository and training.

Keeping them in one place means the feature list a model is trained on, the
columns the flow writes and the Feast feature views cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path

from flows.operators.cross_asset import CROSS_FEATURES
from flows.operators.features import FEATURES as BAR_FEATURES

__all__ = ["BAR_FEATURES", "CROSS_FEATURES", "FEATURE_SERVICE_VERSION", "FEATURE_TIMEFRAMES",
           "offline_dir", "view_name"]

# Timeframes that have feature views; the flow may compute any subset of them.
FEATURE_TIMEFRAMES: tuple[str, ...] = ("1m", "5m", "1h")
FEATURE_SERVICE_VERSION = "v1"


def view_name(table: str, timeframe: str) -> str:
    """Return the feature view name of a table and timeframe, e.g. ``bar_features_1m``."""
    return f"{table}_{timeframe}"


def offline_dir(data_dir: Path, table: str, timeframe: str) -> Path:
    """Return the parquet directory the ``local`` profile keeps a table's history in."""
    return Path(data_dir).resolve() / "offline" / view_name(table, timeframe)
