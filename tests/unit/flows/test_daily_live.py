"""Live: the flow keeps the daily groups current in the online store, with the values the offline path has."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from bytewax.testing import TestingSource, run_main

from flows import feast_store
from flows.feature_groups import daily_groups
from flows.live import build_flow
from flows.operators.daily_features import DailyFeatures, DailyRowEmitter, PollingDaily
from flows.settings import load_settings
from flows.sources.daily import DailyFeed, FileSource
from tests.kit.daily_data import write_daily_files
from tests.kit.live_flow import SYMBOLS, T0, market
from tests.kit.repo import copy_feature_repo


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_daily_files(tmp_path_factory.mktemp("daily"), start="2023-06-01", days=170)  # to 2023-11-17


def test_the_emitter_gives_each_row_once_when_it_becomes_known(folder: Path) -> None:
    offline = DailyFeatures(DailyFeed(FileSource(folder)))
    live = DailyRowEmitter(PollingDaily(DailyFeatures(DailyFeed(FileSource(folder))), pd.Timedelta(
        minutes=15).to_pytimedelta()), SYMBOLS)
    closes = pd.date_range("2023-11-01 00:00", "2023-11-06 00:00", freq="h", tz="UTC")
    got = [r for t in closes for r in live.on_close(int(t.value // 10**6))]
    # at the first close each group's latest known row, then every row as its known-at time passes
    want = []
    for g in daily_groups():
        f = offline.frame(g.name)
        at0 = f[f.ts <= closes[0]].ts.iloc[-1]
        want += [r for r in offline.rows(SYMBOLS, at0, closes[-1] + pd.Timedelta(seconds=1)) if r.table == g.table]
    assert sorted(got) == sorted(want) and len(got) == 4 * 6 * len(SYMBOLS)
    assert live.on_close(int(closes[-1].value // 10**6)) == []  # nothing twice


def test_live_online_daily_values_equal_the_offline_values(tmp_path: Path, folder: Path) -> None:
    repo = copy_feature_repo(tmp_path)
    settings = load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp_path / "var"),
                                  "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS), "CRYPTOSTREAM_FEAST_REPO": str(repo),
                                  "CRYPTOSTREAM_DAILY__SOURCE": "files", "CRYPTOSTREAM_DAILY__FOLDER": str(folder)})
    run_main(build_flow(settings, TestingSource(market(minutes=70))))
    end = pd.Timestamp(T0 + 70 * 60_000, unit="ms", tz="UTC")
    offline = DailyFeatures(DailyFeed(FileSource(folder)))
    store = feast_store.open_store(settings)
    for g in daily_groups():
        refs = [f"{g.table}_1d:{f}" for f in g.features]
        online = store.get_online_features(features=refs, entity_rows=[{"symbol": s} for s in SYMBOLS]).to_dict()
        want = offline.features_as_of(g.name, end)
        assert want is not None
        for f in g.features:
            assert online[f] == [pytest.approx(want[f], rel=1e-12)] * len(SYMBOLS), (g.name, f)
    # the history the flow wrote holds the same rows, with the same event timestamps, as the backfill writes
    import pyarrow.parquet as pq

    t = pq.read_table(tmp_path / "var" / "offline" / "daily_funding_1d").to_pandas()
    f = offline.frame("funding")
    last = f[f.ts <= end].iloc[-1]
    assert set(t["ts"]) == {last.ts} and sorted(t["symbol"]) == sorted(SYMBOLS)
    assert t["fund_z_30"].tolist() == [last.fund_z_30] * len(SYMBOLS)
