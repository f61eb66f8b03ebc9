"""A promotion by the retraining job reaches a running scorer without a restart (issue 20, item 2)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import numpy as np
import pytest

from flows.operators.model_bank import ModelBank
from flows.operators.scoring import ScoringStep
from flows.records import FeatureRow
from flows.settings import load_settings
from flows.wiring import swap_watch
from inference.manifest import pointed_timeframes
from inference.promotions import read_events
from tests.kit.lstm_data import FEATS
from tests.kit.registries import SERVICES, add_ensemble, champion_registry, registered  # noqa: F401  (fixtures: reg)
from training.retrain import RetrainJob


def rows_by_bar(held):
    for t, bar in held.groupby("event_timestamp", sort=True):
        ts = int(t.value // 1_000_000)
        yield [FeatureRow("bar_features", r.symbol, "1h", ts, {"ret_1": r.ret_1, "f1": r.f1}) for _, r in
               bar.iterrows()] + [FeatureRow("cross_asset_features", r.symbol, "1h", ts, {"f2": r.f2})
                                  for _, r in bar.iterrows()]


def test_the_promoted_ensemble_is_scored_at_the_next_bar_and_the_lstm_keeps_its_state(reg, tmp_path) -> None:
    reg, held, native = reg
    settings = load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp_path), "CRYPTOSTREAM_SCORING__REGISTRY": str(reg),
                                  "CRYPTOSTREAM_BARS__TIMEFRAMES": "1h", "CRYPTOSTREAM_SCORING__POLICY_FAMILY": ""})
    bank = ModelBank(reg, "1h", policy_family=None, service_features=SERVICES, feed=FEATS)
    watch = swap_watch(settings)  # what the running flow checks at each bar time (flows.decisions_flow)
    step = ScoringStep(tuple(sorted(held.symbol.unique())), "1h", bank)
    bars = list(rows_by_bar(held))

    def score(rows):
        if watch.changed():
            bank.request_swap()
        return [p for r in rows for p in step.on_row(r)]

    before = [p for rows in bars[:20] for p in score(rows)]
    champion, lstm = bank.versions()["ensemble"], bank.ensemble.scorer.runners["lstm"]
    seen = lstm.stream.snapshot()["seen"]  # bars each symbol's LSTM state has taken in

    staging = tmp_path / "staging"  # the job trains its challenger there; here the same members, new weights
    shutil.copytree(reg, staging)
    challenger = add_ensemble(staging, held, native, weights=(0.2, 0.4, 0.4), set_latest=False).version
    job = RetrainJob(settings, "weekly", datetime(2024, 1, 8, tzinfo=UTC), notify=[].append)
    job.staging = staging
    job.promote({"ensemble": challenger})

    assert pointed_timeframes(reg, "ensemble")["1h"] == challenger
    assert bank.versions()["ensemble"] == champion  # nothing reloads before the next bar
    after = score(bars[20])
    assert bank.swaps == 1 and after[0].versions["ensemble"] == challenger
    assert bank.ensemble.scorer.runners["lstm"] is lstm  # the unchanged member's runner, with its state
    assert np.isfinite(after[0].probabilities["lstm"]) and before[-1].versions["ensemble"] == champion
    assert lstm.stream.snapshot()["seen"] == [n + 1 for n in seen] and min(seen) >= 20  # continued, not restarted
    assert [e.kind for e in read_events(reg, "1h")][-2:] == ["promote", "retrain:promote"]
    assert score(bars[21]) and bank.swaps == 1  # the key did not move again: no second reload


def test_a_promotion_the_flows_cannot_be_told_of_is_undone(reg, tmp_path) -> None:
    reg, held, native = reg
    settings = load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp_path), "CRYPTOSTREAM_SCORING__REGISTRY": str(reg),
                                  "CRYPTOSTREAM_BARS__TIMEFRAMES": "1h", "CRYPTOSTREAM_SCORING__POLICY_FAMILY": ""})
    (tmp_path / "cryptostream_models_swap").mkdir()  # the swap key's file cannot be written
    champion = pointed_timeframes(reg, "ensemble")["1h"]
    staging = tmp_path / "staging"
    shutil.copytree(reg, staging)
    challenger = add_ensemble(staging, held, native, weights=(0.2, 0.4, 0.4), set_latest=False).version
    job = RetrainJob(settings, "weekly", datetime(2024, 1, 8, tzinfo=UTC), notify=[].append)
    job.staging = staging
    with pytest.raises(IsADirectoryError):
        job.promote({"ensemble": challenger})
    assert pointed_timeframes(reg, "ensemble")["1h"] == champion
    last = read_events(reg, "1h")[-1]
    assert last.kind == "rollback" and "swap key not written" in last.detail["reason"]
