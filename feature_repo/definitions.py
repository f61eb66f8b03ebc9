"""Feast definitions: entity, sources, feature views and versioned feature services.

The same definitions serve both profiles; only the batch sources change (chosen by the
profile's stores, ``flows.stores.Stores.feast_source``):

* ``local``: parquet directories under ``<data_dir>/offline/`` written by the flow
  and the backfill (``FileSource``).
* ``timescale``: the ``bar_features`` and ``cross_asset_features`` hypertables
  (``PostgreSQLSource``).  The flow writes history there itself because Feast's
  Postgres offline store cannot take pushes; it pushes the latest values to the
  online store through the push sources.

The profile is read from ``CRYPTOSTREAM_PROFILE`` (as every other component
does), so run ``feast`` in the same environment as the flow.  A feature's event
timestamp is the bar's close: the moment it became known, never earlier.
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, PushSource
from feast.types import Float64, String
from feast.value_type import ValueType

from flows.feature_catalog import (
    BAR_FEATURES,
    CROSS_FEATURES,
    FEATURE_SERVICE_VERSION,
    FEATURE_TIMEFRAMES,
    view_name,
)
from flows.settings import load_settings
from flows.stores import open_stores

settings = load_settings()

symbol = Entity(
    name="symbol",
    join_keys=["symbol"],
    value_type=ValueType.STRING,
    description="Trading pair in ccxt form, e.g. BTC/USDT",
)


def _batch_source(table: str, timeframe: str):
    return open_stores(settings).feast_source(table, timeframe)


def _view(table: str, timeframe: str, features: tuple[str, ...]) -> tuple[FeatureView, PushSource]:
    name = view_name(table, timeframe)
    push = PushSource(name=f"{name}_push", batch_source=_batch_source(table, timeframe))
    view = FeatureView(
        name=name,
        entities=[symbol],
        ttl=timedelta(days=2),
        schema=[Field(name="symbol", dtype=String)] + [Field(name=f, dtype=Float64) for f in features],
        source=push,
        online=True,
        tags={"timeframe": timeframe, "table": table},
    )
    return view, push


_objects: list = [symbol]
for _tf in FEATURE_TIMEFRAMES:
    bar_view, bar_push = _view("bar_features", _tf, BAR_FEATURES)
    cross_view, cross_push = _view("cross_asset_features", _tf, CROSS_FEATURES)
    _objects += [bar_view, bar_push, cross_view, cross_push]
    # One service per model family, versioned: a model's manifest names the service it was trained on.
    _objects += [
        FeatureService(name=f"lightgbm_{_tf}_{FEATURE_SERVICE_VERSION}", features=[bar_view, cross_view],
                       tags={"family": "lightgbm", "timeframe": _tf}),
        FeatureService(name=f"lstm_{_tf}_{FEATURE_SERVICE_VERSION}", features=[bar_view],
                       tags={"family": "lstm", "timeframe": _tf}),
        FeatureService(name=f"gnn_{_tf}_{FEATURE_SERVICE_VERSION}", features=[bar_view, cross_view],
                       tags={"family": "gnn", "timeframe": _tf}),
    ]

globals().update({obj.name: obj for obj in _objects if hasattr(obj, "name")})
