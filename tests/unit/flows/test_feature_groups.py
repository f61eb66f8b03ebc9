"""The feature-group registry: the tables, migrations, services and Feast repository all follow from it."""

from __future__ import annotations

import re
from pathlib import Path

from flows import feast_store
from flows.feature_groups import (
    GROUPS,
    daily_groups,
    group,
    migration_sql,
    research_services,
    service_features,
)
from flows.feature_groups import (
    MIGRATIONS as GENERATED,
)
from flows.operators.cross_asset import CROSS_FEATURES
from flows.operators.features import FEATURES
from flows.operators.model_bank import services
from flows.settings import load_settings
from flows.stores.schema import FEATURE_COLUMNS
from tests.kit.repo import PROJECT_ROOT, copy_feature_repo

MIGRATIONS = PROJECT_ROOT / "sql" / "migrations"


def _table_columns(sql: str, table: str) -> list[str]:
    body = re.search(rf"CREATE TABLE IF NOT EXISTS {table} \((.*?)\n\);", sql, re.S)
    assert body, table
    return [line.split()[0] for line in body.group(1).splitlines()
            if line.strip() and not line.strip().startswith(("PRIMARY", "--"))]


def test_the_daily_and_regime_migrations_are_the_registry_s_generated_sql() -> None:
    for cadence, (name, title) in GENERATED.items():
        committed = (MIGRATIONS / name).read_text()
        assert committed == migration_sql([g for g in GROUPS if g.cadence == cadence], title), name


def test_every_group_s_table_in_the_migrations_has_the_registry_s_columns() -> None:
    sql = "\n".join(p.read_text() for p in sorted(MIGRATIONS.glob("*.sql")))
    for g in GROUPS:
        cols = _table_columns(sql, g.table)
        assert cols == ["symbol", "timeframe", g.timestamp_field, *g.features, "run_id", "created_at"], g.name


def test_the_stored_columns_of_every_group_come_from_the_registry() -> None:
    assert set(FEATURE_COLUMNS) == {g.table for g in GROUPS}
    assert FEATURE_COLUMNS["bar_features"][4:] == FEATURES
    assert FEATURE_COLUMNS["daily_funding"] == ("symbol", "timeframe", "ts", "created_at",
                                                "fund_mean", "fund_z_30", "fund_abs")


def test_v1_services_are_unchanged_and_v2_adds_the_daily_groups() -> None:
    svc = services("1h")
    assert svc["lightgbm_1h_v1"] == [*FEATURES, *CROSS_FEATURES]
    assert svc["lstm_1h_v1"] == list(FEATURES)
    assert svc["gnn_1h_v1"] == [*FEATURES, *CROSS_FEATURES]
    daily = [f for g in daily_groups() for f in g.features]
    assert svc["lightgbm_1h_v2"] == [*FEATURES, *CROSS_FEATURES, *daily]
    assert service_features("lightgbm_1h_funding_v2") == [*FEATURES, *CROSS_FEATURES, *group("funding").features]
    assert set(research_services("1h")) <= set(svc)  # the scoring bank loads a research member too
    from training.registry import service_version
    from training.train import service_for

    assert service_for("lightgbm", "1h", "v2_fear_greed") == "lightgbm_1h_fear_greed_v2"
    assert service_version("lightgbm_1h_fear_greed_v2") == "v2"  # the registry accepts the name


def test_an_unknown_group_is_named_with_the_known_ones() -> None:
    import pytest

    with pytest.raises(KeyError, match="unknown feature group 'moon'.*fear_greed"):
        service_features("lightgbm_1h_moon_v2")


def test_feast_apply_registers_a_view_per_group_and_every_service(tmp_path: Path) -> None:
    settings = load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp_path / "var"),
                                  "CRYPTOSTREAM_FEAST_REPO": str(copy_feature_repo(tmp_path))})
    feast_store.apply(settings)
    store = feast_store.open_store(settings)
    views = {v.name: v for v in store.list_feature_views()}
    for g in daily_groups():
        v = views[f"{g.table}_1d"]
        assert v.ttl == g.ttl and [f.name for f in v.features] == list(g.features)
    assert {"bar_features_1h", "cross_asset_features_5m"} <= set(views)
    v1 = store.get_feature_service("lightgbm_1h_v1")
    assert [p.name for p in v1.feature_view_projections] == ["bar_features_1h", "cross_asset_features_1h"]
    v2 = store.get_feature_service("lightgbm_1h_v2")
    assert [f.name for p in v2.feature_view_projections for f in p.features] == services("1h")["lightgbm_1h_v2"]
    for name in research_services("1h"):
        assert store.get_feature_service(name).name == name
