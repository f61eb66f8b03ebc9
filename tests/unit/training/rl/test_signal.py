"""The ensemble's probability for the tactical policy: out of sample, point in time, aligned by decision time."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper

from inference.scorer import open_session
from tests.kit.rl import market
from training.registry import Parity, save_model
from training.rl.envs.tactical import TacticalConfig, TacticalEnv
from training.rl.signal import ensemble_oos_probability, with_signal
from training.train import TrainJob, train_ensemble

MEMBERS = ("lightgbm", "gnn")
FOLDS, SYMBOLS, PER_FOLD = 4, ("A/USDT", "B/USDT"), 150


def _identity_onnx() -> bytes:
    """A valid stand-in graph for a member whose out-of-sample rows are all these tests read."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])
    y = helper.make_tensor_value_info("p", TensorProto.FLOAT, [None, 1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["p"])], "member", [x], [y])
    return onnx.helper.make_model(graph).SerializeToString()  # type: ignore[no-any-return]


def _oos(seed: int, strength: float, labels: np.ndarray | None = None) -> pd.DataFrame:
    """Fold predictions of one member: P(up) that leans toward the label by ``strength``."""
    rng = np.random.default_rng(seed)
    times = pd.date_range("2023-01-01", periods=FOLDS * PER_FOLD, freq="h", tz="UTC")
    frame = pd.DataFrame([(s, t, i // PER_FOLD) for i, t in enumerate(times) for s in SYMBOLS],
                         columns=["symbol", "event_timestamp", "fold"])
    drawn = rng.integers(0, 2, len(frame))  # drawn either way: the noise below is the same draw
    y = drawn if labels is None else labels
    frame["label"], frame["fwd_ret"] = y, np.where(y == 1, 0.01, -0.01)
    frame["p"] = 1.0 / (1.0 + np.exp(-(strength * (2 * y - 1) + rng.normal(0, 1, len(frame)))))
    return frame


def _member(root: Path, family: str, oos: pd.DataFrame, aucs: list[float]) -> None:
    out = oos.assign(event_timestamp=oos.event_timestamp.map(pd.Timestamp.isoformat))
    folds = [{"fold": k, "roc_auc": a, "sharpe": 0.0} for k, a in enumerate(aucs)]
    save_model(root, family, files={"model.onnx": _identity_onnx(), "oos.csv": out.to_csv(index=False).encode()},
               feature_service=f"{family}_1h_v1", features=["f"], train_start="2023-01-01T00:00Z", train_end="2023-02-01T00:00Z",
               data_hash="-", seeds={"seed": 0}, config={"timeframe": "1h", "horizon": 1},
               metrics={"folds": folds, "mean": {"roc_auc": float(np.mean(aucs)), "sharpe": 0.0}},
               parity=Parity(0.0, 1e-6, 1))


def _registry(root: Path, labels: np.ndarray | None = None, **ensemble: object) -> Path:
    first = _oos(1, 0.3, labels)
    _member(root, "lightgbm", first, [0.52, 0.60, 0.55, 0.53])
    _member(root, "gnn", _oos(2, 0.1, first["label"].to_numpy()), [0.58, 0.51, 0.50, 0.56])
    train_ensemble(TrainJob(family="ensemble", registry=root, log_dir=root / "logs", work_dir=root / "work",
                            members=MEMBERS, **ensemble))  # type: ignore[arg-type]
    return root


def test_fold_k_uses_only_earlier_folds_fold_0_is_left_out_and_the_record_says_how(tmp_path: Path) -> None:
    base, record = ensemble_oos_probability(_registry(tmp_path / "a"))
    assert sorted(base["fold"].unique()) == [1, 2, 3] and len(base) == 3 * PER_FOLD * len(SYMBOLS)
    assert record["calibrated"] and record["method"] == "performance" and len(record["folds"]) == 3
    # the weights of fold 1 come from fold 0's AUCs alone (0.52 vs 0.58 -> 0.02 : 0.08), not the means over all
    assert record["folds"][0]["weights"] == pytest.approx([0.2, 0.8])
    # other labels in the last fold (and so other member AUCs there) leave every earlier fold's probability alone
    labels = _oos(1, 0.3)["label"].to_numpy().copy()
    labels[-PER_FOLD * len(SYMBOLS):] = 1 - labels[-PER_FOLD * len(SYMBOLS):]
    changed, _ = ensemble_oos_probability(_registry(tmp_path / "b", labels))
    early = base["fold"] < 3
    assert np.array_equal(changed["prob"][early].to_numpy(), base["prob"][early].to_numpy())
    assert not np.allclose(changed["prob"][~early], base["prob"][~early])  # the fits do use the rows' data


def test_an_ensemble_that_fits_nothing_gives_exactly_ensemble_onnx_prob(tmp_path: Path) -> None:
    root = _registry(tmp_path, method="fixed", weights=(2.0, 1.0), calibrate=False)
    got, record = ensemble_oos_probability(root)
    assert not record["calibrated"]
    version = (root / "ensemble" / "latest").read_text().strip()
    lgb, gnn = (pd.read_csv(next((root / f).glob("*/oos.csv"))) for f in MEMBERS)
    probs = np.stack([lgb["p"].to_numpy(), gnn["p"].to_numpy()], axis=1)
    sess = open_session((root / "ensemble" / version / "ensemble.onnx").read_bytes())
    onnx = sess.run(["prob"], {"probs": probs})[0]
    keep = (lgb["fold"] >= 1).to_numpy()
    assert np.array_equal(got["prob"].to_numpy(), np.asarray(onnx, np.float64)[keep])


def test_with_signal_aligns_by_decision_time_drops_rows_a_symbol_lacks_and_the_env_observes_it() -> None:
    md = market()
    at = pd.to_datetime(md.decision_times, utc=True)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame([(s, t, float(rng.random())) for t in at[5:] for s in md.symbols],
                         columns=["symbol", "event_timestamp", "prob"])
    frame = frame.drop(index=frame[(frame.symbol == md.symbols[1]) & (frame.event_timestamp == at[9])].index)
    out = with_signal(md, frame.sample(frac=1.0, random_state=1), {"ensemble": "v"})  # any row order
    assert out.n_bars == md.n_bars - 6 and at[9].value not in out.decision_times and out.signal_source == {
        "ensemble": "v"}
    want = frame.set_index(["event_timestamp", "symbol"])["prob"]
    for t in (0, 3, 4, 100, out.n_bars - 1):  # row t: the probability scored at its close, not the bar before
        when = pd.Timestamp(int(out.decision_times[t]), tz="UTC")
        assert out.signal is not None and [out.signal[t, a] for a in range(2)] == [
            np.float32(want[(when, s)]) for s in md.symbols]
    env = TacticalEnv(out, asset=1, config=TacticalConfig(episode_bars=50))
    obs, _ = env.reset(options={"start": 3})
    n = md.features.shape[2]
    assert obs.shape == (n + 1 + 5,) and obs[n] == out.signal[3, 1] and obs[:n].tobytes() == out.features[3, 1].tobytes()
    assert out.select(symbols=[md.symbols[1]]).signal[:, 0].tobytes() == out.signal[:, 1].tobytes()  # type: ignore[index]
    with pytest.raises(ValueError, match="has an ensemble probability for every symbol"):
        with_signal(md, frame[frame.symbol == md.symbols[0]])
    with pytest.raises(ValueError, match="MarketData.signal must be finite float32"):
        replace(md, signal=np.zeros((md.n_bars, 2)))
