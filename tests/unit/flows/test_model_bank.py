"""The model bank loads only its timeframe's versions (issue 20, item 1: the new user's 1h backtest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.decisions_flow import verify_deployment
from flows.go_live import deployed_versions
from flows.operators.model_bank import ModelBank, models_problem
from flows.settings import SettingsError, load_settings
from inference.manifest import (
    TensorSpec,
    TimeframeMismatch,
    check_policy,
    pointer_name,
    read_manifest,
)
from tests.kit.lstm_data import FEATS
from tests.kit.registries import SERVICES, champion_registry, registered  # noqa: F401  (fixtures: reg)
from training.registry import Parity, save_model

SPEC = (TensorSpec("x", (None, 2)),)


def fake(root: Path, family: str, service: str) -> str:
    """Register a version whose graph is never opened (the timeframe check comes first)."""
    return save_model(root, family, files={"policy.onnx": b"never opened"}, feature_service=service,
                      features=list(FEATS), train_start="2023-12-01T00:00:00Z", train_end="2023-12-31T00:00:00Z",
                      data_hash="0" * 64, seeds={"seed": 0}, config={}, metrics={"folds": [], "mean": {}},
                      parity=Parity(0.0, 1e-5, 1), inputs=SPEC, outputs=SPEC, promoted_by="test").version


def settings_for(root: Path, tmp_path: Path, policy: str = "rl_tactical"):
    return load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp_path), "CRYPTOSTREAM_SCORING__REGISTRY": str(root),
                              "CRYPTOSTREAM_BARS__TIMEFRAMES": "1h", "CRYPTOSTREAM_SCORING__POLICY_FAMILY": policy})


def test_a_1h_run_refuses_the_demos_1m_policy_and_says_what_to_train(reg, tmp_path) -> None:
    root, _, _ = reg
    fake(root, "rl_tactical", "lightgbm_1m_v1")  # the demo's policy, registered after the 1h ensemble
    wanted = r"no 1h version of 'rl_tactical'.*its timeframes: 1m.*python -m training.rl train tactical --timeframe 1h"
    with pytest.raises(TimeframeMismatch, match=wanted):  # the backtest's and the flow's bank
        ModelBank(root, "1h", service_features=SERVICES, feed=FEATS)
    settings = settings_for(root, tmp_path)
    with pytest.raises(TimeframeMismatch, match=wanted):  # the gate judges what would be deployed
        deployed_versions(settings)
    with pytest.raises(SettingsError, match="scoring.registry .*" + wanted):  # the flow stops at start
        verify_deployment(settings)
    bank = ModelBank(root, "1h", policy_family=None, service_features=SERVICES, feed=FEATS)
    assert bank.policy is None and bank.versions()["ensemble"]  # without a policy it scores


def test_a_policy_observing_another_service_than_the_ensembles_is_refused(reg) -> None:
    root, _, _ = reg
    ens = read_manifest(root / "ensemble" / (root / "ensemble" / pointer_name("1h")).read_text().strip())
    policy = read_manifest(root / "rl_tactical" / fake(root, "rl_tactical", "lightgbm_1h_v2"))
    with pytest.raises(TimeframeMismatch, match=r"observes lightgbm_1h_v2 but the ensemble .* scores ensemble_1h_v1: "
                                                r"train a 1h policy with python -m training.rl train tactical"):
        check_policy(policy, ens)


def test_the_flow_without_a_1h_ensemble_says_which_timeframes_the_registry_holds(tmp_path) -> None:
    fake(tmp_path, "ensemble", "ensemble_1m_v1")
    problem = models_problem(tmp_path, "1h")
    assert problem is not None and "its timeframes: 1m" in problem and "--timeframe 1h" in problem


def test_a_swap_to_another_timeframes_version_is_refused_and_the_bank_scores_on(reg) -> None:
    root, _, _ = reg
    bank = ModelBank(root, "1h", policy_family=None, service_features=SERVICES, feed=FEATS)
    before = bank.versions()
    wrong = fake(root, "ensemble", "ensemble_1m_v1")
    (root / "ensemble" / pointer_name("1h")).write_text(wrong + "\n")  # a hand-edited pointer
    bank.request_swap()
    assert not bank.maybe_swap()
    assert bank.versions() == before and "trained on 1m bars, not 1h" in (bank.swap_error or "")


def test_the_gnn_scores_clusters_only_above_the_cluster_size(reg) -> None:
    root, _, _ = reg  # a GNN over three symbols
    clustered = ModelBank(root, "1h", policy_family=None, service_features=SERVICES, feed=FEATS, gnn_cluster_size=2)
    dense = ModelBank(root, "1h", policy_family=None, service_features=SERVICES, feed=FEATS, gnn_cluster_size=3)
    assert clustered.ensemble.scorer.runners["gnn"].runner.cluster_size == 2  # type: ignore[attr-defined]
    assert dense.ensemble.scorer.runners["gnn"].runner.cluster_size == 0  # type: ignore[attr-defined]
    clustered.request_swap()
    assert clustered.maybe_swap() and clustered.gnn_cluster_size == 2  # a reload keeps the setting


def test_history_mode_members_on_the_stacked_rows_equal_them_on_per_bar_matrices_bit_for_bit(reg) -> None:
    """The GNN with every node in node order (rows taken as nodes) and the LSTM on stacked rows (``history_rows``)."""
    import numpy as np

    from flows.operators.model_bank import gnn_many
    from inference.lstm_stream import LstmRunner
    from inference.runners import GnnGraphRunner

    root, held, _ = reg
    wide = held.pivot(index="event_timestamp", columns="symbol")
    nodes = ModelBank(root, "1h", policy_family=None, service_features=SERVICES, feed=FEATS)
    gnn = nodes.ensemble.scorer.runners["gnn"]
    assert isinstance(gnn, GnnGraphRunner)
    symbols = tuple(gnn.symbols)
    x3 = np.stack([wide[f][list(symbols)].to_numpy(np.float64) for f in FEATS], axis=2)  # [bars, symbols, feed]
    x3[5, 1, :] = np.nan  # a missing return and features: NaN as 0, as the per-bar placement treats them
    xs = list(x3)
    flat = np.concatenate(xs)
    order = (1, 0, *range(2, len(symbols)))  # another row order: the placement path
    shuffled = [x[list(order)] for x in xs]
    other = ModelBank(root, "1h", policy_family=None, service_features=SERVICES, feed=FEATS).ensemble.scorer.runners
    assert isinstance(other["gnn"], GnnGraphRunner)
    got, want = [], []
    for k in range(0, len(xs), 40):
        got.append(gnn_many(gnn, [symbols] * len(xs[k:k + 40]), xs[k:k + 40], flat[k * len(symbols):(k + 40) * len(symbols)]))
        p = gnn_many(other["gnn"], [tuple(symbols[i] for i in order)] * len(xs[k:k + 40]), shuffled[k:k + 40])
        want.append(p.reshape(-1, len(symbols))[:, list(np.argsort(order))].reshape(-1))
    assert np.isfinite(np.concatenate(want)).sum() > 100
    assert np.concatenate(got).tobytes() == np.concatenate(want).tobytes()
    lstm, lstm_other = nodes.ensemble.scorer.runners["lstm"], other["lstm"]
    assert isinstance(lstm, LstmRunner) and isinstance(lstm_other, LstmRunner)
    times = [int(t.value // 1_000_000) for t in wide.index]
    rows = lstm.history_rows([symbols] * len(xs), flat, times)
    per_bar = np.concatenate(lstm_other.history([symbols] * len(xs), xs, times))
    assert rows.tobytes() == per_bar.tobytes() and np.isfinite(rows).sum() > 100
    assert lstm.stream.snapshot() == lstm_other.stream.snapshot()
