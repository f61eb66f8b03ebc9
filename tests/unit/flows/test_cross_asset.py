"""Cross-asset features against an independent vectorised computation on real candles."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd

from flows.operators.cross_asset import WINDOW, CrossAssetStep
from flows.snapshots import plain_violations

ASSETS = ("BTC", "ETH", "SOL", "BNB", "XRP")
H = 3_600_000


def _windows(x: np.ndarray) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(x, WINDOW)


def test_corr_beta_and_relative_return_equal_numpy(shared_data) -> None:
    closes = {}
    for a in ASSETS:
        df = pd.read_parquet(shared_data / "binance-spot-1h" / f"{a}_USDT-1h.parquet").iloc[:3000]
        closes[f"{a}/USDT"] = df.close.to_numpy()
    symbols = tuple(closes)
    rets = {s: np.log(c[1:] / c[:-1]) for s, c in closes.items()}
    step = CrossAssetStep(symbols, tf_ms=H)
    got: dict[tuple[str, int], dict[str, float]] = {}
    order = np.random.default_rng(3)
    for i in range(len(rets["BTC/USDT"])):
        for s in order.permutation(symbols):  # arrival order across symbols must not matter
            for sym, ts, feats in step.update(str(s), i * H, float(rets[str(s)][i])):
                got[(sym, ts)] = feats
    ref = _windows(rets["BTC/USDT"])
    ref_c = ref - ref.mean(axis=1, keepdims=True)
    mean_xs = np.mean([rets[s] for s in symbols], axis=0)
    n_rows = len(rets["BTC/USDT"]) - WINDOW + 1
    assert len(got) == len(symbols) * n_rows  # one row per symbol per bar time once warm
    for s in symbols:
        w = _windows(rets[s])
        wc = w - w.mean(axis=1, keepdims=True)
        cov = (wc * ref_c).sum(axis=1)
        corr = cov / np.sqrt((wc**2).sum(axis=1) * (ref_c**2).sum(axis=1))
        beta = cov / (ref_c**2).sum(axis=1)
        for j in range(n_rows):
            i = j + WINDOW - 1
            f = got[(s, i * H)]
            np.testing.assert_allclose(f["corr_btc_60"], corr[j], rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(f["beta_btc_60"], beta[j], rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(f["ret_rel_xs"], rets[s][i] - mean_xs[i], rtol=1e-9, atol=1e-12)
    assert all(got[("BTC/USDT", t)]["corr_btc_60"] == 1.0 for (sym, t) in got if sym == "BTC/USDT")


def test_silent_symbol_does_not_stall_others_and_rewarms() -> None:
    step = CrossAssetStep(("BTC/USDT", "ETH/USDT"), tf_ms=1, max_wait_bars=2)
    for t in range(WINDOW):
        step.update("BTC/USDT", t, 0.01 * ((t * 7) % 5 - 2))
        step.update("ETH/USDT", t, 0.02 * ((t * 3) % 5 - 2))
    rows = step.update("BTC/USDT", WINDOW, 0.01)
    assert rows == [] or all(r[1] < WINDOW for r in rows)
    rows = step.update("BTC/USDT", WINDOW + 2, 0.01)  # ETH is silent: bar WINDOW is given up on
    assert [(r[0], r[1]) for r in rows] == [("BTC/USDT", WINDOW)]
    assert len(step.history["ETH/USDT"]) == 0  # ETH warms up again rather than misalign


def test_snapshot_round_trip() -> None:
    a = CrossAssetStep(("BTC/USDT", "ETH/USDT"), tf_ms=1)
    for t in range(70):
        a.update("BTC/USDT", t, 0.001 * (t % 7))
        a.update("ETH/USDT", t, 0.002 * (t % 5))
    b = CrossAssetStep(("BTC/USDT", "ETH/USDT"), tf_ms=1, state=a.snapshot())
    seq = [("ETH/USDT", 70, 0.01), ("BTC/USDT", 70, 0.02), ("BTC/USDT", 71, 0.0), ("ETH/USDT", 71, 0.1)]
    assert [a.update(*x) for x in seq] == [b.update(*x) for x in seq]


def test_snapshot_is_plain_data_and_from_snapshot_continues_identically() -> None:
    symbols = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
    seq = [(s, t, 0.001 * ((t * (i + 3)) % 7 - 3)) for t in range(90) for i, s in enumerate(symbols)
           if not (s == "SOL/USDT" and 40 <= t < 44)]  # SOL silent for a while: given up on, then rewarmed
    ref = CrossAssetStep(symbols, tf_ms=1, max_wait_bars=2)
    want = [ref.update(*x) for x in seq]
    first = CrossAssetStep(symbols, tf_ms=1, max_wait_bars=2)
    got = [first.update(*x) for x in seq[:125]]
    snap = first.snapshot()
    kept = copy.deepcopy(snap)
    assert plain_violations(snap) == [] and snap["version"] == CrossAssetStep.VERSION
    first.update(*seq[125])
    assert snap == kept, "the snapshot shares no container with the running step"
    restored = CrossAssetStep.from_snapshot(json.loads(json.dumps(snap)))
    assert restored.max_wait_ms == 2 and restored.reference == "BTC/USDT"
    got += [restored.update(*x) for x in seq[125:]]
    assert got == want and any(want)


def test_vectorised_rows_equal_the_per_symbol_loop_bit_for_bit_on_a_seeded_universe() -> None:
    """200 symbols, holes (a symbol missing rewarms; the reference missing skips the bar), constant stretches."""
    from infra.replay_exchange.synthetic import universe
    from tests.kit.cross_asset_reference import ReferenceCrossAsset

    symbols = tuple(s for s in universe(200, seed=7)[0] if s.endswith("/USDT"))[:200]
    rng = np.random.default_rng(21)
    step = CrossAssetStep(symbols, tf_ms=1, max_wait_bars=1)
    ref = ReferenceCrossAsset(symbols)
    got, want = [], []
    for t in range(160):
        rets = dict(zip(symbols, (rng.normal(0, 0.002, len(symbols)) * rng.uniform(0.2, 5.0)).tolist(), strict=True))
        if 80 <= t < 150:
            rets[symbols[3]] = 0.0  # a constant window: correlation 0
        if 100 <= t < 165:
            rets["BTC/USDT"] = -0.0  # the reference constant: correlation and beta 0
        for s in rng.choice(len(symbols), 3 if t % 9 == 0 else 0, replace=False).tolist():
            rets.pop(symbols[s], None)  # missing at this bar time: given up on once the next one starts
        if t == 130:
            rets.pop("BTC/USDT")
        want += ref.bar_time(t, rets)
        for s in rng.permutation(list(rets)).tolist():
            got += step.update(s, t, rets[s])
    got += step.update("BTC/USDT", 161, 0.0)  # closes bar time 159
    assert len(want) > 150 * 90
    assert got == want
    assert {sym: list(h) for sym, h in ref.history.items()} == step.history
