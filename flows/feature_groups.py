"""The feature-group registry: every feature group the system stores, serves and trains on, as data.

One :class:`FeatureGroup` entry gives a group's name, its source table, its features, the field
holding its event timestamp, its publication lag and its TTL.  Everything else is derived from
these entries, so a new group is one entry here plus its computation:

* the Feast feature views and versioned feature services (``feature_repo/definitions.py``),
* the stored tables' columns (``flows.stores.schema.FEATURE_COLUMNS``, used by every sink),
* the SQL of its hypertable (:func:`create_table_sql`; ``python -m flows.feature_groups sql GROUP``
  prints it, and ``tests/unit/flows/test_feature_groups.py`` checks the committed migrations
  against it),
* the training sets and the scoring feed (:func:`service_features`: the ordered feature list
  of a family's feature service).

Two cadences exist.  ``bar`` groups are computed by the flow at every bar close of each
timeframe in :data:`FEATURE_TIMEFRAMES`.  ``daily`` groups come from a daily provider
(``flows/sources/daily.py``): a value of day D becomes known at the end of D plus the group's
publication lag, and that moment is its event timestamp (``flows/operators/daily_features.py``).
Daily groups are market-wide; their rows are written once per traded symbol (the Feast entity)
with ``timeframe = "1d"`` so that the same table shape, sinks and Feast sources serve them.
The ``regime`` group (cadence ``regime``) is the market regime of ``flows/operators/regime.py``,
written by the flow when ``regime.source`` is on: one row per traded symbol at each close the
regime is sampled at (hourly), ``timeframe = "1h"``, ``ts`` = that bar close.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from flows.operators.cross_asset import CROSS_FEATURES
from flows.operators.features import FEATURES as BAR_FEATURES
from flows.operators.regime import REGIME_FEATURES, REGIME_TIMEFRAME

__all__ = ["DAILY_TIMEFRAME", "FEATURE_TIMEFRAMES", "GROUPS", "MIGRATIONS", "SERVICE_VERSIONS", "FeatureGroup",
           "create_table_sql", "daily_groups", "group", "service_features", "service_groups", "service_name"]

FEATURE_TIMEFRAMES: tuple[str, ...] = ("1m", "5m", "1h")  # timeframes with bar feature views
DAILY_TIMEFRAME = "1d"  # the ``timeframe`` column of daily groups' rows


@dataclass(frozen=True)
class FeatureGroup:
    """One feature group: where it is stored, what it holds and when its values become known.

    Attributes:
        name: Short name, e.g. ``fear_greed`` (used in research service names).
        table: The stored table (hypertable / parquet directory); the Feast view is ``<table>_<timeframe>``.
        features: Feature columns, in the order models see them.
        cadence: ``bar`` (computed by the flow per bar close), ``daily`` (a daily provider) or
            ``regime`` (the regime classifier, per sampled close of its reference symbol).
        timestamp_field: The event-timestamp column: when the values became known, never earlier.
        publication_lag: Daily groups: time after the end of the value's day until it is published
            (configurable per deployment, ``daily.lag_minutes`` in the settings).
        ttl: How long Feast serves a value after its event timestamp.
        raw: Daily groups: the provider columns the features are computed from.
        chunk: TimescaleDB chunk interval of the table.
        description: One line for the table comment and the README.
    """

    name: str
    table: str
    features: tuple[str, ...]
    cadence: Literal["bar", "daily", "regime"]
    timestamp_field: str = "ts"
    publication_lag: timedelta = timedelta(0)
    ttl: timedelta = timedelta(days=2)
    raw: tuple[str, ...] = ()
    chunk: str = "30 days"
    description: str = ""

    @property
    def timeframes(self) -> tuple[str, ...]:
        """Return the timeframes the group has feature views for."""
        return {"bar": FEATURE_TIMEFRAMES, "daily": (DAILY_TIMEFRAME,), "regime": (REGIME_TIMEFRAME,)}[self.cadence]


GROUPS: tuple[FeatureGroup, ...] = (
    FeatureGroup("bar", "bar_features", BAR_FEATURES, "bar", chunk="7 days",
                 description="Per-symbol bar features (wide: one column per feature); ts = bar close, "
                             "when the values became known."),
    FeatureGroup("cross_asset", "cross_asset_features", CROSS_FEATURES, "bar",
                 description="Cross-asset features (correlation and beta to BTC, cross-sectional relative "
                             "return); ts = bar close."),
    FeatureGroup("fear_greed", "daily_fear_greed", ("fng", "fng_chg_1", "fng_z_30"), "daily",
                 publication_lag=timedelta(hours=1), ttl=timedelta(days=3), raw=("fng",),
                 description="Crypto Fear & Greed index (alternative.me): level, 1-day change, 30-day "
                             "z-score; ts = end of day + publication lag."),
    FeatureGroup("hash_rate", "daily_hash_rate", ("hr_ribbon", "hr_capitulation", "hr_mom_30"), "daily",
                 publication_lag=timedelta(hours=1), ttl=timedelta(days=3), raw=("hashrate",),
                 description="Bitcoin hash-rate momentum: 30/60-day mean ribbon, capitulation flag, 30-day "
                             "momentum; ts = end of day + publication lag."),
    FeatureGroup("difficulty", "daily_difficulty", ("diff_chg_14", "diff_chg_56"), "daily",
                 publication_lag=timedelta(hours=1), ttl=timedelta(days=3), raw=("difficulty",),
                 description="Bitcoin mining difficulty change over 14 and 56 days; ts = end of day + "
                             "publication lag."),
    FeatureGroup("funding", "daily_funding", ("fund_mean", "fund_z_30", "fund_abs"), "daily",
                 publication_lag=timedelta(minutes=5), ttl=timedelta(days=3),
                 raw=("funding_mean", "funding_abs"),
                 description="Binance BTC perpetual funding: daily mean, its 30-day z-score, daily mean "
                             "absolute rate; ts = end of day + publication lag."),
    FeatureGroup("regime", "regime_features", REGIME_FEATURES, "regime", ttl=timedelta(hours=3),
                 description="Market regime (flows/operators/regime.py): label code (index in REGIMES), "
                             "score P(bull) - P(bear), filtered probabilities; ts = the sampled bar close."),
)

_BY_NAME = {g.name: g for g in GROUPS}
_BY_TABLE = {g.table: g for g in GROUPS}

# Feature services per version: family -> group names.  v1 is frozen (models trained on it keep
# loading); v2 adds every daily group.
SERVICE_VERSIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "v1": {"lightgbm": ("bar", "cross_asset"), "lstm": ("bar",), "gnn": ("bar", "cross_asset")},
    "v2": {"lightgbm": ("bar", "cross_asset", "fear_greed", "hash_rate", "difficulty", "funding"),
           "lstm": ("bar", "fear_greed", "hash_rate", "difficulty", "funding"),
           "gnn": ("bar", "cross_asset", "fear_greed", "hash_rate", "difficulty", "funding")},
}


def group(key: str) -> FeatureGroup:
    """Return a group by name or table; a clear error lists the known ones."""
    found = _BY_NAME.get(key) or _BY_TABLE.get(key)
    if found is None:
        raise KeyError(f"unknown feature group {key!r}; known: {', '.join(_BY_NAME)}")
    return found


def daily_groups() -> tuple[FeatureGroup, ...]:
    """Return the groups fed by a daily provider."""
    return tuple(g for g in GROUPS if g.cadence == "daily")


def service_name(family: str, timeframe: str, version: str = "v1") -> str:
    """Return a service name; ``version`` ``v2_<group>`` gives the research service ``<family>_<tf>_<group>_v2``."""
    v, _, extra = version.partition("_")
    return f"{family}_{timeframe}_{extra}_{v}" if extra else f"{family}_{timeframe}_{v}"


def service_groups(service: str) -> tuple[FeatureGroup, ...]:
    """Return the groups of a feature service ``<family>_<tf>[_<group>]_<version>``.

    ``<version>`` is a key of :data:`SERVICE_VERSIONS` (the registry reads it as the ``_v<N>``
    suffix); the research form ``lightgbm_1h_<group>_v2`` is the family's v1 groups plus one daily
    group (the per-group comparison of the report).
    """
    parts = service.split("_")
    if len(parts) < 3:
        raise KeyError(f"feature service {service!r} is not <family>_<timeframe>_<version>")
    family, _tf, version, extra = parts[0], parts[1], parts[-1], "_".join(parts[2:-1])
    if family == "ensemble":
        return ()
    try:
        names = SERVICE_VERSIONS[version][family]
    except KeyError:
        raise KeyError(f"feature service {service!r}: no family {family!r} in version {version!r} "
                       f"(versions: {', '.join(SERVICE_VERSIONS)})") from None
    if extra:
        names = (*SERVICE_VERSIONS["v1"][family], group(extra).name)
    return tuple(group(n) for n in names)


def service_features(service: str) -> list[str]:
    """Return the ordered feature list of a feature service (the model's input order)."""
    return [f for g in service_groups(service) for f in g.features]


def research_services(timeframe: str) -> list[str]:
    """Return the per-group research services ``lightgbm_<tf>_<group>_v2`` of the daily groups."""
    return [service_name("lightgbm", timeframe, f"v2_{g.name}") for g in daily_groups()]


def create_table_sql(g: FeatureGroup) -> str:
    """Return the DDL of a group's hypertable (wide: one double precision column per feature)."""
    width = max(len(c) for c in ("symbol", "timeframe", "ts", "run_id", "created_at", *g.features))
    col = lambda name, typ: f"    {name.ljust(width)} {typ},"  # noqa: E731
    lines = [f"CREATE TABLE IF NOT EXISTS {g.table} (",
             col("symbol", 'text COLLATE "C" NOT NULL'),
             col("timeframe", 'text COLLATE "C" NOT NULL'),
             col(g.timestamp_field, "timestamptz      NOT NULL"),
             *(col(f, "double precision") for f in g.features),
             col("run_id", 'text COLLATE "C"'),
             col("created_at", "timestamptz      NOT NULL DEFAULT now()"),
             f"    PRIMARY KEY (symbol, timeframe, {g.timestamp_field})",
             ");",
             "",
             f"SELECT create_hypertable('{g.table}', by_range('{g.timestamp_field}', INTERVAL '{g.chunk}'), "
             "if_not_exists => TRUE);",
             "",
             f"COMMENT ON TABLE {g.table} IS",
             f"    '{g.description}';",
             ""]
    return "\n".join(lines)


KNOWN_AT: dict[str, str] = {  # cadence -> the migration's line on the event timestamp
    "daily": "the end of their day plus the source's publication lag.",
    "regime": "the bar close the regime was sampled at (filtered: nothing later used).",
}


def migration_sql(groups: Sequence[FeatureGroup], title: str) -> str:
    """Return a migration creating the tables of ``groups`` (generated; do not edit by hand)."""
    head = [f"-- {title}",
            "-- Generated from flows/feature_groups.py by `python -m flows.feature_groups sql "
            + " ".join(g.name for g in groups) + "`;",
            "-- tests/unit/flows/test_feature_groups.py checks this file against the registry.",
            f"-- ts is when the values became known: {KNOWN_AT[groups[0].cadence]}",
            ""]
    return "\n".join(head) + "\n".join(create_table_sql(g) for g in groups)


DAILY_MIGRATION = ("0009_daily_features.sql", "0009: daily feature groups (on-chain, funding, sentiment).")
REGIME_MIGRATION = ("0010_regime_features.sql", "0010: the market regime feature group (label code, score, "
                    "filtered probabilities).")
MIGRATIONS: dict[str, tuple[str, str]] = {"daily": DAILY_MIGRATION, "regime": REGIME_MIGRATION}  # cadence -> file


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flows.feature_groups sql GROUP...`` prints a migration; ``list`` prints the registry."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["sql"] and args[1:]:
        groups = [group(n) for n in args[1:]]
        print(migration_sql(groups, MIGRATIONS[groups[0].cadence][1]), end="")
        return 0
    if args[:1] == ["list"]:
        for g in GROUPS:
            print(f"{g.name:12} {g.table:22} {g.cadence:6} lag={g.publication_lag} ttl={g.ttl} "
                  f"{', '.join(g.features)}")
        return 0
    print("usage: python -m flows.feature_groups (list | sql GROUP...)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
