"""Scoring step: every symbol's features of one bar time -> ensemble + policy -> predictions.

A pure state machine keyed by timeframe.  Per-symbol bar features and the
cross-asset step's rows arrive in any interleaving; a bar time is scored once
every symbol has delivered all feed features, or, for the symbols that have,
once every symbol has delivered a later bar time (a symbol still warming up is
left out, never zero-filled).  One scoring call per bar time runs the ONNX ensemble with its
members (LightGBM, streaming LSTM, GNN) and the tactical policy on all symbols
at once.

The policy observation needs a position state.  The step keeps the policy's own
book per symbol exactly as the tactical environment does in training (the
shared ``inference.rl_observation.TacticalBook``: the last target executed at the
bar's open with the training fees and slippage, marked at its close).  The risk
engine and the portfolio downstream decide what is actually traded.  A policy trained
with the ensemble's probability in its observation (manifest ``extra.ensemble_prob``,
``python -m training.rl train tactical --ensemble-prob``) gets the ensemble's ``prob`` of
the same symbol and bar between its features and the state terms, as the tactical
environment builds it; where that probability is NaN (members warming up) the policy
gives no target (NaN) and its book keeps the last one.

Snapshots are plain data (:mod:`flows.snapshots`): pending rows, the policy book and
the stateful runners' state (LSTM per symbol, GNN return window); the models themselves
are attached per worker (:meth:`ScoringStep.attach`).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable, Sequence
from functools import partial
from itertools import groupby, repeat
from operator import itemgetter
from typing import Any, Protocol

import numpy as np

from flows.operators.model_bank import ModelBank, Policy, daily_features, feed_features
from flows.operators.policy_run import act_binding, run_stretch
from flows.records import Bar, Close, FeatureRow, Prediction, WarmupBar
from flows.snapshots import check_snapshot
from inference.scorer import to_signal

_prediction = partial(tuple.__new__, Prediction)  # Prediction(*fields) without the namedtuple's Python-level __new__
_close = partial(tuple.__new__, Close)


class DailyLookup(Protocol):
    """The daily side input (``flows.operators.daily_features.DailyFeatures``)."""

    groups: tuple[str, ...]

    def vector_as_of(self, names: Sequence[str], t: int) -> dict[str, float]:
        """Return the groups' features known at bar close ``t`` (ms)."""
        ...


class PolicyBook:
    """The policy's own book for one symbol: :class:`inference.rl_observation.TacticalBook` on a price index.

    The tactical environment executes the target decided at a close at the next
    bar's open, with its fees and slippage, then marks the close.  The flow knows
    each bar's ``ret_1``, so it runs the same book on the index
    ``exp(cumsum(ret_1))`` with the open taken as the last close; every state term
    of the observation is a ratio, so the scale does not matter.
    """

    def __init__(self, book: Any, close: float = 1.0, target: float = 0.0) -> None:
        """Wrap a ``TacticalBook``; ``close`` is the index at the last bar, ``target`` the last action."""
        self.book, self.close, self.target = book, close, target

    def step(self, ret_1: float, costs: tuple[float, float, float]) -> tuple[float, float, float, float, float]:
        """Execute the last target at this bar's open, mark its close, return the observation's state terms.

        The observation is the policy's features followed by these terms, as
        :meth:`inference.rl_observation.TacticalBook.observation` builds it.
        """
        price = self.close
        self.close = close = price * math.exp(ret_1)
        return self.book.step(self.target, price, close, *costs)  # type: ignore[no-any-return]

    def snapshot(self) -> dict[str, Any]:
        """Return the state as plain data."""
        return {"book": self.book.snapshot(), "close": self.close, "target": self.target}


def _rl_observation() -> Any:
    return importlib.import_module("inference.rl_observation")


def policy_signal(policy: Any) -> bool:
    """Return whether the policy observes the ensemble's probability (manifest ``extra.ensemble_prob``)."""
    extra = getattr(getattr(policy, "manifest", None), "extra", None) or {}
    return bool(extra.get("ensemble_prob"))


def policy_costs(policy: Any) -> tuple[float, float, float]:
    """Return the (fee_rate, slippage, min_trade) the policy's environment was trained with."""
    env = dict(getattr(getattr(policy, "manifest", None), "config", None) or {}).get("env", {}) or {}
    return float(env.get("fee_rate", 0.0)), float(env.get("slippage", 0.0)), float(env.get("min_trade", 0.0))


