"""LSTM: determinism, early stopping, save/load, and streaming == windowed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from inference.lstm_stream import LstmStreamRunner
from training.models.lstm import LstmClassifier, LstmConfig, _mean_loss, gather, window_index
from training.models.torch_common import time_split

FEATS = ["ret_1", "f1", "f2"]
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")


def synth(n: int = 200, seed: int = 0) -> pd.DataFrame:
    """Three correlated assets; the label depends on the next return and on f1."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC")
    common = rng.normal(size=n)
    parts = []
    for s in SYMBOLS:
        r = 0.6 * common + 0.8 * rng.normal(size=n)
        d = pd.DataFrame({"ret_1": r, "f1": rng.normal(size=n), "f2": 5 + 3 * rng.normal(size=n)})
        d["label"] = (np.r_[r[1:], 0] + d["f1"] > 0).astype(np.int8)
        d["symbol"], d["event_timestamp"] = s, ts
        parts.append(d)
    return pd.concat(parts).sort_values(["event_timestamp", "symbol"]).reset_index(drop=True)


CFG = LstmConfig(window=8, hidden=8, layers=2, dropout=0.1, max_epochs=4, patience=2, batch_size=64)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synth()


@pytest.fixture(scope="module")
def model(frame: pd.DataFrame) -> LstmClassifier:
    return LstmClassifier(FEATS, CFG).fit(frame)


def test_same_seed_gives_identical_predictions(frame: pd.DataFrame, model: LstmClassifier) -> None:
    again = LstmClassifier(FEATS, CFG).fit(frame)
    np.testing.assert_array_equal(model.predict_proba(frame), again.predict_proba(frame))
    other = LstmClassifier(FEATS, LstmConfig(**{**CFG.__dict__, "seed": 1})).fit(frame)
    assert not np.allclose(model.predict_proba(frame), other.predict_proba(frame), equal_nan=True)


def test_best_checkpoint_is_kept_and_standardisation_uses_fit_rows(
        frame: pd.DataFrame, model: LstmClassifier) -> None:
    order, ends = window_index(frame, CFG.window)
    values = frame[FEATS].to_numpy(np.float32)[order]
    times = pd.DatetimeIndex(frame["event_timestamp"]).asi8[order]
    fit, val = time_split(times[ends], CFG.val_fraction, CFG.embargo)
    y = frame["label"].to_numpy(np.float32)[order]
    loss = _mean_loss(model.net, values, y, ends[val], CFG.window, torch.device("cpu"))
    best = min(h["val_loss"] for h in model.history)
    assert loss == pytest.approx(best, abs=1e-6)
    assert model.history[model.best_epoch]["val_loss"] == best
    rows = np.unique(gather(np.arange(len(values)), ends[fit], CFG.window))
    np.testing.assert_allclose(model.net.mean.numpy(), values[rows].mean(axis=0), rtol=1e-5)


def test_predictions_are_nan_only_before_a_full_window(frame: pd.DataFrame,
                                                       model: LstmClassifier) -> None:
    p = model.predict_proba(frame)
    assert np.isnan(p).sum() == len(SYMBOLS) * (CFG.window - 1)
    assert ((p[~np.isnan(p)] > 0) & (p[~np.isnan(p)] < 1)).all()


def test_save_load_round_trip(tmp_path, frame: pd.DataFrame, model: LstmClassifier) -> None:
    model.save(tmp_path / "lstm.pt")
    loaded = LstmClassifier.load(tmp_path / "lstm.pt")
    np.testing.assert_array_equal(model.predict_proba(frame), loaded.predict_proba(frame))


def test_step_from_zero_state_equals_windowed_output(frame: pd.DataFrame,
                                                     model: LstmClassifier) -> None:
    order, ends = window_index(frame, CFG.window)
    x = torch.from_numpy(gather(frame[FEATS].to_numpy(np.float32)[order], ends[-40:], CFG.window))
    with torch.no_grad():
        windowed = model.net(x)
        h, c = model.net.zero_state(len(x))
        for t in range(CFG.window):
            logit, h, c = model.net.step(x[:, t], h, c)
    assert float((logit - windowed).abs().max()) < 1e-6


def _torch_step(net: torch.nn.Module):
    def step(x: np.ndarray, h: np.ndarray, c: np.ndarray):
        with torch.no_grad():
            logit, h2, c2 = net.step(torch.from_numpy(x), torch.from_numpy(h), torch.from_numpy(c))
        return torch.sigmoid(logit).double().numpy(), h2.numpy(), c2.numpy()
    return step


def test_stream_runner_equals_windowed_model_on_every_bar(frame: pd.DataFrame,
                                                          model: LstmClassifier) -> None:
    gappy = frame.drop(index=frame.index[(frame.symbol == "ETH/USDT")][100])  # one missing bar
    bar = pd.Timedelta("1h")
    expected = model.predict_proba(gappy, bar=bar)
    runner = LstmStreamRunner(_torch_step(model.net), CFG.window, CFG.layers, CFG.hidden, bar.value)
    got = np.full(len(gappy), np.nan)
    for _, g in gappy.groupby("event_timestamp", sort=True):
        got[gappy.index.get_indexer(g.index)] = runner.step(
            list(g.symbol), g[FEATS].to_numpy(np.float32), pd.DatetimeIndex(g.event_timestamp).asi8)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert np.nanmax(np.abs(got - expected)) < 1e-6
    assert np.isnan(expected).sum() == len(SYMBOLS) * (CFG.window - 1) + CFG.window - 1


def test_stream_runner_snapshot_restore(frame: pd.DataFrame, model: LstmClassifier) -> None:
    runner = LstmStreamRunner(_torch_step(model.net), CFG.window, CFG.layers, CFG.hidden)
    groups = [g for _, g in frame.groupby("event_timestamp", sort=True)]
    for g in groups[:20]:
        runner.step(list(g.symbol), g[FEATS].to_numpy(np.float32))
    twin = LstmStreamRunner(_torch_step(model.net), CFG.window, CFG.layers, CFG.hidden)
    twin.restore(runner.snapshot())
    for g in groups[20:30]:
        x = g[FEATS].to_numpy(np.float32)
        np.testing.assert_array_equal(runner.step(list(g.symbol), x), twin.step(list(g.symbol), x))
