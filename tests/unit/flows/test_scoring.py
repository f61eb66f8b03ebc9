"""Scoring step: joins rows by bar time, equals the ensemble scorer, hot swap, snapshot round trip."""

from __future__ import annotations

import copy
import json
import math
import pickle
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from flows.operators.model_bank import ModelBank
from flows.operators.scoring import ScoringStep
from flows.records import FeatureRow
from flows.snapshots import plain_violations
from inference.rl_observation import TacticalBook
from inference.runners import EnsembleScorer
from tests.kit.lstm_data import FEATS
from tests.kit.registries import SERVICES, add_ensemble, champion_registry, registered  # noqa: F401  (fixtures: reg)

MEMBERS = ("lightgbm", "lstm", "gnn")


def feature_rows(held):
    """Yield the per-symbol rows of each bar time as the flow does: bar table, then the cross table."""
    for t, bar in held.groupby("event_timestamp", sort=True):
        ts = int(t.value // 1_000_000)
        rows = []
        for _, r in bar.iterrows():
            rows.append(FeatureRow("bar_features", r.symbol, "1h", ts, {"ret_1": r.ret_1, "f1": r.f1}))
        for _, r in bar.iterrows():
            rows.append(FeatureRow("cross_asset_features", r.symbol, "1h", ts, {"f2": r.f2}))
        yield ts, rows


def bank(root) -> ModelBank:
    return ModelBank(root, "1h", policy_family=None, service_features=SERVICES, feed=FEATS)


def test_scoring_equals_the_ensemble_scorer_bar_by_bar(reg) -> None:
    root, held, _ = reg
    symbols = tuple(sorted(held.symbol.unique()))
    step = ScoringStep(symbols, "1h", bank(root))
    direct = EnsembleScorer.from_registry(root, SERVICES, feed=FEATS)
    n = 0
    for _ts, rows in feature_rows(held):
        preds = [p for r in rows for p in step.on_row(r)]
        assert len(preds) == len(symbols)  # complete on the last row of the bar time, not before
        want = direct.score({s: held_row for s, held_row in _vectors(rows).items()})
        for i, p in enumerate(preds):
            assert p.symbol == symbols[i]
            np.testing.assert_allclose(p.probability, want["ensemble"].probability[i], equal_nan=True)
            assert p.signal == int(want["ensemble"].signal[i]) and np.isnan(p.rl_target)
            assert set(p.probabilities) == set(MEMBERS) and p.versions["ensemble"]
        n += 1
    assert n == held.event_timestamp.nunique()


def _vectors(rows):
    vals: dict[str, dict[str, float]] = {}
    for r in rows:
        vals.setdefault(r.symbol, {}).update(r.values)
    return {s: np.array([v[f] for f in FEATS]) for s, v in sorted(vals.items())}


def test_a_missing_symbol_is_left_out_once_every_symbol_has_moved_past(reg) -> None:
    root, held, _ = reg
    symbols = tuple(sorted(held.symbol.unique()))
    step = ScoringStep(symbols, "1h", bank(root))
    bars = list(feature_rows(held))
    (t0, first), (t1, second) = bars[0], bars[1]
    partial = [r for r in first if r.symbol != symbols[0]]
    assert [p for r in partial for p in step.on_row(r)] == []
    others = [r for r in second if r.symbol != symbols[0]]
    assert [p for r in others for p in step.on_row(r)] == []  # symbols[0] may still deliver t0
    bar_row, cross_row = [r for r in second if r.symbol == symbols[0]]
    assert step.on_row(bar_row) == []  # features without the cross-asset row: not past t0 yet
    out = step.on_row(cross_row)  # every symbol complete at t1: t0 without symbols[0], then t1
    assert [(p.symbol, p.ts) for p in out] == [(s, t0) for s in symbols[1:]] + [(s, t1) for s in symbols]
    assert step.on_row(first[0]) == []  # a late row of a bar time already scored is ignored
    assert step.pending == {}


def test_snapshot_restore_continues_like_an_uninterrupted_run(reg) -> None:
    root, held, _ = reg
    symbols = tuple(sorted(held.symbol.unique()))
    bars = list(feature_rows(held))
    ref = ScoringStep(symbols, "1h", bank(root))
    want = [p for _, rows in bars for r in rows for p in ref.on_row(r)]
    step = ScoringStep(symbols, "1h", bank(root))
    got = [p for _, rows in bars[:30] for r in rows for p in step.on_row(r)]
    got += [p for p in step.on_row(bars[30][1][0])]  # a half-delivered bar time in the snapshot
    restored = ScoringStep.from_snapshot(pickle.loads(pickle.dumps(step.snapshot())))  # as Bytewax keeps it
    assert restored.bank is None
    restored.attach(bank(root))
    got += [p for r in bars[30][1][1:] for p in restored.on_row(r)]
    got += [p for _, rows in bars[31:] for r in rows for p in restored.on_row(r)]
    assert [(p.symbol, p.ts) for p in got] == [(p.symbol, p.ts) for p in want]
    np.testing.assert_allclose([p.probability for p in got], [p.probability for p in want], equal_nan=True)
    np.testing.assert_allclose([p.probabilities["lstm"] for p in got], [p.probabilities["lstm"] for p in want],
                               equal_nan=True)


def test_hot_swap_takes_a_new_ensemble_and_keeps_lstm_state(reg) -> None:
    root, held, native = reg
    symbols = tuple(sorted(held.symbol.unique()))
    b = bank(root)
    step = ScoringStep(symbols, "1h", b)
    bars = list(feature_rows(held))
    before = [p for _, rows in bars[:20] for r in rows for p in step.on_row(r)]
    lstm_runner = b.ensemble.scorer.runners["lstm"]
    old_version = b.versions()["ensemble"]
    add_ensemble(root, held, native, weights=(0.2, 0.4, 0.4))
    b.request_swap()
    after = [p for r in bars[20][1] for p in step.on_row(r)]
    assert b.swaps == 1 and after[0].versions["ensemble"] != old_version
    assert b.ensemble.scorer.runners["lstm"] is lstm_runner  # same version: state kept
    assert np.isfinite(after[0].probabilities["lstm"])  # still warm, no restart of the window
    assert before[-1].versions["ensemble"] == old_version


def test_scoring_a_stretch_of_history_at_once_equals_bar_by_bar(reg) -> None:
    root, held, _ = reg
    symbols = tuple(sorted(held.symbol.unique()))
    rows = [r for _, rs in feature_rows(held) for r in rs]
    one = ScoringStep(symbols, "1h", bank(root))
    want = [p for r in rows for p in one.on_row(r)]
    many = ScoringStep(symbols, "1h", bank(root))
    got = many.on_rows(rows[:100]) + many.on_rows(rows[100:])
    assert [(p.symbol, p.ts, p.signal) for p in got] == [(p.symbol, p.ts, p.signal) for p in want]
    for f in ("probability", "confidence"):
        np.testing.assert_array_equal([getattr(p, f) for p in got], [getattr(p, f) for p in want])
    np.testing.assert_array_equal([p.probabilities["lstm"] for p in got], [p.probabilities["lstm"] for p in want])


def test_history_mode_batches_the_graph_model_and_stays_within_float_rounding(reg) -> None:
    root, held, _ = reg
    symbols = tuple(sorted(held.symbol.unique()))
    rows = [r for _, rs in feature_rows(held) for r in rs]
    want = ScoringStep(symbols, "1h", bank(root)).on_rows(rows)
    b = bank(root)
    b.history_mode = True
    step = ScoringStep(symbols, "1h", b)
    got = step.on_rows(rows[:90]) + step.on_rows(rows[90:])
    assert [(p.symbol, p.ts) for p in got] == [(p.symbol, p.ts) for p in want]
    gnn_got, gnn_want = ([p.probabilities["gnn"] for p in ps] for ps in (got, want))
    assert np.isfinite(gnn_want).sum() > 100
    np.testing.assert_allclose(gnn_got, gnn_want, rtol=0, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose([p.probability for p in got], [p.probability for p in want], rtol=0, atol=1e-6)


def test_swap_watch_fires_once_per_change_of_the_key_file(tmp_path) -> None:
    from flows.wiring import SwapWatch

    key = tmp_path / "swap"
    watch = SwapWatch.for_file(key)
    assert not watch.changed()
    key.write_text("1")
    assert watch.changed() and not watch.changed()
    key.write_text("2")
    assert watch.changed()
    key.unlink()
    assert watch.changed() and not watch.changed()


def _bars(held, ts: int, symbols) -> list:
    from flows.records import Bar

    return [Bar(s, "1h", ts - 3_600_000, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1, 1.0, 0.5) for s in symbols]


def test_close_barrier_gives_each_close_its_predictions_whatever_the_arrival_order(reg) -> None:
    from flows.operators.scoring import CloseBarrier

    root, held, _ = reg
    symbols = tuple(sorted(held.symbol.unique()))
    times = list(feature_rows(held))

    def closes(order: str, warmup: int) -> list:
        barrier = CloseBarrier(ScoringStep(symbols, "1h", bank(root)), warmup)
        if order == "interleaved":  # bars and rows of each bar time together
            items = [it for ts, rows in times for it in (*_bars(held, ts, symbols), *rows)]
            return barrier.on_items(items)
        out = barrier.on_items([b for ts, _ in times for b in _bars(held, ts, symbols)])  # bars race ahead
        return out + barrier.on_items([r for _, rows in times for r in rows])

    want = closes("interleaved", warmup=3)
    got = closes("bars first", warmup=3)
    assert [c.ts for c in got] == [c.ts for c in want] == [ts for ts, _ in times]
    assert [len(c.bars) for c in got] == [len(symbols)] * len(times)
    # The first two closes come before the warm-up (no features expected): released without predictions
    # as soon as their bars are in; every later one waits for its predictions however late they come.
    assert [len(c.predictions) for c in got[:2]] == [0, 0]
    assert all([p.ts for p in c.predictions] == [c.ts] * len(symbols) for c in got[2:])
    assert repr([c.predictions for c in got[2:]]) == repr([c.predictions for c in want[2:]])


def test_close_barrier_snapshot_is_plain_data_and_from_snapshot_continues_identically(reg) -> None:
    from flows.operators.scoring import CloseBarrier

    root, held, _ = reg
    symbols = tuple(sorted(held.symbol.unique()))
    items = [it for ts, rows in feature_rows(held) for it in (*_bars(held, ts, symbols), *rows)]
    want = CloseBarrier(ScoringStep(symbols, "1h", bank(root)), 1).on_items(items)
    first = CloseBarrier(ScoringStep(symbols, "1h", bank(root)), 1)
    got = first.on_items(items[:47])
    snap = first.snapshot()
    kept = copy.deepcopy(snap)
    assert plain_violations(snap) == [] and snap["version"] == CloseBarrier.VERSION
    assert snap["scoring"]["models"], "the streaming runners' state is in it"
    first.on_items(items[47:60])
    assert repr(snap) == repr(kept), "the snapshot shares no container with the running step"
    restored = CloseBarrier.from_snapshot(json.loads(json.dumps(snap)))  # what JSON holds is enough
    assert restored.scoring.bank is None
    restored.scoring.attach(bank(root))
    got += restored.on_items(items[47:])
    assert [(c.ts, c.bars) for c in got] == [(c.ts, c.bars) for c in want]
    np.testing.assert_array_equal([p.probability for c in got for p in c.predictions],
                                  [p.probability for c in want for p in c.predictions])
    assert repr(got) == repr(want)  # by repr: NaN fields are never == themselves


class _LinearPolicy:
    """A deterministic tactical policy over (f1, ret_1) and the book's state: records what it was given."""

    features = ("f1", "ret_1")

    def __init__(self) -> None:
        self.manifest = SimpleNamespace(version="t", config={"env": {"fee_rate": 0.001, "slippage": 0.0005,
                                                                     "min_trade": 0.02}})
        self.seen: list[np.ndarray] = []
        self.w = np.linspace(-3.0, 3.0, 7).astype(np.float32)

    def act(self, obs: np.ndarray) -> np.ndarray:
        self.seen.append(obs.copy())
        return np.array([[self.target(o)] for o in obs])

    def target(self, o: np.ndarray) -> float:
        return float(np.tanh(o @ self.w + np.float32(0.3))) * 1.5  # beyond [-1, 1] sometimes: clipped


def test_policy_observations_equal_a_tactical_book_per_symbol_bit_for_bit(reg) -> None:
    """Every symbol's observation and target: its own TacticalBook on the return index, stepped alone."""
    root, held, _ = reg
    symbols = tuple(sorted(held.symbol.unique()))
    b = bank(root)
    b.policy = policy = _LinearPolicy()
    step = ScoringStep(symbols, "1h", b)
    rows = [r for _, rs in feature_rows(held) for r in rs]
    half = len(rows) // 2
    preds = step.on_rows(rows[:half])
    step = ScoringStep.from_snapshot(pickle.loads(pickle.dumps(step.snapshot())))  # the books go through a snapshot
    step.attach(b)
    preds += step.on_rows(rows[half:])
    books = {s: (TacticalBook(), 1.0, 0.0) for s in symbols}
    costs = (0.001, 0.0005, 0.02)
    seen = iter(o for obs in policy.seen for o in obs)
    traded = 0
    for p in preds:
        book, close, target = books[p.symbol]
        book.execute(target, close, *costs)
        close *= math.exp(p.ret_1)
        book.mark(close)
        want = book.observation(np.array([held_value(held, p, "f1"), p.ret_1], np.float32), close)
        got = next(seen)
        assert got.dtype == np.float32 and got.tobytes() == want.tobytes()
        assert p.rl_target == min(max(policy.target(want), -1.0), 1.0)
        traded += book.units != 0.0
        books[p.symbol] = (book, close, p.rl_target)
    assert next(seen, None) is None and traded > 50


def held_value(held, p, column: str) -> float:
    row = held[(held.symbol == p.symbol) & (held.event_timestamp.astype("int64") // 1_000_000 == p.ts)]
    return float(row[column].iloc[0])


def test_whole_bar_times_as_a_matrix_give_what_their_records_give_bit_for_bit(reg) -> None:
    """CloseBarrier.on_history (a replay's regular stretches) against on_items of the same bars and rows."""
    from flows.operators.scoring import CloseBarrier

    root, held, _ = reg
    symbols = tuple(sorted(held.symbol.unique()))
    feed = [*FEATS, "rv_15"]
    held = held.assign(rv_15=held.f1.abs() * 0.01)
    times = []
    for t, frame in held.groupby("event_timestamp", sort=True):
        ts, by = int(t.value // 1_000_000), frame.set_index("symbol")
        rows = [FeatureRow("bar_features", s, "1h", ts, {k: float(by.at[s, k]) for k in ("ret_1", "f1", "rv_15")})
                for s in symbols]
        rows += [FeatureRow("cross_asset_features", s, "1h", ts, {"f2": float(by.at[s, "f2"])}) for s in symbols]
        x = np.array([[float(by.at[s, k]) for k in feed] for s in symbols])
        times.append((ts, tuple(_bars(held, ts, symbols)), rows, x))

    def replay(matrices: bool) -> tuple[list, list]:
        b = ModelBank(root, "1h", policy_family=None, service_features=SERVICES, feed=feed)
        b.history_mode = True
        b.policy = policy = _LinearPolicy()
        barrier = CloseBarrier(ScoringStep(symbols, "1h", b), 1)
        assert barrier.scoring.takes_matrix()
        out = barrier.on_items([it for ts, bars, rows, _ in times[:3] for it in (*bars, *rows)])  # records first
        for k in range(3, len(times), 16):
            part = times[k:k + 16]
            if matrices:
                assert barrier.idle()
                out += barrier.on_history([p[0] for p in part], [p[1] for p in part], np.vstack([p[3] for p in part]))
            else:
                out += barrier.on_items([it for _, bars, rows, _ in part for it in (*bars, *rows)])
        return out, policy.seen

    want, seen_want = replay(False)
    got, seen_got = replay(True)
    assert len(got) == len(times) and all(len(c.predictions) == len(symbols) for c in got[1:])
    assert repr(got) == repr(want)  # bars, every prediction field, the policy's targets (NaN-safe by repr)
    assert [o.tobytes() for o in seen_got] == [o.tobytes() for o in seen_want]
    with pytest.raises(RuntimeError, match="idle"):  # a close waiting on its features: records only
        barrier = CloseBarrier(ScoringStep(symbols, "1h", bank(root)), 1)
        barrier.on_items(list(times[0][1]))
        barrier.on_history([times[1][0]], [times[1][1]], times[1][3])
class _SignalPolicy(_LinearPolicy):
    """The linear policy, trained (so says its manifest) with the ensemble's probability in its observation."""

    def __init__(self) -> None:
        super().__init__()
        self.manifest.extra = {"ensemble_prob": {"ensemble": "v"}}
        self.manifest.config["env"]["min_trade"] = 0.0
        self.w = np.linspace(-3.0, 3.0, 8).astype(np.float32)

    def target(self, o: np.ndarray) -> float:
        return float(np.tanh(o @ self.w)) * 0.05  # small: the test's returns are of order one per bar


def test_a_policy_trained_on_the_ensemble_probability_sees_in_the_stream_what_its_environment_built(reg) -> None:
    """Parity: the TacticalEnv's observations (features, ensemble probability, book) on the same bars, bit for bit.

    The environment gets the probabilities as training gets them (a ``symbol, event_timestamp, prob``
    frame through ``with_signal``), here the ones the stream scored, so that any shift in time,
    column or rounding between the two sides shows.
    """
    from training.rl.data import MarketData
    from training.rl.envs.tactical import TacticalConfig, TacticalEnv
    from training.rl.signal import with_signal

    root, held, _ = reg
    symbols = tuple(sorted(held.symbol.unique()))
    b = bank(root)
    b.policy = policy = _SignalPolicy()
    step = ScoringStep(symbols, "1h", b)
    rows = [r for _, rs in feature_rows(held) for r in rs]
    preds = step.on_rows(rows[:len(rows) // 2])
    step = ScoringStep.from_snapshot(pickle.loads(pickle.dumps(step.snapshot())))
    step.attach(b)
    preds += step.on_rows(rows[len(rows) // 2:])
    seen = [o for obs in policy.seen for o in obs]
    assert len(seen) == len(preds)
    # the training side: the same bars as MarketData (prices: the return index the stream's book uses)
    wide = held.pivot(index="event_timestamp", columns="symbol")
    ret = wide["ret_1"][list(symbols)].to_numpy(np.float64)
    close, opn = np.empty_like(ret), np.empty_like(ret)
    for a in range(len(symbols)):
        c = 1.0
        for t in range(len(ret)):
            opn[t, a] = c
            c *= math.exp(ret[t, a])
            close[t, a] = c
    times = wide.index.as_unit("ns").asi8 - 3_600 * 10**9
    feats = np.stack([wide["f1"][list(symbols)].to_numpy(), ret], axis=2).astype(np.float32)
    md = MarketData(symbols, "1h", times, opn, np.maximum(opn, close), np.minimum(opn, close), close,
                    np.ones_like(close), feats, ("f1", "ret_1"), "test")
    probs = pd.DataFrame([(p.symbol, pd.Timestamp(p.ts, unit="ms", tz="UTC"), p.probability) for p in preds],
                         columns=["symbol", "event_timestamp", "prob"])
    md = with_signal(md, probs)
    assert md.n_bars == len(ret)
    cfg = TacticalConfig(initial_equity=1.0, fee_rate=0.001, slippage=0.0005, min_trade=0.0)
    traded = 0
    for a, sym in enumerate(symbols):
        stream = [(o, p) for o, p in zip(seen, preds, strict=True) if p.symbol == sym]
        env = TacticalEnv(md, a, cfg)
        obs, _ = env.reset()
        for t, (got, p) in enumerate(stream):
            assert got.shape == (2 + 1 + 5,) and got[2] == np.float32(p.probability)
            assert got.tobytes() == obs.tobytes(), (sym, t, got, obs)
            if t + 1 < len(stream):
                obs, _, _, _, info = env.step(np.array([p.rl_target]))
                traded += info["traded"] > 0.0
    assert traded > 100


def test_without_an_ensemble_probability_the_signal_policy_gives_no_target_and_its_book_keeps_the_last(reg) -> None:
    root, held, _ = reg
    symbols = tuple(sorted(held.symbol.unique()))[:2]
    b = bank(root)
    b.policy = _SignalPolicy()
    step = ScoringStep(symbols, "1h", b)
    x = np.array([[0.01, 0.5, 5.0], [-0.02, -0.3, 4.0]])  # the feed: ret_1, f1, f2
    first = step._policy(symbols, {}, x, [0.01, -0.02], None, np.array([0.6, 0.4]))
    assert all(math.isfinite(t) and t != 0.0 for t in first)
    second = step._policy(symbols, {}, x, [0.01, -0.02], None, np.array([np.nan, 0.5]))
    assert math.isnan(second[0]) and math.isfinite(second[1])
    assert step.books[symbols[0]].target == first[0] and step.books[symbols[1]].target == second[1]
    assert math.isfinite(step.books[symbols[0]].book.equity)


def test_the_policy_loop_over_a_stretch_is_the_policy_bar_time_by_bar_time(reg) -> None:
    """``_policy_run`` (a stretch's loop) gives the targets, observations and books of ``_policy`` per bar time."""
    root, _, _ = reg
    symbols = ("A/USDT", "B/USDT", "C/USDT")
    rng = np.random.default_rng(3)
    n_t = 40
    x_all = np.column_stack([rng.normal(0.0, 0.01, n_t * 3), rng.normal(0.0, 1.0, n_t * 3), rng.random(n_t * 3)])
    p_all = rng.random(n_t * 3)
    p_all[[0, 4, 17, 50]] = np.nan  # no probability yet: no target, the book keeps the last one
    todo = [(k, None, symbols) for k in range(n_t)]

    def stepped(run: bool) -> tuple[str, list[bytes], str]:
        b = bank(root)
        b.policy = policy = _SignalPolicy()
        step = ScoringStep(symbols, "1h", b)
        obs_all = step._observations(x_all)
        assert obs_all is not None
        rets = x_all[:, 0].tolist()
        if run:
            got = step._policy_run(todo, rets, obs_all, p_all)
        else:
            got = []
            for k in range(n_t):
                sl = slice(3 * k, 3 * k + 3)
                got += step._policy(symbols, {}, x_all[sl], rets[sl], obs_all[sl], p_all[sl])
        books = {s: b.snapshot() for s, b in step.books.items()}
        return repr(got), [o.tobytes() for o in policy.seen], repr(books)

    want, got = stepped(False), stepped(True)
    assert got == want
    assert "nan" in want[0]


def test_warmup_bars_count_towards_the_warm_up_and_are_never_closes(reg) -> None:
    """Issue 17, defect 10: the klines a fresh start warms up on must not be decided or traded."""
    from flows.operators.scoring import CloseBarrier
    from flows.records import WarmupBar

    root, held, _ = reg
    symbols = tuple(sorted(held.symbol.unique()))
    times = list(feature_rows(held))
    barrier = CloseBarrier(ScoringStep(symbols, "1h", bank(root)), 3)
    warm = [WarmupBar(s, "1h", times[0][0] - k * 3_600_000, None if k == 2 else 0.0) for k in (2, 1) for s in symbols]
    assert barrier.on_items(warm) == []
    got = barrier.on_items([b for ts, _ in times for b in _bars(held, ts, symbols)])  # bars race ahead
    got += barrier.on_items([r for _, rows in times for r in rows])
    assert [c.ts for c in got] == [ts for ts, _ in times]  # no close of a warm-up bar
    # warm after two warm-up bars and its first bar: even the first close waits for its predictions
    assert all([p.ts for p in c.predictions] == [c.ts] * len(symbols) for c in got)


class _CountingDict(dict):
    """A dict that counts its ``get`` calls (the barrier's per-symbol lookups)."""

    gets = 0

    def get(self, *args):  # type: ignore[override]
        _CountingDict.gets += 1
        return super().get(*args)


def test_a_filling_bar_time_costs_the_barrier_and_the_step_linear_lookups_not_quadratic() -> None:
    """Issue 21: each arriving bar or row read every symbol's newest bar time (O(N^2) per close at 200 symbols)."""
    from flows.operators.features import WARMUP
    from flows.operators.scoring import CloseBarrier
    from flows.records import Bar, FeatureRow

    n = 200
    symbols = tuple(f"S{i}/USDT" for i in range(n))
    barrier = CloseBarrier(ScoringStep(symbols, "1h"), WARMUP)
    barrier.newest = _CountingDict()
    barrier.scoring.latest = _CountingDict()
    _CountingDict.gets = 0
    for s in symbols[:-1]:  # the bar time fills, one symbol at a time; nothing settles yet
        row = FeatureRow("bar_features", s, "1h", 3_600_000, {"x": 1.0})
        assert barrier.on_items([Bar(s, "1h", 0, *([1.0] * 9)), row]) == []
    assert _CountingDict.gets < 10 * n  # a list over every symbol per item: ~n^2 = 40,000
