"""Push each bar's features to the Feast online store as soon as they exist.

Rows of one batch are grouped by feature view and handed to the online store's
``online_write_batch``, the interface every Feast online store implements and
where ``FeatureStore.write_to_online_store`` ends.  The rows (entity key, feature
values, event and created time) are built here straight from the records, as
Feast builds them: the same protos and times (timezone-aware here, naive UTC in
Feast; every online store normalises them).  ``write_to_online_store`` gets there
through a DataFrame, Arrow and a column-wise conversion, about two thirds of a
6 ms write measured here (``tests/bench/bench_flow.py``, section 3), and
``push(..., to=PushMode.ONLINE)`` adds a registry scan per call on top (22 ms on
SQLite).  History is not pushed offline: the flow writes it to TimescaleDB (or
parquet) itself, because Feast's Postgres offline store cannot take pushes.

The online store's server may go away for a while (a TimescaleDB restart, Redis down): a
write that fails on the connection is written again on a new one (the online write is an
upsert) for up to ``stores.write_retry_s`` (:mod:`flows.stores.retry`), while the flow waits.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pandas as pd
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from flows.feast_store import open_store
from flows.feature_catalog import view_name
from flows.records import FeatureRow
from flows.settings import Settings, SettingsError
from flows.stores.retry import pg_outage, retry_through_outage

if TYPE_CHECKING:
    from feast import FeatureView

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)  # online stores normalise to naive UTC themselves


def rows_to_frames(rows: list[FeatureRow]) -> dict[str, pd.DataFrame]:
    """Group feature rows into one frame per feature view (the shape ``write_to_online_store`` takes)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        ts = pd.Timestamp(r.ts, unit="ms", tz="UTC")
        groups[view_name(r.table, r.timeframe)].append(
            {"symbol": r.symbol, "ts": ts, "created_at": ts, **r.values})
    return {name: pd.DataFrame(recs) for name, recs in groups.items()}


class OnlineRows:
    """Build ``online_write_batch`` rows for the views of one Feast repository."""

    def __init__(self, views: dict[str, FeatureView]) -> None:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        self.views = views
        self._key, self._value = EntityKey, Value
        self._features = {name: tuple(f.name for f in v.features) for name, v in views.items()}

    def build(self, rows: list[FeatureRow]) -> dict[str, list[tuple[Any, ...]]]:
        """Return, per feature view, the rows of ``rows`` as (entity key, values, event time, created time)."""
        key, value = self._key, self._value
        out: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        for r in rows:
            view = view_name(r.table, r.timeframe)
            names = self._features.get(view)
            if names is None:
                raise SettingsError(f"feature view {view!r} is not registered in the Feast repository: run "
                                    "feast apply (flows.live does when it starts)")
            ts = _EPOCH + timedelta(milliseconds=r.ts)
            entity = key(join_keys=["symbol"], entity_values=[value(string_val=r.symbol)])
            out[view].append((entity, {n: value(double_val=r.values[n]) for n in names}, ts, ts))
        return out


def online_outage(exc: BaseException) -> bool:
    """Return whether an online write failed because its server (PostgreSQL or Redis) is unreachable."""
    import redis

    return pg_outage(exc) or isinstance(exc, (redis.ConnectionError, redis.TimeoutError))


class _PushPartition(StatelessSinkPartition[FeatureRow]):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = open_store(settings)
        self.config = self.store.config
        self._reconnect()
        # The views are read once: a write only needs their names and feature lists,
        # and a per-write registry lookup is what made push() slow.
        self.rows = OnlineRows({v.name: v for v in self.store.list_feature_views()})

    def _reconnect(self) -> None:
        """Take a new online store object: Feast's keeps its connection, broken after an outage."""
        from feast.infra.online_stores.helpers import get_online_store_from_config

        self.online = get_online_store_from_config(self.config.online_store)

    def write_batch(self, items: list[FeatureRow]) -> None:
        views = self.rows.build(items)
        retry_through_outage("Feast online store", lambda: self._write(views), online_outage, self._reconnect,
                             self.settings.stores)

    def _write(self, views: dict[str, list[tuple[Any, ...]]]) -> None:
        for view, data in views.items():
            self.online.online_write_batch(self.config, self.rows.views[view], data, None)


class FeastOnlineSink(DynamicSink[FeatureRow]):
    """Bytewax sink that pushes feature rows to the online store."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _PushPartition:
        return _PushPartition(self.settings)
