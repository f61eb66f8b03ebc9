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
timestamp is the moment it became known, never earlier: the bar's close for bar groups,
the end of the day plus the publication lag for daily groups.  Every view and service is
derived from the feature-group registry (``flows/feature_groups.py``).
"""

from __future__ import annotations

from feast import Entity, FeatureService, FeatureView, Field, PushSource
from feast.types import Float64, String
from feast.value_type import ValueType

from flows.feature_catalog import view_name
from flows.feature_groups import (
    FEATURE_TIMEFRAMES,
    GROUPS,
    SERVICE_VERSIONS,
    FeatureGroup,
    research_services,
    service_groups,
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


def _view(g: FeatureGroup, timeframe: str) -> tuple[FeatureView, PushSource]:
    name = view_name(g.table, timeframe)
    push = PushSource(name=f"{name}_push", batch_source=_batch_source(g.table, timeframe))
    view = FeatureView(
        name=name,
        entities=[symbol],
        ttl=g.ttl,
        schema=[Field(name="symbol", dtype=String)] + [Field(name=f, dtype=Float64) for f in g.features],
        source=push,
        online=True,
        tags={"timeframe": timeframe, "table": g.table, "group": g.name, "cadence": g.cadence},
    )
    return view, push


_objects: list = [symbol]
_views: dict[tuple[str, str], FeatureView] = {}
for _g in GROUPS:
    for _vtf in _g.timeframes:
        _v, _p = _view(_g, _vtf)
        _views[(_g.name, _vtf)] = _v
        _objects += [_v, _p]


def _service(name: str, family: str, timeframe: str) -> FeatureService:
    """A service's views: bar groups at the service's timeframe, daily groups at theirs."""
    views = [_views[(g.name, timeframe if g.cadence == "bar" else g.timeframes[0])] for g in service_groups(name)]
    return FeatureService(name=name, features=views, tags={"family": family, "timeframe": timeframe})


# One service per model family and version: a model's manifest names the service it was trained on.
for _tf in FEATURE_TIMEFRAMES:
    for _ver, _families in SERVICE_VERSIONS.items():
        _objects += [_service(f"{_fam}_{_tf}_{_ver}", _fam, _tf) for _fam in _families]
    _objects += [_service(_name, "lightgbm", _tf) for _name in research_services(_tf)]

globals().update({obj.name: obj for obj in _objects if hasattr(obj, "name")})
