"""Daily groups are point in time: a value of day D is known at D + 1 day + the publication lag.

Perturbation: change every daily value not yet known at t -> no daily feature, no training row of
the v2 service (Feast's point-in-time join over the local offline store) at or before t changes,
while later ones do (the test could fail).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows import feast_store
from flows.feature_groups import daily_groups, group
from flows.operators.daily_features import DailyFeatures
from flows.settings import load_settings
from flows.sources.daily import DailyFeed, FileSource, FrameSource
from tests.kit.daily_data import write_daily_files
from tests.kit.repo import copy_feature_repo
from training.backfill import bars_from_frame, run_backfill
from training.daily_backfill import backfill_daily
from training.datasets import build_training_set

T = pd.Timestamp("2023-01-20 13:00", tz="UTC")
SYMBOLS = ("BTC/USDT", "ETH/USDT")


def _raw(folder: Path) -> dict[str, pd.DataFrame]:
    src = FileSource(folder)
    return {g.name: src.raw(g.name) for g in daily_groups()}


def _perturbed(raw: dict[str, pd.DataFrame], t: pd.Timestamp, lags: dict[str, timedelta], seed: int = 3
               ) -> dict[str, pd.DataFrame]:
    """Change every raw value whose known-at time is after t."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, df in raw.items():
        g = group(name)
        df = df.copy()
        m = (df["date"] + pd.Timedelta(days=1) + pd.Timedelta(lags.get(name, g.publication_lag))) > t
        for c in g.raw:
            df.loc[m, c] = df.loc[m, c] * rng.uniform(0.3, 3.0, int(m.sum()))
        out[name] = df
    return out


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    return _raw(write_daily_files(tmp_path_factory.mktemp("daily")))


@pytest.mark.parametrize("lags", [{}, {"fear_greed": timedelta(hours=9), "funding": timedelta(0)}])
def test_no_daily_feature_known_at_or_before_t_changes_when_later_values_change(
        raw: dict[str, pd.DataFrame], lags: dict[str, timedelta]) -> None:
    a = DailyFeatures(DailyFeed(FrameSource(raw), lags))
    b = DailyFeatures(DailyFeed(FrameSource(_perturbed(raw, T, lags)), lags))
    hours = pd.date_range(T - pd.Timedelta(days=40), T, freq="h")
    for g in daily_groups():
        fa, fb = a.frame(g.name), b.frame(g.name)
        lag = pd.Timedelta(lags.get(g.name, g.publication_lag))
        assert (fa["ts"] == fa["date"] + pd.Timedelta(days=1) + lag).all()  # the event timestamp is known-at
        pd.testing.assert_frame_equal(fa[fa.ts <= T], fb[fb.ts <= T])
        assert not fa[fa.ts > T].reset_index(drop=True).equals(fb[fb.ts > T].reset_index(drop=True)), g.name
        assert all(a.features_as_of(g.name, h) == b.features_as_of(g.name, h) for h in hours), g.name
        # day D's value is served from D + 1 day + lag on; a second earlier, day D - 1's still is
        day, prev = fa.iloc[40], fa.iloc[39]
        assert a.features_as_of(g.name, day.ts) == {c: float(day[c]) for c in g.features}
        assert a.features_as_of(g.name, day.ts - pd.Timedelta(seconds=1)) == {c: float(prev[c]) for c in g.features}


def _bars(seed: int) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2022-12-20", "2023-01-26", freq="h", inclusive="left")
    out = {}
    for s in SYMBOLS:
        c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(ts))))
        o = np.r_[c[0], c[:-1]]
        out[s] = pd.DataFrame({"ts": ts.astype("int64") // 10**6, "open": o, "high": np.maximum(o, c) * 1.002,
                               "low": np.minimum(o, c) * 0.998, "close": c, "volume": rng.uniform(1, 10, len(ts))})
    return out


def _training_set(tmp: Path, name: str, raw: dict[str, pd.DataFrame]) -> pd.DataFrame:
    repo = copy_feature_repo(tmp / name)
    settings = load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp / name / "var"),
                                  "CRYPTOSTREAM_FEAST_REPO": str(repo), "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS)})
    run_backfill(settings, {s: bars_from_frame(s, "1h", df) for s, df in _bars(5).items()}, "1h")
    backfill_daily(settings, SYMBOLS, DailyFeatures(DailyFeed(FrameSource(raw))))
    feast_store.apply(settings)
    ds = build_training_set(settings, SYMBOLS, "1h", "2023-01-10", "2023-01-25", "lightgbm_1h_v2", 2)
    return ds.set_index(["symbol", "event_timestamp"]).sort_index()


def test_no_v2_training_row_at_or_before_t_changes_when_later_daily_values_change(
        tmp_path: Path, raw: dict[str, pd.DataFrame]) -> None:
    a = _training_set(tmp_path, "a", raw)
    b = _training_set(tmp_path, "b", _perturbed(raw, T, {}))
    daily_cols = [f for g in daily_groups() for f in g.features]
    assert set(daily_cols) <= set(a.columns) and len(a) > 500
    ta = a[a.index.get_level_values(1) <= T]
    pd.testing.assert_frame_equal(ta, b[b.index.get_level_values(1) <= T])
    later = a.index.get_level_values(1) > T + pd.Timedelta(days=1, hours=2)
    assert not np.allclose(a.loc[later, daily_cols].to_numpy(), b.loc[later, daily_cols].to_numpy())
    # each row holds the daily values known at its time
    d = DailyFeatures(DailyFeed(FrameSource(raw)))
    for (sym, ts), row in ta.iloc[::97].iterrows():
        want = d.vector_as_of([g.name for g in daily_groups()], ts)
        assert {c: row[c] for c in daily_cols} == pytest.approx(want), (sym, ts)