class ScoringStep:
    """Join one timeframe's feature rows by bar time and score complete bar times."""

    VERSION = 1  # of the snapshot's layout

    def __init__(self, symbols: tuple[str, ...], timeframe: str, bank: ModelBank | None = None,
                 state: dict[str, Any] | None = None, feed: list[str] | None = None,
                 max_pending: int = 1000, confidence_threshold: float | None = None,
                 daily: DailyLookup | None = None) -> None:
        """Create the step; ``state`` is a :meth:`snapshot`; ``bank`` may be attached later.

        ``feed`` is the ordered feature vector the models take (default :func:`feed_features`).
        ``confidence_threshold`` (setting ``scoring.confidence_threshold``) replaces the one the
        ensemble was exported with: below it the signal is -1 (none); ``None`` keeps the ensemble's.
        ``daily`` is the side input of the daily groups (``flows.operators.daily_features.DailyFeatures``):
        the bank's feed features past the rows' feed are its values known at each bar's close
        (NaN without it, which only ``*_v2`` models would read: :meth:`attach` refuses that).
        """
        self.symbols, self.timeframe = tuple(symbols), timeframe
        s = state or {}
        self.daily = daily
        side = set(daily_features())
        self.feed = [f for f in (feed or s.get("feed") or (bank.feed if bank is not None else feed_features()))
                     if f not in side]
        self._side: list[str] = []
        self._feed_keys, self._n_feed, self._take = frozenset(self.feed), len(self.feed), itemgetter(*self.feed)
        self._feed_index = {f: i for i, f in enumerate(self.feed)}
        self._names: tuple[str, ...] = ()
        self.pending: dict[int, dict[str, dict[str, float]]] = {
            int(t): {sym: dict(v) for sym, v in rows.items()} for t, rows in s.get("pending", {}).items()}
        self._done: dict[int, set[str]] = {}  # bar time -> symbols whose feed features are all pending
        for t, got in self.pending.items():
            for sym, v in got.items():
                if self._complete(v):
                    self._done.setdefault(t, set()).add(sym)
        self._books_saved: dict[str, Any] = dict(s.get("books", {}))
        self.books: dict[str, PolicyBook] = {}
        self.scored_until: int = int(s.get("scored_until", -1))
        self.latest: dict[str, int] = {k: int(v) for k, v in s.get("latest", {}).items()}
        self.max_pending = int(s.get("max_pending", max_pending))
        thr = s.get("confidence_threshold", confidence_threshold)
        self.confidence_threshold: float | None = None if thr is None else float(thr)
        self._models: dict[str, Any] = dict(s.get("models", {}))
        self._policy_cols: tuple[tuple[str, ...], list[int] | None] | None = None
        self._costs: tuple[Any, tuple[float, float, float]] | None = None
        self._signal = False  # the loaded policy observes the ensemble's probability
        self.bank: ModelBank | None = None
        if bank is not None:
            self.attach(bank)

    def attach(self, bank: ModelBank) -> None:
        """Use ``bank`` for scoring, restoring runner state saved in the snapshot."""
        if bank.feed[:len(self.feed)] != self.feed:
            raise ValueError("the model bank's feed must start with the scoring rows' feed")
        self._side = list(bank.feed[len(self.feed):])
        unknown = set(self._side) - set(daily_features())
        if unknown:
            raise ValueError(f"the model bank's feed has features no step provides: {sorted(unknown)}")
        wanted = sorted(bank.needs() & set(self._side))
        if wanted and self.daily is None:
            from flows.errors import SettingsError

            raise SettingsError(f"the registered models take daily features ({', '.join(wanted)}): set daily.source "
                                "(env CRYPTOSTREAM_DAILY__SOURCE) to files or http")
        self.bank = bank
        if self._models:
            bank.restore(self._models)
            self._models = {}

    def on_row(self, row: FeatureRow) -> list[Prediction]:
        """Take one feature row; return the predictions of every bar time it completes or closes."""
        return self.on_rows((row,))

    def on_rows(self, rows: Iterable[FeatureRow]) -> list[Prediction]:
        """Take feature rows (a batch, a stretch of history); score every bar time they make ready at once."""
        pending, latest, done, scored = self.pending, self.latest, self._done, self.scored_until
        n_feed, feed_keys = self._n_feed, self._feed_keys
        for row in rows:
            ts = row.ts
            if ts <= scored:
                continue  # a replayed row of a bar time already scored
            sym = row.symbol
            values = pending.setdefault(ts, {}).setdefault(sym, {})
            values.update(row.values)
            if len(values) >= n_feed and feed_keys <= values.keys():  # self._complete, inline
                done.setdefault(ts, set()).add(sym)
                if ts > latest.get(sym, -1):
                    latest[sym] = ts
        # A bar time is given up on (scored with the symbols it has) once every symbol has delivered
        # a complete later bar time (bar and cross-asset rows run apart in a batch), or once
        # ``max_pending`` later bar times wait: arrival order across symbols then never changes the output.
        if not pending:
            return []
        n_symbols, symbols = len(self.symbols), self.symbols
        ready: list[tuple[int, dict[str, dict[str, float]]]] = []
        for ts in sorted(pending):
            got, fed = pending[ts], done.get(ts, ())
            # "every symbol has a later bar time" last and short-circuiting: while a bar time fills (one call
            # per arriving row) the first symbol still at it ends the check, where a min over all symbols
            # made each call O(N), O(N^2) per close (issue 21)
            if not (len(fed) == len(got) == n_symbols or len(pending) - len(ready) > self.max_pending
                    or all(latest.get(s, -1) > ts for s in symbols)):
                break
            ready.append((ts, got if len(fed) == len(got) else {s: v for s, v in got.items() if s in fed}))
        for ts, _ in ready:
            del pending[ts]
            done.pop(ts, None)
            self.scored_until = ts
        return self.score_history(ready) if ready else []

    def _daily_at(self, ts: int) -> list[float]:
        """Return the side input's features (``self._side`` order) known at bar close ``ts`` (NaN: none)."""
        if self.daily is None:
            return [math.nan] * len(self._side)
        got = self.daily.vector_as_of(self.daily.groups, int(ts))
        return [got.get(f, math.nan) for f in self._side]

    def _complete(self, values: dict[str, float]) -> bool:
        return len(values) >= self._n_feed and self._feed_keys <= values.keys()

    def score(self, ts: int, rows: dict[str, dict[str, float]]) -> list[Prediction]:
        """Score the given symbols of one bar time (symbols in configured order)."""
        return self.score_history([(ts, rows)])

    def score_history(self, times: list[tuple[int, dict[str, dict[str, float]]]]) -> list[Prediction]:
        """Score consecutive bar times in one go (a backtest or catch-up): equal to scoring them one by one."""
        if self.bank is None:
            raise RuntimeError("ScoringStep.score needs a ModelBank: call attach() first")
        self.bank.maybe_swap()
        take, todo, flat = self._take, [], []
        for ts, rows in times:
            symbols = tuple([s for s in self.symbols if s in rows])
            if not symbols:
                continue
            todo.append((ts, rows, symbols))
            flat += [take(rows[s]) for s in symbols]
        if not todo:
            return []
        # One matrix for every row of every bar time, cut into views per bar time ([symbols, feed] each).
        return self._score(todo, np.array(flat, np.float64))

    def takes_matrix(self) -> bool:
        """Return whether :meth:`score_matrix` can score (the feed holds ``ret_1``, ``rv_15`` and the policy's features)."""
        policy = self.bank.policy if self.bank is not None else None
        return ("ret_1" in self._feed_index and "rv_15" in self._feed_index
                and (policy is None or self._policy_columns(self._policy_setup(policy)[1]) is not None))

    def score_matrix(self, times: list[int], x_all: np.ndarray) -> list[Prediction]:
        """Score bar times where every symbol has every feed feature, from their feed matrix; nothing pending.

        ``x_all`` is ``[len(times) * symbols, feed]``, bar time after bar time, symbols in
        configured order.  Gives what :meth:`on_rows` gives when fed these rows as feature rows
        (the same values, so the same doubles): a replay of history skips the rows' dicts.
        Needs :meth:`takes_matrix`.
        """
        if self.bank is None:
            raise RuntimeError("ScoringStep.score needs a ModelBank: call attach() first")
        if self.pending or (times and times[0] <= self.scored_until):
            raise ValueError("score_matrix takes bar times after the last scored one, with nothing pending")
        if not times:
            return []
        self.bank.maybe_swap()
        symbols, last = self.symbols, times[-1]
        for s in symbols:
            self.latest[s] = last
        self.scored_until = last
        return self._score([(ts, None, symbols) for ts in times], x_all)

    def _score(self, todo: list[tuple[int, Any, tuple[str, ...]]], x_all: np.ndarray) -> list[Prediction]:
        """Score the bar times of ``todo`` ((ts, rows or None, symbols)) from their feed matrix ``x_all``."""
        assert self.bank is not None
        if self._side and self.daily is None:  # no side input: its features are NaN (_daily_at)
            x_all = np.hstack([x_all, np.full((len(x_all), len(self._side)), math.nan)])
        elif self._side:  # the daily side input: values known at each bar's close, the same for every symbol
            per_ts = [self._daily_at(t[0]) for t in todo]
            x_all = np.hstack([x_all, np.repeat(np.array(per_ts, np.float64).reshape(len(todo), -1),
                                                [len(t[2]) for t in todo], axis=0)])
        xs, k = [], 0
        for _, _, symbols in todo:
            xs.append(x_all[k:k + len(symbols)])
            k += len(symbols)
        scored = self.bank.score_rows([t[2] for t in todo], xs, [t[0] for t in todo])
        # Flat over every row of every bar time: one tolist per column instead of one per bar time.
        prob, conf = scored.probability.tolist(), scored.confidence.tolist()
        sig = (scored.signal if self.confidence_threshold is None else to_signal(
            np.asarray(scored.probability, np.float64), self.confidence_threshold)[1]).tolist()
        fams = tuple(scored.members)
        cols = [v.tolist() for v in scored.members.values()]
        # one dict per row, the same keys and values as dict(zip(fams, row)): a dict display for the usual three
        # members (about half the time of the C-level maps), else made by C-level maps
        if len(fams) == 3:
            f0, f1, f2 = fams
            members = [{f0: a, f1: b, f2: c} for a, b, c in zip(*cols, strict=True)]
        else:
            members = list(map(dict, map(partial(zip, fams), zip(*cols, strict=True)))) if fams else [{} for _ in prob]
        i_ret, i_rv = self._feed_index.get("ret_1"), self._feed_index.get("rv_15")
        rets = x_all[:, i_ret].tolist() if i_ret is not None else None
        rvs = x_all[:, i_rv].tolist() if i_rv is not None else None
        versions, tf, out, k = self.bank.versions(), self.timeframe, [], 0
        horizon = self.bank.ensemble.horizon
        obs_all = self._observations(x_all)
        p_all = scored.probability
        targets = self._policy_run(todo, rets, obs_all, p_all) if obs_all is not None and rets is not None else None
        if rets is not None and rvs is not None and (targets is not None or obs_all is None and self.bank.policy is None):
            # every field a flat column: the predictions made in C, the same tuples as the loop below makes
            n = len(prob)
            return list(map(_prediction, zip([s for t in todo for s in t[2]], repeat(tf, n),
                                             [t[0] for t in todo for _ in t[2]], members, prob, conf, sig,
                                             targets if targets is not None else repeat(math.nan, n),
                                             repeat(versions, n), rets, rvs, repeat(horizon, n), strict=False)))
        for (ts, rows, symbols), x in zip(todo, xs, strict=True):
            n = len(symbols)
            tgt = targets[k:k + n] if targets is not None else self._policy(
                symbols, rows, x, None if rets is None else rets[k:k + n],
                None if obs_all is None else obs_all[k:k + n], p_all[k:k + n])
            for i, s in enumerate(symbols):
                out.append(Prediction(s, tf, ts, members[k], prob[k], conf[k], sig[k], tgt[i], versions,
                                      rets[k] if rets is not None else float(rows[s].get("ret_1", 0.0)),
                                      rvs[k] if rvs is not None else float(rows[s].get("rv_15", 0.0)), horizon))
                k += 1
        return out

    def _policy_run(self, todo: list[tuple[int, Any, tuple[str, ...]]], rets: list[float], obs_all: np.ndarray,
                    p_all: np.ndarray) -> list[float]:
        """Return the policy's targets of every row of ``todo``, bar time after bar time: :meth:`_policy` of each.

        The loop of :meth:`_policy` over a stretch of bar times with the observations' features
        already in ``obs_all`` (:meth:`_observations`): the same books stepped, the same float32
        rows, one policy call per bar time (its book moved by the last action, so not batched).
        """
        assert self.bank is not None and self.bank.policy is not None
        policy = self.bank.policy
        costs, names = self._policy_setup(policy)
        n_feat, signal, books = len(names), self._signal, self.books
        missing = None
        if signal:
            missing = np.isnan(p_all).tolist()
            obs_all[:, n_feat] = p_all  # every row's probability at once (rows are independent: the same float32s)
        exps = list(map(math.exp, rets))  # each row's exp(ret_1), as PolicyBook.step takes it
        out: list[float] = []
        k = 0
        for symbols, same in groupby(t[2] for t in todo):  # runs of bar times with the same symbols
            n = len(symbols)
            rows = n * len(list(same))
            bks = [books.get(s) or self._book(s) for s in symbols]
            out += run_stretch(bks, exps[k:k + rows], obs_all[k:k + rows], act_binding(policy, n, obs_all.shape[1]),
                               n_feat + signal, costs,
                               None if missing is None else missing[k:k + rows])
            k += rows
        return out

    def _policy_columns(self, names: tuple[str, ...]) -> list[int] | None:
        """Return the feed columns of the policy's features, or None when some are not in the feed."""
        if self._policy_cols is None or self._policy_cols[0] != names:
            index = {f: i for i, f in enumerate(self.feed)}
            self._policy_cols = (names, [index[f] for f in names] if all(f in index for f in names) else None)
        return self._policy_cols[1]

    def _policy_setup(self, policy: Policy) -> tuple[tuple[float, float, float], tuple[str, ...]]:
        if self._costs is None or self._costs[0] is not policy:  # once per loaded policy (swaps replace it)
            self._costs = (policy, policy_costs(policy))
            self._names = tuple(policy.features)
            self._signal = policy_signal(policy)
        return self._costs[1], self._names

    def _observations(self, x_all: np.ndarray) -> np.ndarray | None:
        """Return float32 observations ``[rows, features (+ 1) + 5]`` with the policy's features filled from the feed.

        None without a policy or when the feed lacks some of its features; the state terms are written
        bar time by bar time (:meth:`_policy`), each from the books the previous one left.
        """
        policy = self.bank.policy if self.bank is not None else None
        if policy is None:
            return None
        names = self._policy_setup(policy)[1]
        cols = self._policy_columns(names)
        if cols is None:
            return None
        obs = np.empty((len(x_all), len(names) + self._signal + 5), np.float32)
        obs[:, :len(names)] = x_all[:, cols]  # the policy's features from the feed matrix (the same doubles)
        return obs

    def _policy(self, symbols: tuple[str, ...], rows: dict[str, dict[str, float]], x: np.ndarray,
                rets: list[float] | None = None, obs: np.ndarray | None = None,
                prob: np.ndarray | None = None) -> list[float]:
        """Return the policy's targets of one bar time's symbols (NaN without a policy); step their books.

        ``rets``: the symbols' ``ret_1`` (the feed's column), else read from ``rows``; ``obs``: their
        rows of :meth:`_observations`, else built here; ``prob``: the ensemble's probability of each
        symbol, observed by a policy trained with it.
        """
        policy = self.bank.policy if self.bank is not None else None
        if policy is None:
            return [math.nan] * len(symbols)
        costs, names = self._policy_setup(policy)
        # Each symbol's observation as TacticalBook.observation builds it: its features, then the book's
        # state terms, written into one float32 matrix (the same roundings, no array per symbol).
        n_feat, signal = len(names), self._signal
        if obs is None:
            cols = self._policy_columns(names)
            obs = np.empty((len(symbols), n_feat + signal + 5), np.float32)
            if cols is not None:
                obs[:, :n_feat] = x[:, cols]
            else:
                obs[:, :n_feat] = [[rows[s][f] for f in names] for s in symbols]
        if rets is None:
            rets = [float(rows[s].get("ret_1", 0.0)) for s in symbols]
        missing = None
        if signal:
            if prob is None:
                raise ValueError(f"policy {getattr(policy, 'manifest', None)} observes the ensemble's probability: "
                                 "score through score_history")
            obs[:, n_feat] = prob
            missing = np.isnan(prob).tolist()
        books = [self.books.get(s) or self._book(s) for s in symbols]
        return run_stretch(books, list(map(math.exp, rets)), obs, act_binding(policy, len(symbols), obs.shape[1]),
                           n_feat + signal, costs, missing)  # one bar time: the loop of _policy_run

    def _book(self, symbol: str) -> PolicyBook:
        """Return a symbol's policy book, restored from the snapshot or new (a symbol's first scored bar)."""
        rl = _rl_observation()
        saved = self._books_saved.pop(symbol, None)
        book = self.books[symbol] = (PolicyBook(rl.TacticalBook.restore(saved["book"]), saved["close"],
                                                saved["target"]) if saved else PolicyBook(rl.TacticalBook()))
        return book

    @classmethod
    def from_snapshot(cls, snap: Any, bank: ModelBank | None = None) -> ScoringStep:
        """Rebuild a step from :meth:`snapshot`; the models are attached per worker (``bank`` or :meth:`attach`)."""
        s = check_snapshot(snap, "scoring", cls.VERSION)
        return cls(tuple(s["symbols"]), s["timeframe"], bank, dict(s))

    def snapshot(self) -> dict[str, Any]:
        """Return the state as plain data (the models' runner state included, the models not)."""
        return {"kind": "scoring", "version": self.VERSION,
                "symbols": list(self.symbols), "timeframe": self.timeframe, "feed": list(self.feed),
                "scored_until": self.scored_until, "latest": dict(self.latest), "max_pending": self.max_pending,
                "confidence_threshold": self.confidence_threshold,
                "pending": {str(t): {sym: dict(v) for sym, v in rows.items()} for t, rows in self.pending.items()},
                "books": {**self._books_saved, **{s: b.snapshot() for s, b in self.books.items()}},
                "models": self.bank.snapshot() if self.bank is not None else self._models}


