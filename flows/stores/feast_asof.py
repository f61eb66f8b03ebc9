"""What the project's Feast offline stores share: the requested views, the entity upload, the result's attachment.

Both stores (``feast_timescale`` over the hypertables, ``feast_parquet`` over the
local parquet history) answer ``get_historical_features`` the same way: only the
join keys, the event timestamp and a row number go to the engine; the engine
returns the row number and the features of each entity row (Feast's rules:
feature time <= entity time, >= entity time - ttl, newest created timestamp wins);
the result is attached to the caller's entity frame by row number.  So every
extra entity column keeps its values and dtype, and the rows keep their order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from feast.infra.offline_stores import offline_utils
from feast.infra.offline_stores.offline_store import RetrievalMetadata
from feast.on_demand_feature_view import OnDemandFeatureView

ROW = "_cs_row"  # the entity frame's row number in what the engine sees


def quote(name: str) -> str:
    """Return a SQL identifier in double quotes (PostgreSQL and DuckDB)."""
    return '"' + name.replace('"', '""') + '"'


def utc_iso(t: datetime) -> str:
    """Return a time as an ISO string in UTC (for a timestamptz literal)."""
    return pd.Timestamp(t).tz_convert("UTC").isoformat()


@dataclass(frozen=True)
class View:
    """One feature view as the join needs it (source column names, the output names, the ttl)."""

    name: str
    source: Any  # the view's batch source (PostgreSQLSource, FileSource)
    keys: tuple[tuple[str, str], ...]  # (source column, entity frame column)
    features: tuple[tuple[str, str], ...]  # (source column, output column)
    timestamp_field: str
    created_field: str | None
    ttl_s: int


@dataclass(frozen=True)
class Request:
    """An entity frame with what Feast resolved for it."""

    entity_df: pd.DataFrame
    timestamp_col: str
    keys: tuple[str, ...]
    views: tuple[View, ...]
    lo: datetime
    hi: datetime
    metadata: RetrievalMetadata
    odfvs: list[OnDemandFeatureView]

    @property
    def feature_columns(self) -> list[str]:
        return [out for v in self.views for _, out in v.features]


def request(feature_views: list[Any], feature_refs: list[str], entity_df: pd.DataFrame, registry: Any,
            project: str, full_feature_names: bool) -> Request:
    """Validate the entity frame as Feast does and resolve the requested views and features."""
    schema = dict(zip(entity_df.columns, entity_df.dtypes, strict=True))
    timestamp_col = offline_utils.infer_event_timestamp_from_entity_df(schema)
    keys = tuple(sorted(offline_utils.get_expected_join_keys(project, feature_views, registry)))
    offline_utils.assert_expected_columns_in_entity_df(schema, set(keys), timestamp_col)
    ts = pd.to_datetime(entity_df[timestamp_col], utc=True)
    lo, hi = (ts.min(), ts.max()) if len(ts) else (pd.Timestamp(0, tz=timezone.utc),) * 2
    by_name = {fv.projection.name_to_use(): fv for fv in feature_views}
    wanted: dict[str, list[str]] = {}
    for ref in feature_refs:
        view, _, feature = ref.partition(":")
        if view in by_name:  # on-demand views are Feast's business, after the join
            wanted.setdefault(view, []).append(feature)
    views = []
    for name, features in wanted.items():
        fv = by_name[name]
        reverse = {v: k for k, v in fv.batch_source.field_mapping.items()}
        views.append(View(
            name=name, source=fv.batch_source,
            keys=tuple((reverse.get(c.name, c.name), fv.projection.join_key_map.get(c.name, c.name))
                       for c in fv.entity_columns),
            features=tuple((reverse.get(f, f), f"{name}__{f}" if full_feature_names else f) for f in features),
            timestamp_field=reverse.get(fv.batch_source.timestamp_field, fv.batch_source.timestamp_field),
            created_field=reverse.get(fv.batch_source.created_timestamp_column,
                                      fv.batch_source.created_timestamp_column) or None,
            ttl_s=int(fv.ttl.total_seconds()) if fv.ttl else 0))
    metadata = RetrievalMetadata(features=feature_refs, keys=[c for c in entity_df.columns if c != timestamp_col],
                                 min_event_timestamp=lo.to_pydatetime(), max_event_timestamp=hi.to_pydatetime())
    return Request(entity_df.reset_index(drop=True), timestamp_col, keys, tuple(views), lo.to_pydatetime(),
                   hi.to_pydatetime(), metadata, OnDemandFeatureView.get_requested_odfvs(feature_refs, project,
                                                                                          registry))


def entity_keys(req: Request) -> pd.DataFrame:
    """Return what the engine gets: row number, join keys, event timestamp (UTC)."""
    frame = pd.DataFrame({ROW: np.arange(len(req.entity_df), dtype=np.int64)})
    for key in req.keys:
        frame[key] = req.entity_df[key].to_numpy()
    frame[req.timestamp_col] = pd.to_datetime(req.entity_df[req.timestamp_col], utc=True)
    return frame


def attach(req: Request, features: pa.Table) -> pa.Table:
    """Return the entity frame with the engine's features (``ROW`` + feature columns, one row per entity row)."""
    rows = features.column(ROW).to_numpy()
    if len(rows) != len(req.entity_df) or (rows != np.arange(len(rows))).any():
        raise RuntimeError(f"as-of join returned {len(rows)} rows for {len(req.entity_df)} entity rows")
    frame = features.drop_columns([ROW]).select(req.feature_columns).to_pandas()
    joined = pd.concat([req.entity_df, frame], axis=1)
    return pa.Table.from_pandas(joined, preserve_index=False)
