"""Stateful LSTM: determinism, early stopping, burn-in, TBPTT carry, and streaming == predict_proba."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from inference.lstm_stream import LstmStreamRunner
from tests.kit.lstm_data import CFG, FEATS, SYMBOLS, gappy, synth
from training.models import lstm as lstm_module
from training.models.lstm import (
    LstmClassifier,
    LstmConfig,
    LstmNet,
    find_runs,
    segment_batch,
    sequence_logits,
)
from training.models.torch_common import time_split

HOUR = pd.Timedelta("1h")






@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synth()


@pytest.fixture(scope="module")
def model(frame: pd.DataFrame) -> LstmClassifier:
    return LstmClassifier(FEATS, CFG).fit(frame)




def test_same_seed_gives_identical_predictions(frame: pd.DataFrame, model: LstmClassifier) -> None:
    again = LstmClassifier(FEATS, CFG).fit(frame)
    np.testing.assert_array_equal(model.predict_proba(frame), again.predict_proba(frame))
    other = LstmClassifier(FEATS, replace(CFG, seed=1)).fit(frame)
    assert not np.allclose(model.predict_proba(frame), other.predict_proba(frame), equal_nan=True)


def test_config_names_the_bad_field() -> None:
    with pytest.raises(ValueError, match="LstmConfig.bptt"):
        LstmConfig(bptt=0)
    with pytest.raises(ValueError, match="LstmConfig.burn_in"):
        LstmConfig(burn_in=-1)
    with pytest.raises(ValueError, match=r"LstmConfig.segment \(32\) must exceed burn_in \(32\)"):
        LstmConfig(segment=32, burn_in=32)
    with pytest.raises(TypeError):
        LstmConfig(window=32)  # type: ignore[call-arg]  # the windowed design's field is gone


def test_best_checkpoint_is_kept_and_validation_runs_from_the_start_of_each_run(
        frame: pd.DataFrame, model: LstmClassifier) -> None:
    runs = find_runs(frame)
    values = frame[FEATS].to_numpy(np.float32)[runs.order]
    y = frame["label"].to_numpy(np.float32)[runs.order]
    times = pd.DatetimeIndex(frame["event_timestamp"]).asi8[runs.order]
    fit, val = time_split(times, CFG.val_fraction, CFG.embargo)
    logits = sequence_logits(model.net, values, runs)  # whole runs: the state is warmed through the fit rows
    loss = float(torch.nn.functional.binary_cross_entropy_with_logits(
        torch.from_numpy(logits[val]), torch.from_numpy(y[val])))
    best = min(h["val_loss"] for h in model.history)
    assert loss == pytest.approx(best, abs=1e-6)
    assert model.history[model.best_epoch]["val_loss"] == best
    np.testing.assert_allclose(model.net.mean.numpy(), values[fit].mean(axis=0), rtol=1e-5)


def test_burn_in_rows_are_nan_in_every_run(frame: pd.DataFrame, model: LstmClassifier) -> None:
    p = model.predict_proba(frame)
    assert np.isnan(p).sum() == len(SYMBOLS) * CFG.burn_in
    assert ((p[~np.isnan(p)] > 0) & (p[~np.isnan(p)] < 1)).all()
    g = gappy(frame)
    pg = model.predict_proba(g, bar=HOUR)
    # ETH: a new run after its missing bar; SOL: after its 3 missing bars
    assert np.isnan(pg).sum() == (len(SYMBOLS) + 2) * CFG.burn_in
    sol = g[g.symbol == "SOL/USDT"].index
    assert np.isnan(pg[sol[40:40 + CFG.burn_in]]).all() and np.isfinite(pg[sol[40 + CFG.burn_in]])
    assert np.isnan(model.predict_proba(g)).sum() == len(SYMBOLS) * CFG.burn_in  # without bar: no gaps seen


def test_the_loss_skips_the_burn_in_rows_of_every_segment_and_the_padding() -> None:
    values = np.arange(200, dtype=np.float32).reshape(100, 2)
    y = (np.arange(100) % 2).astype(np.float32)
    starts, lengths = lstm_module._split_runs(np.array([0, 60]), np.array([60, 40]), 48, np.array([10, 0]))
    assert starts.tolist() == [0, 10, 58, 60] and lengths.tolist() == [10, 48, 2, 40]
    x, target, weight = segment_batch(values, y, starts, lengths, burn_in=8)
    assert x.shape == (4, 48, 2) and target.shape == weight.shape == (4, 48)
    assert weight.sum(axis=1).tolist() == [2, 40, 0, 32]
    for k, (s, n) in enumerate(zip(starts, lengths, strict=True)):
        assert (weight[k, :8] == 0).all() and (weight[k, n:] == 0).all() and (weight[k, 8:n] == 1).all()
        np.testing.assert_array_equal(x[k, :n], values[s:s + n])
        np.testing.assert_array_equal(target[k, :n], y[s:s + n])


def test_save_load_round_trip(tmp_path, frame: pd.DataFrame, model: LstmClassifier) -> None:
    model.save(tmp_path / "lstm.pt")
    loaded = LstmClassifier.load(tmp_path / "lstm.pt")
    np.testing.assert_array_equal(model.predict_proba(frame), loaded.predict_proba(frame))
    assert loaded.config == CFG


def test_each_bptt_chunk_starts_from_the_previous_chunks_final_state(
        frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    forward = LstmNet.forward

    def spy(self: LstmNet, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor):  # type: ignore[no-untyped-def]
        out = forward(self, x, h, c)
        if self.training:
            calls.append((x.shape[1], h.detach().clone(), out[1].detach().clone(), x.detach().clone()))
        return out

    monkeypatch.setattr(LstmNet, "forward", spy)
    LstmClassifier(FEATS, replace(CFG, max_epochs=1)).fit(frame)
    assert len(calls) > 10
    carried = fresh = 0
    for (n0, _, h_out, _), (_, h_in, _, _) in zip(calls, calls[1:], strict=False):
        if n0 == CFG.bptt and h_in.abs().sum() > 0:  # the next chunk of the same mini-batch
            torch.testing.assert_close(h_in, h_out, rtol=0, atol=0)
            carried += 1
        elif h_in.abs().sum() == 0:  # a new mini-batch: zero state at every segment start
            fresh += 1
    assert carried > fresh > 0
    assert calls[0][1].abs().sum() == 0


def test_a_label_in_the_previous_chunk_is_learned_through_the_carried_state() -> None:
    """The label is f1 two bars back and ``bptt`` is 2: every target needs the state carried into its chunk."""
    rng = np.random.default_rng(3)
    n = 1500
    ts = pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC")
    parts = []
    for s in SYMBOLS:
        f1 = rng.normal(size=n)
        d = pd.DataFrame({"ret_1": rng.normal(size=n), "f1": f1, "f2": rng.normal(size=n),
                          "label": (np.r_[0.0, 0.0, f1[:-2]] > 0).astype(np.int8), "symbol": s, "event_timestamp": ts})
        parts.append(d)
    data = pd.concat(parts).reset_index(drop=True)
    cfg = LstmConfig(bptt=2, burn_in=4, segment=64, hidden=16, layers=1, dropout=0.0, lr=1e-2, max_epochs=15,
                     patience=15, batch_size=16, seed=1)
    m = LstmClassifier(FEATS, cfg).fit(data)
    p = m.predict_proba(data)
    late = (data.event_timestamp >= ts[int(n * 0.8)]).to_numpy() & np.isfinite(p)
    assert roc_auc_score(data.label[late], p[late]) > 0.8  # 0.88 here; 0.63 when each chunk restarts at zero


def _torch_fns(net: torch.nn.Module):
    def step(x: np.ndarray, h: np.ndarray, c: np.ndarray):
        with torch.no_grad():
            logit, h2, c2 = net.step(torch.from_numpy(x), torch.from_numpy(h), torch.from_numpy(c))
        return torch.sigmoid(logit).double().numpy(), h2.numpy(), c2.numpy()

    def seq(x: np.ndarray, h: np.ndarray, c: np.ndarray):
        with torch.no_grad():
            logit, h2, c2 = net(torch.from_numpy(x), torch.from_numpy(h), torch.from_numpy(c))
        return torch.sigmoid(logit).double().numpy(), h2.numpy(), c2.numpy()
    return step, seq


def runner(model: LstmClassifier) -> LstmStreamRunner:
    step, seq = _torch_fns(model.net)
    return LstmStreamRunner(step, CFG.layers, CFG.hidden, CFG.burn_in, HOUR.value, seq, max_symbols=2)


def bars(frame: pd.DataFrame) -> list[tuple[list[str], np.ndarray, int, np.ndarray]]:
    """(symbols, x, time ns, frame index) of each bar time."""
    return [(list(g.symbol), g[FEATS].to_numpy(np.float32), int(t.value), g.index.to_numpy())
            for t, g in frame.groupby("event_timestamp", sort=True)]


def test_stepping_one_bar_at_a_time_equals_predict_proba(frame: pd.DataFrame, model: LstmClassifier) -> None:
    g = gappy(frame)
    expected = model.predict_proba(g, bar=HOUR)
    r = runner(model)  # 2 preallocated slots: the third symbol grows the arrays
    got = np.full(len(g), np.nan)
    for syms, x, t, idx in bars(g):
        got[idx] = r.step(syms, x, np.full(len(syms), t))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert np.nanmax(np.abs(got - expected)) < 1e-5


def test_history_equals_stepping_bar_by_bar(frame: pd.DataFrame, model: LstmClassifier) -> None:
    g = gappy(frame)
    bs = bars(g)
    stepped, hist = runner(model), runner(model)
    want = [stepped.step(syms, x, np.full(len(syms), t)) for syms, x, t, _ in bs]
    got = []
    for a, b in ((0, 5), (5, 6), (6, 90), (90, len(bs))):  # continues from and updates the carried state
        part = bs[a:b]
        got += hist.history([p[0] for p in part], [p[1] for p in part], [p[2] for p in part])
    w, gt = np.concatenate(want), np.concatenate(got)
    np.testing.assert_array_equal(np.isnan(gt), np.isnan(w))
    assert np.nanmax(np.abs(gt - w)) < 1e-6
    snap_s, snap_h = stepped.snapshot(), hist.snapshot()
    assert snap_s["symbols"] == snap_h["symbols"] and snap_s["seen"] == snap_h["seen"]
    assert snap_s["last"] == snap_h["last"]
    np.testing.assert_allclose(snap_h["h"], snap_s["h"], atol=1e-6)
    back = bs[101:111]  # a step back: every symbol restarts, as stepping does
    w2 = [stepped.step(syms, x, np.full(len(syms), t)) for syms, x, t, _ in back]
    g2 = hist.history([p[0] for p in back], [p[1] for p in back], [p[2] for p in back])
    np.testing.assert_allclose(np.concatenate(g2), np.concatenate(w2), atol=1e-6)
    assert np.isnan(np.concatenate(g2[:CFG.burn_in])).all() and np.isfinite(g2[CFG.burn_in]).all()


def test_stream_runner_snapshot_restore(frame: pd.DataFrame, model: LstmClassifier) -> None:
    r = runner(model)
    bs = bars(frame)
    for syms, x, t, _ in bs[:20]:
        r.step(syms, x, np.full(len(syms), t))
    snap = r.snapshot()
    assert set(snap) == {"symbols", "seen", "last", "h", "c"} and len(snap["seen"]) == len(SYMBOLS)
    twin = runner(model)
    twin.restore(snap)
    for syms, x, t, _ in bs[20:30]:
        ts = np.full(len(syms), t)
        np.testing.assert_array_equal(r.step(syms, x, ts), twin.step(syms, x, ts))


def test_sequence_pass_in_small_chunks_equals_one_pass(frame: pd.DataFrame, model: LstmClassifier) -> None:
    g = gappy(frame)
    runs = find_runs(g, HOUR)
    values = g[FEATS].to_numpy(np.float32)[runs.order]
    whole = sequence_logits(model.net, values, runs)
    for max_rows in (7, 50, 1000):  # batches of runs, time chunks carrying (h, c), runs leaving as they end
        np.testing.assert_allclose(sequence_logits(model.net, values, runs, max_rows=max_rows), whole, atol=1e-6)
