"""Names shared by the flow, the sinks, the Feast repository and training.

Keeping them in one place means the feature list a model is trained on, the
columns the flow writes and the Feast feature views cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path

from flows.feature_groups import FEATURE_TIMEFRAMES, group

__all__ = ["BAR_FEATURES", "CROSS_FEATURES", "FEATURE_SERVICE_VERSION", "FEATURE_TIMEFRAMES",
           "offline_dir", "view_name"]

# The groups themselves live in the registry (flows/feature_groups.py); these names stay for callers.
BAR_FEATURES: tuple[str, ...] = group("bar").features
CROSS_FEATURES: tuple[str, ...] = group("cross_asset").features
FEATURE_SERVICE_VERSION = "v1"  # the version models are trained on by default (v2 adds the daily groups)


def view_name(table: str, timeframe: str) -> str:
    """Return the feature view name of a table and timeframe, e.g. ``bar_features_1m``."""
    return f"{table}_{timeframe}"


def offline_dir(data_dir: Path, table: str, timeframe: str) -> Path:
    """Return the parquet directory the ``local`` profile keeps a table's history in."""
    return Path(data_dir).resolve() / "offline" / view_name(table, timeframe)
