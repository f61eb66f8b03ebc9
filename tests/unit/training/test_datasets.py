"""Point-in-time correctness: features never see the future, labels never see the past.

Real 1h candles of three assets go through the backfill (the flow's operators)
into the local profile; training sets come from Feast's get_historical_features
(DuckDB offline store).  Perturbing every price after t must leave every feature
and training row at or before t unchanged; perturbing every price before a
decision time must leave its label unchanged.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from flows import feast_store
from flows.operators.features import WARMUP
from flows.settings import load_settings
from tests.kit.repo import copy_feature_repo
from training.backfill import bars_from_frame, run_backfill
from training.datasets import build_training_set

ASSETS = ("BTC", "ETH", "SOL")
H = pd.Timedelta(hours=1)
HORIZON = 3


def _frames(shared_data) -> dict[str, pd.DataFrame]:
    out = {}
    for a in ASSETS:
        df = pd.read_parquet(shared_data / "binance-spot-1h" / f"{a}_USDT-1h.parquet").iloc[:WARMUP + 500].copy()
        df["ts"] = (df.ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
        out[f"{a}/USDT"] = df.reset_index(drop=True)
    return out


def _perturb(frames: dict[str, pd.DataFrame], mask_fn, seed: int) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    out = {}
    for sym, df in frames.items():
        df = df.copy()
        m = mask_fn(df)
        factor = rng.uniform(0.5, 1.5, m.sum())
        for col in ("open", "high", "low", "close"):
            df.loc[m, col] = df.loc[m, col] * factor
        df.loc[m, "volume"] = df.loc[m, "volume"] * rng.uniform(0.1, 3.0, m.sum())
        out[sym] = df
    return out


def _training_set(tmp, name, frames):
    repo = copy_feature_repo(tmp / name)
    settings = load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp / name / "var"),
                                  "CRYPTOSTREAM_FEAST_REPO": str(repo)})
    run_backfill(settings, {s: bars_from_frame(s, "1h", df) for s, df in frames.items()}, "1h")
    feast_store.apply(settings)
    t0 = pd.Timestamp(frames["BTC/USDT"].ts.iloc[0], unit="ms", tz="UTC")
    ds = build_training_set(settings, tuple(frames), "1h", str(t0), str(t0 + (WARMUP + 480) * H), "lightgbm_1h_v1",
                             HORIZON)
    return ds.set_index(["symbol", "event_timestamp"]).sort_index()


@pytest.fixture(scope="module")
def sets(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pit")
    frames = _frames(shared_data)
    cut = int(frames["BTC/USDT"].ts.iloc[WARMUP + 240])  # t: 240 hours after the features' warm-up
    future = _perturb(frames, lambda df: df.ts >= cut, seed=1)        # every bar that closes after t
    past = _perturb(frames, lambda df: df.ts < cut, seed=2)           # every bar that closes at or before t
    # three data directories that share nothing: one's `feast apply` (a subprocess) runs while another backfills
    with ThreadPoolExecutor(3) as pool:
        built = [pool.submit(_training_set, tmp, name, f) for name, f in
                 (("base", frames), ("future", future), ("past", past))]
        base, after_t, before_t = (job.result() for job in built)
    return pd.Timestamp(cut, unit="ms", tz="UTC"), base, after_t, before_t


def test_perturbing_the_future_changes_nothing_at_or_before_t(sets) -> None:
    t, base, future, _ = sets
    assert len(base) > 3 * 450
    at_or_before = base.index.get_level_values("event_timestamp") <= t
    features = [c for c in base.columns if c not in ("fwd_ret", "label")]
    pd.testing.assert_frame_equal(base.loc[at_or_before, features], future.loc[at_or_before, features])
    # labels whose window ends by t are unchanged too; later ones use the perturbed prices
    settled = base.index.get_level_values("event_timestamp") + HORIZON * H <= t
    pd.testing.assert_series_equal(base.loc[settled, "fwd_ret"], future.loc[settled, "fwd_ret"])
    after = ~at_or_before
    assert not np.allclose(base.loc[after, "ret_1"], future.loc[after, "ret_1"]), "the perturbation must bite"


def test_labels_use_only_prices_after_the_decision_time(sets) -> None:
    t, base, _, past = sets
    decided_from_t = base.index.get_level_values("event_timestamp") >= t
    pd.testing.assert_series_equal(base.loc[decided_from_t, "fwd_ret"], past.loc[decided_from_t, "fwd_ret"])
    pd.testing.assert_series_equal(base.loc[decided_from_t, "label"], past.loc[decided_from_t, "label"])
    before = base.index.get_level_values("event_timestamp") < t
    assert not np.allclose(base.loc[before, "fwd_ret"], past.loc[before, "fwd_ret"]), "the perturbation must bite"


def test_a_training_set_before_feast_apply_and_after_the_data_dir_moves_registers_the_repository(
        shared_data, tmp_path, capsys) -> None:
    """Never applied: apply and go on (was a raw FeatureServiceNotFoundException); moved data dir: its own
    registry (Feast's state lives under the data dir), applied there too (was 0 rows)."""
    frames = {s: df.iloc[:WARMUP + 200] for s, df in _frames(shared_data).items()}
    repo = copy_feature_repo(tmp_path)
    t0 = pd.Timestamp(frames["BTC/USDT"].ts.iloc[0], unit="ms", tz="UTC")
    sizes = []
    for where in ("first", "moved"):
        settings = load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp_path / where),
                                      "CRYPTOSTREAM_FEAST_REPO": str(repo)})
        run_backfill(settings, {s: bars_from_frame(s, "1h", df) for s, df in frames.items()}, "1h")
        ds = build_training_set(settings, tuple(frames), "1h", str(t0), str(t0 + (WARMUP + 190) * H), "lightgbm_1h_v1")
        sizes.append(len(ds))
        err = capsys.readouterr().err
        assert "running feast apply" in err
        assert "not registered yet" in err  # the registry lives under the data dir: a moved one starts empty
    assert sizes[0] == sizes[1] > 3 * 100
    again = build_training_set(settings, tuple(frames), "1h", str(t0), str(t0 + (WARMUP + 190) * H), "lightgbm_1h_v1")
    assert len(again) == sizes[1] and "feast apply" not in capsys.readouterr().err  # registered now: no apply
