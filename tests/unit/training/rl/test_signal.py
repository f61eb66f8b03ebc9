"""The ensemble's probability for the tactical policy: out of sample, point in time, aligned by decision time."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inference.scorer import open_session
from tests.kit.ensembles import member_oos, register_ensemble, register_member
from tests.kit.rl import market
from training.rl.envs.tactical import TacticalConfig, TacticalEnv
from training.rl.signal import ensemble_oos_probability, with_signal

MEMBERS = ("lightgbm", "gnn")
FOLDS, SYMBOLS, PER_FOLD = 4, ("A/USDT", "B/USDT"), 150
TIMES = pd.date_range("2023-01-01", periods=FOLDS * PER_FOLD, freq="h", tz="UTC")


def _registry(root: Path, labels: np.ndarray | None = None, **ensemble: object) -> Path:
    first = member_oos(TIMES, SYMBOLS, FOLDS, 1, 0.3, labels)
    register_member(root, "lightgbm", first, [0.52, 0.60, 0.55, 0.53])
    register_member(root, "gnn", member_oos(TIMES, SYMBOLS, FOLDS, 2, 0.1, first["label"].to_numpy()),
                    [0.58, 0.51, 0.50, 0.56])
    register_ensemble(root, MEMBERS, **ensemble)
    return root


def test_fold_k_uses_only_earlier_folds_fold_0_is_left_out_and_the_record_says_how(tmp_path: Path) -> None:
    base, record = ensemble_oos_probability(_registry(tmp_path / "a"))
    assert sorted(base["fold"].unique()) == [1, 2, 3] and len(base) == 3 * PER_FOLD * len(SYMBOLS)
    assert record["calibrated"] and record["method"] == "performance" and len(record["folds"]) == 3
    # the weights of fold 1 come from fold 0's AUCs alone (0.52 vs 0.58 -> 0.02 : 0.08), not the means over all
    assert record["folds"][0]["weights"] == pytest.approx([0.2, 0.8])
    # other labels in the last fold (and so other member AUCs there) leave every earlier fold's probability alone
    labels = member_oos(TIMES, SYMBOLS, FOLDS, 1, 0.3)["label"].to_numpy().copy()
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
    assert obs.shape == (n + 1 + 5,) and obs[n] == out.signal[3, 1]  # type: ignore[index]
    assert obs[:n].tobytes() == out.features[3, 1].tobytes()
    assert out.select(symbols=[md.symbols[1]]).signal[:, 0].tobytes() == out.signal[:, 1].tobytes()  # type: ignore[index]
    with pytest.raises(ValueError, match="has an ensemble probability for every symbol"):
        with_signal(md, frame[frame.symbol == md.symbols[0]])
    with pytest.raises(ValueError, match="MarketData.signal must be finite float32"):
        replace(md, signal=np.zeros((md.n_bars, 2)))