class CloseBarrier:
    """Release bar closes in time order, each with its bars and its predictions, or none when none will come.

    The decision step must see a close's predictions together with its bars.  The
    two travel different paths (bars straight from the symbol pipelines,
    predictions after the cross-asset and scoring steps), so waiting "long enough"
    for predictions would make trades depend on timing.  Instead this step takes
    both the trading timeframe's bars and its feature rows (one key: the
    timeframe) and decides from the data alone:

    - a close's bars are in when every symbol's bar is, or every symbol has a later
      bar (a symbol without a bar there is left out);
    - its features are expected when some symbol had at least ``warmup`` bars by then
      (the feature engine's warm-up, :data:`flows.operators.features.WARMUP`); then
      the close waits until the scoring step has scored or given up on it (see
      :class:`ScoringStep`), else it goes without predictions (models warming up).

    ``max_pending`` closes waiting bound the memory if features stop arriving
    (e.g. the cross-asset reference symbol is not streamed).
    """

    VERSION = 1  # of the snapshot's layout

    def __init__(self, scoring: ScoringStep, warmup: int, state: dict[str, Any] | None = None,
                 max_pending: int = 1000) -> None:
        """Wrap ``scoring`` (same symbols and timeframe); ``state`` is a :meth:`snapshot`."""
        from flows.timeframes import timeframe_ms

        self.scoring, self.warmup = scoring, warmup
        self.symbols, self.tf_ms = scoring.symbols, timeframe_ms(scoring.timeframe)
        s = state or {}
        self.bars: dict[int, dict[str, Bar]] = {
            int(t): {sym: Bar(*b) for sym, b in v.items()} for t, v in s.get("bars", {}).items()}
        self.expected: dict[int, bool] = {int(t): bool(v) for t, v in s.get("expected", {}).items()}
        self.preds: dict[int, list[Prediction]] = {
            int(t): [Prediction(*p) for p in v] for t, v in s.get("preds", {}).items()}
        self.count: dict[str, int] = dict(s.get("count", {}))
        self.newest: dict[str, int] = dict(s.get("newest", {}))
        self.released: int = int(s.get("released", -1))
        self.max_pending = int(s.get("max_pending", max_pending))

    def on_items(self, items: Iterable[Bar | FeatureRow | WarmupBar]) -> list[Close]:
        """Take bars and feature rows (any interleaving); return the closes they settle, oldest first.

        A :class:`WarmupBar` (a kline the features warmed up on at a fresh start) counts
        towards its symbol's warm-up and is never a close: nothing is decided on it.
        """
        rows: list[FeatureRow] = []
        for it in items:
            if isinstance(it, Bar):
                self._bar(it)
            elif isinstance(it, WarmupBar):
                self.count[it.symbol] = self.count.get(it.symbol, 0) + 1
            else:
                rows.append(it)
        for p in self.scoring.on_rows(rows) if rows else ():
            self.preds.setdefault(p.ts, []).append(p)
        return self._release()

    def idle(self) -> bool:
        """Return whether nothing waits: no bars, predictions or feature rows of an unreleased close."""
        return not self.bars and not self.preds and not self.scoring.pending

    def on_history(self, closes: list[int], bars: list[tuple[Bar, ...]], x: np.ndarray) -> list[Close]:
        """Take whole bar times of history at once: what :meth:`on_items` makes of their bars and feature rows.

        For each of ``closes`` (after the last released one, in order) ``bars`` holds every
        symbol's bar in configured order, and ``x`` (:meth:`ScoringStep.score_matrix`) every
        symbol's feed features.  Such a close is complete, so :meth:`on_items` would score and
        release each one: this does the same without the records.  Needs :meth:`idle`.
        """
        if not self.idle():
            raise RuntimeError("CloseBarrier.on_history needs an idle barrier (nothing pending)")
        if not closes:
            return []
        if closes[0] <= self.released:
            raise ValueError(f"close {closes[0]} is not after the last released one ({self.released})")
        count, newest, n = self.count, self.newest, len(self.symbols)
        for got in bars:
            if len(got) != n:
                raise ValueError(f"on_history needs every symbol's bar of a close, got {len(got)} of {n}")
            for b in got:
                count[b.symbol] = count.get(b.symbol, 0) + 1
        last = closes[-1]
        for s in self.symbols:
            newest[s] = max(last, newest.get(s, -1))
        preds = self.scoring.score_matrix(closes, x)
        self.released = last
        return list(map(_close, zip(closes, bars, [tuple(preds[k:k + n]) for k in range(0, len(preds), n)],
                                    strict=True)))

    def _bar(self, bar: Bar) -> None:
        close = bar.ts + self.tf_ms
        if close <= self.released or bar.symbol in self.bars.get(close, {}):
            return  # a replayed bar
        self.bars.setdefault(close, {})[bar.symbol] = bar
        n = self.count[bar.symbol] = self.count.get(bar.symbol, 0) + 1
        self.newest[bar.symbol] = max(close, self.newest.get(bar.symbol, -1))
        self.expected[close] = self.expected.get(close, False) or n >= self.warmup

    def _release(self) -> list[Close]:
        out: list[Close] = []
        n_symbols, newest = len(self.symbols), self.newest
        for t in sorted(self.bars):
            got = self.bars[t]
            # a generator, not a list: the first symbol without a later bar ends the check (one item per
            # call while a bar time fills, where a list read every symbol: O(N^2) per close, issue 21)
            if len(got) < n_symbols and not all(newest.get(s, -1) > t for s in self.symbols):
                break
            if self.expected.get(t) and self.scoring.scored_until < t and len(self.bars) <= self.max_pending:
                break
            del self.bars[t]
            self.expected.pop(t, None)
            bars = tuple(got[s] for s in self.symbols if s in got)
            out.append(Close(t, bars, tuple(self.preds.pop(t, ()))))
            self.released = t
        for t in [t for t in self.preds if t <= self.released]:
            del self.preds[t]  # predictions of a close released without them (bounded memory)
        return out

    @classmethod
    def from_snapshot(cls, snap: Any, bank: ModelBank | None = None) -> CloseBarrier:
        """Rebuild a barrier and its scoring step from :meth:`snapshot` (see :mod:`flows.snapshots`)."""
        s = check_snapshot(snap, "close_barrier", cls.VERSION)
        return cls(ScoringStep.from_snapshot(s["scoring"], bank), int(s["warmup"]), dict(s))

    def snapshot(self) -> dict[str, Any]:
        """Return the state as plain data (the scoring step's included)."""
        return {"kind": "close_barrier", "version": self.VERSION, "scoring": self.scoring.snapshot(),
                "warmup": self.warmup, "max_pending": self.max_pending,
                "bars": {str(t): {s: tuple(b) for s, b in v.items()} for t, v in self.bars.items()},
                "expected": {str(t): v for t, v in self.expected.items()},
                "preds": {str(t): [tuple(p) for p in v] for t, v in self.preds.items()},
                "count": dict(self.count), "newest": dict(self.newest), "released": self.released}
