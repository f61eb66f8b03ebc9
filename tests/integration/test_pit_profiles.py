"""Point-in-time sets on both profiles: the same real bars give the same training set, row for row.

The same real 1h candles are backfilled into the embedded profile (parquet,
``flows.stores.feast_parquet``) and into TimescaleDB (``flows.stores.feast_timescale``);
the training sets of ``training.datasets`` must be equal exactly, and an analyst's
entity frame with extra columns of every common dtype comes back whole from both,
with the features of an independent as-of join (pandas ``merge_asof`` with Feast's
ttl rule) and of Feast's own DuckDB and PostgreSQL offline stores.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from flows import feast_store
from flows.feature_catalog import BAR_FEATURES, CROSS_FEATURES
from flows.settings import Settings, load_settings
from infra.db import ensure_database, migrate
from tests.kit.repo import copy_feature_repo
from training.backfill import bars_from_frame, run_backfill
from training.datasets import build_training_set, load_bars

pytestmark = pytest.mark.integration
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
ROWS = 953  # hourly bars per symbol: 313 warm up (features.WARMUP), then 640 with features
TTL = timedelta(days=2)  # the feature views' ttl (feature_repo/definitions.py)


@pytest.fixture(scope="module")
def candles(shared_data) -> dict[str, pd.DataFrame]:
    frames = {}
    for s in SYMBOLS:
        df = pd.read_parquet(shared_data / "binance-spot-1h" / f"{s.replace('/', '_')}-1h.parquet")
        df = df.iloc[3000:3000 + ROWS].copy()
        df["ts"] = (df.ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
        frames[s] = df.reset_index(drop=True)
    # a gap of 60 hours in SOL (longer than the ttl), so some rows have no features within it
    frames["SOL/USDT"] = frames["SOL/USDT"].drop(index=range(653, 713)).reset_index(drop=True)
    return frames


def _profile(tmp, name: str, env: dict[str, str], candles: dict[str, pd.DataFrame]) -> Settings:
    repo = copy_feature_repo(tmp / name)
    settings = load_settings(env={"CRYPTOSTREAM_PROFILE": name, "CRYPTOSTREAM_DATA_DIR": str(tmp / name / "var"),
                                  "CRYPTOSTREAM_FEAST_REPO": str(repo), **env})
    run_backfill(settings, {s: bars_from_frame(s, "1h", df) for s, df in candles.items()}, "1h")
    feast_store.apply(settings)
    return settings


@pytest.fixture(scope="module")
def profiles(tmp_path_factory, candles, timescale_dsn, redis_url) -> Iterator[dict[str, Settings]]:
    """Both profiles loaded with the same candles (one scratch database for the module's tests, which only read)."""
    tmp = tmp_path_factory.mktemp("pit")
    name = f"cryptostream_test_{uuid.uuid4().hex[:10]}"
    dsn = make_conninfo(timescale_dsn, dbname=name)
    ensure_database(dsn)
    try:
        migrate(dsn)
        yield {"local": _profile(tmp, "local", {}, candles),
               "timescale": _profile(tmp, "timescale", {"TIMESCALE_DSN": dsn, "REDIS_URL": redis_url}, candles)}
    finally:
        with psycopg.connect(make_conninfo(timescale_dsn, dbname="postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _window(candles: dict[str, pd.DataFrame]) -> tuple[str, str]:
    ts = candles["BTC/USDT"].ts
    return str(pd.Timestamp(ts.iloc[0], unit="ms", tz="UTC")), str(pd.Timestamp(ts.iloc[-1], unit="ms", tz="UTC"))


@pytest.mark.parametrize(("service", "horizon"), [("lightgbm_1h_v1", 4), ("lstm_1h_v1", 1)])
def test_the_training_set_from_timescale_equals_the_embedded_one_row_for_row(profiles, candles, service,
                                                                              horizon) -> None:
    start, end = _window(candles)
    local = build_training_set(profiles["local"], SYMBOLS, "1h", start, end, service, horizon)
    timescale = build_training_set(profiles["timescale"], SYMBOLS, "1h", start, end, service, horizon)
    sizes = local.groupby("symbol").size()
    assert local["label"].dtype == np.int64 and len(sizes) == 3 and sizes.min() > 300, sizes
    pd.testing.assert_frame_equal(timescale, local, check_exact=True)


def _reference(entity: pd.DataFrame, table: pd.DataFrame, names: tuple[str, ...]) -> pd.DataFrame:
    """An independent as-of join: the newest row at or before each time, if it is not older than the ttl."""
    right = table[["symbol", "ts", *names]].rename(columns={"ts": "fts"}).sort_values("fts")
    left = entity[["row", "symbol", "event_timestamp"]].sort_values("event_timestamp")
    got = pd.merge_asof(left, right, left_on="event_timestamp", right_on="fts", by="symbol", direction="backward")
    stale = got.fts.isna() | (got.fts < got.event_timestamp - TTL)
    got.loc[stale, list(names)] = np.nan
    return got.sort_values("row").reset_index(drop=True)


def test_an_analyst_entity_frame_with_extra_columns_comes_back_whole_on_both_profiles(profiles, candles) -> None:
    start, end = (pd.Timestamp(t) for t in _window(candles))
    rng = np.random.default_rng(5)
    n = 400
    times = pd.to_datetime(rng.integers((start - pd.Timedelta(hours=10)).value, (end + pd.Timedelta(days=3)).value,
                                        n), utc=True).floor("s")
    entity = pd.DataFrame({
        "row": np.arange(n, dtype=np.int64),
        "symbol": rng.choice(SYMBOLS, n),
        "event_timestamp": times,
        "flag": rng.integers(-3, 3, n).astype(np.int8),  # the dtype Feast's own store uploaded as "tinyint"
        "small": rng.integers(0, 200, n).astype(np.uint8),
        "mid": rng.integers(-1000, 1000, n).astype(np.int32),
        "weight": rng.normal(size=n).astype(np.float32),
        "chosen": rng.random(n) < 0.5,
        "note": rng.choice(["a", "b", "", "with 'quote', comma"], n),
        "decided_at": times - pd.Timedelta(minutes=5),
    })
    entity.loc[7, "weight"] = np.nan
    entity = pd.concat([entity, entity.iloc[[3, 3]]], ignore_index=True)  # duplicate rows stay duplicates
    # exact bar closes as well as times between them
    entity.loc[:50, "event_timestamp"] = entity.loc[:50, "event_timestamp"].dt.floor("h")
    refs = [f"bar_features_1h:{f}" for f in BAR_FEATURES] + [f"cross_asset_features_1h:{f}" for f in CROSS_FEATURES]
    extra = [c for c in entity.columns if c not in ("symbol", "event_timestamp")]

    bars = load_bars(profiles["local"], SYMBOLS, "1h", start - pd.Timedelta(days=30), end + pd.Timedelta(days=30))
    assert len(bars) == 3 * ROWS - 60
    tables = {}
    for name, settings in profiles.items():
        store = feast_store.open_store(settings)
        got = store.get_historical_features(entity_df=entity, features=refs).to_df()
        assert len(got) == len(entity), name
        assert list(got.columns) == [*entity.columns, *BAR_FEATURES, *CROSS_FEATURES], name
        got = got.sort_values(["row", "event_timestamp"], kind="stable").reset_index(drop=True)
        for c in extra:  # every extra column comes back with its values and dtype
            want = entity.sort_values("row", kind="stable").reset_index(drop=True)[c]
            if c == "decided_at":  # Feast's DuckDB store hands timestamps back in microseconds: same instants
                pd.testing.assert_series_equal(pd.to_datetime(got[c], utc=True).astype(want.dtype), want,
                                               check_names=False)
            else:
                assert got[c].dtype == want.dtype, (name, c, got[c].dtype)
                pd.testing.assert_series_equal(got[c], want, check_names=False)
        tables[name] = got

    feats = _history(profiles["local"], "bar_features")
    cross = _history(profiles["local"], "cross_asset_features")
    reference = _reference(tables["local"], feats, BAR_FEATURES).merge(
        _reference(tables["local"], cross, CROSS_FEATURES).drop(columns=["symbol", "event_timestamp", "fts"]),
        on="row")
    assert reference[list(BAR_FEATURES)].isna().all(axis=1).sum() > 10  # some rows have nothing within the ttl
    for name, got in tables.items():
        for names in (BAR_FEATURES, CROSS_FEATURES):
            np.testing.assert_array_equal(got[list(names)].to_numpy(float),
                                          reference.drop_duplicates("row").set_index("row")
                                          .loc[got["row"], list(names)].to_numpy(float), err_msg=name)

    # Feast's own stores (DuckDB for local, PostgreSQL for timescale) give the same features
    for name, settings in profiles.items():
        keys = entity[["row", "symbol", "event_timestamp"]]  # Feast's PostgreSQL store cannot take int8 ("tinyint")
        theirs = _stock_store(settings).get_historical_features(entity_df=keys, features=refs).to_df()
        theirs = theirs.sort_values(["row", "event_timestamp"], kind="stable").reset_index(drop=True)
        names = [*BAR_FEATURES, *CROSS_FEATURES]
        np.testing.assert_array_equal(theirs[names].to_numpy(float), tables[name][names].to_numpy(float),
                                      err_msg=name)

    # full feature names: the same values under "<view>__<feature>"
    store = feast_store.open_store(profiles["timescale"])
    full = store.get_historical_features(entity_df=entity, features=refs, full_feature_names=True).to_df()
    full = full.sort_values(["row", "event_timestamp"], kind="stable").reset_index(drop=True)
    np.testing.assert_array_equal(full[f"bar_features_1h__{BAR_FEATURES[0]}"].to_numpy(float),
                                  tables["timescale"][BAR_FEATURES[0]].to_numpy(float))


def _history(settings: Settings, table: str) -> pd.DataFrame:
    from flows.feature_catalog import offline_dir

    files = sorted(offline_dir(settings.data_dir, table, "1h").glob("*.parquet"))
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    df["ts"] = pd.to_datetime(df["ts"], utc=True).astype("datetime64[ns, UTC]")
    return df


def _stock_store(settings: Settings):
    """The profile's repository opened with Feast's own offline store instead of the project's plugin."""

    yaml = feast_store.profile_yaml(settings)
    text = yaml.read_text()
    for plugin, stock in (("flows.stores.feast_parquet.ParquetOfflineStore", "duckdb"),
                          ("flows.stores.feast_timescale.TimescaleOfflineStore", "postgres")):
        text = text.replace(f"type: {plugin}", f"type: {stock}")
    assert "flows.stores.feast_parquet" not in text and "flows.stores.feast_timescale" not in text
    # (the registry and online store stay the project's data-dir classes: they only place Feast's own files)
    path = yaml.with_name("stock.yaml")
    path.write_text(text)
    return feast_store.open_store(settings, path)
