"""The scoring step's daily side input: v1 models score as before, v2 models take the daily values known at each close.

Registries hold a real LightGBM member (exported to ONNX) and the ensemble built by training's own code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.errors import SettingsError
from flows.feature_groups import service_features
from flows.operators.daily_features import DailyFeatures, PollingDaily
from flows.operators.model_bank import ModelBank
from flows.operators.scoring import ScoringStep
from flows.records import FeatureRow
from flows.sources.daily import DailyFeed, FileSource, FrameSource
from tests.kit.daily_data import write_daily_files
from tests.kit.ensembles import member_oos, register_ensemble
from training.export.lightgbm_onnx import export_lightgbm
from training.models.lightgbm_model import LightGBMConfig, LightGBMModel
from training.registry import Parity, save_model

SYMBOLS = ("BTC/USDT", "ETH/USDT")
CFG = LightGBMConfig(params={"num_leaves": 7, "min_data_in_leaf": 20}, max_rounds=40, seed=3)
CLOSES = pd.date_range("2023-01-10", periods=72, freq="h", tz="UTC")


def _register(root: Path, service: str, lean_on: str) -> list[str]:
    feats = service_features(service)
    rng = np.random.default_rng(1)
    n = 1500
    frame = pd.DataFrame(rng.normal(size=(n, len(feats))), columns=feats)
    frame["fng"] = rng.uniform(0, 100, n) if "fng" in feats else 0.0
    sig = frame[lean_on] - frame[lean_on].mean()
    frame["label"] = ((sig / sig.std() + rng.normal(0, 0.5, n)) > 0).astype(int)
    frame["fwd_ret"] = np.where(frame["label"] == 1, 0.01, -0.01)
    frame["symbol"], frame["event_timestamp"] = "BTC/USDT", pd.date_range("2022-01-01", periods=n, freq="h", tz="UTC")
    model = LightGBMModel(CFG).fit_final(frame, 30, feats)
    exp = export_lightgbm(model, frame[feats].to_numpy()[:50])
    oos = member_oos(pd.date_range("2022-01-01", periods=300, freq="h", tz="UTC"), SYMBOLS, 3, 2, 1.0)
    out = oos.assign(event_timestamp=oos.event_timestamp.map(pd.Timestamp.isoformat))
    save_model(root, "lightgbm", files={"model.onnx": exp.onnx, "oos.csv": out.to_csv(index=False).encode()},
               feature_service=service, features=feats, train_start=frame.event_timestamp.min(),
               train_end=frame.event_timestamp.max(), data_hash="-", seeds={"seed": 3},
               config={"timeframe": "1h", "horizon": 1},
               metrics={"folds": [{"fold": k, "roc_auc": 0.6, "sharpe": 0.0} for k in range(3)],
                        "mean": {"roc_auc": 0.6, "sharpe": 0.0}}, parity=Parity(0.0, 1e-5, 1))
    register_ensemble(root, ["lightgbm"], calibrate=False, threshold=0.0)
    return feats


def _rows(seed: int = 4) -> list[FeatureRow]:
    rng = np.random.default_rng(seed)
    bar, cross = service_features("lstm_1h_v1"), ["corr_btc_60", "beta_btc_60", "ret_rel_xs"]
    out = []
    for t in CLOSES:
        ms = int(t.value // 10**6)
        for s in SYMBOLS:
            out.append(FeatureRow("bar_features", s, "1h", ms, dict(zip(bar, rng.normal(size=len(bar)), strict=True))))
            out.append(FeatureRow("cross_asset_features", s, "1h", ms,
                                  dict(zip(cross, rng.normal(size=3), strict=True))))
    return out


def _score(root: Path, daily: object | None) -> dict[tuple[str, int], float]:
    step = ScoringStep(SYMBOLS, "1h", ModelBank(root, "1h", policy_family=None), daily=daily)  # type: ignore[arg-type]
    preds = step.on_rows(_rows()) + step.on_rows([])
    return {(p.symbol, p.ts): p.probabilities["lightgbm"] for p in preds}


@pytest.fixture(scope="module")
def daily_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_daily_files(tmp_path_factory.mktemp("daily"))


def test_v1_models_load_and_score_without_a_daily_source(tmp_path: Path) -> None:
    _register(tmp_path, "lightgbm_1h_v1", "ret_1")
    got = _score(tmp_path, None)
    assert len(got) >= (len(CLOSES) - 1) * len(SYMBOLS) and all(0 < p < 1 for p in got.values())


def test_v2_models_refuse_to_score_without_a_daily_source(tmp_path: Path) -> None:
    _register(tmp_path, "lightgbm_1h_v2", "fng")
    with pytest.raises(SettingsError, match=r"take daily features \(diff_chg_14.*fng, .*daily\.source"):
        _score(tmp_path, None)


def test_v2_scores_use_the_daily_values_known_at_each_close_and_none_later(tmp_path: Path, daily_dir: Path) -> None:
    _register(tmp_path, "lightgbm_1h_v2", "fng")
    raw = {g: FileSource(daily_dir).raw(g) for g in ("fear_greed", "hash_rate", "difficulty", "funding")}
    a = _score(tmp_path, DailyFeatures(DailyFeed(FrameSource(raw))))
    t = CLOSES[30]
    changed = {k: v.copy() for k, v in raw.items()}
    fg = changed["fear_greed"]
    late = fg["date"] + pd.Timedelta(days=1, hours=1) > t  # every value not yet known at t
    fg.loc[late, "fng"] = 100 - fg.loc[late, "fng"]
    b = _score(tmp_path, DailyFeatures(DailyFeed(FrameSource(changed))))
    t_ms = int(t.value // 10**6)
    assert {k: v for k, v in a.items() if k[1] <= t_ms} == {k: v for k, v in b.items() if k[1] <= t_ms}
    assert any(a[k] != b[k] for k in a if k[1] > t_ms)  # the decisions after t do see the new values


def test_the_live_side_input_polls_when_the_next_value_is_due(daily_dir: Path, tmp_path: Path) -> None:
    d = write_daily_files(tmp_path / "d", days=120)  # up to 2023-01-28
    live = PollingDaily(DailyFeatures(DailyFeed(FileSource(d))), pd.Timedelta(minutes=15).to_pytimedelta())
    t = pd.Timestamp("2023-01-29 02:00", tz="UTC")  # 2023-01-28 known since 01:00 on the 29th
    assert live.features_as_of("fear_greed", t) is not None and live.polls == 0
    later = pd.Timestamp("2023-01-30 01:30", tz="UTC")  # 2023-01-29 is due but not in the file yet
    old = live.features_as_of("fear_greed", later)
    assert live.polls == 1
    write_daily_files(d, days=125)  # the provider publishes more days (the file source re-reads its files)
    live.daily.feed.source = FileSource(d)
    assert live.features_as_of("fear_greed", later + pd.Timedelta(minutes=5)) == old  # within the poll interval
    new = live.features_as_of("fear_greed", later + pd.Timedelta(minutes=15))
    assert live.polls == 2 and new != old
    offline = DailyFeatures(DailyFeed(FileSource(d)))
    assert new == offline.features_as_of("fear_greed", later + pd.Timedelta(minutes=15))
