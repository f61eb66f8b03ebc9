"""Scoring step: every symbol's features of one bar time -> ensemble + policy -> predictions.

A pure state machine keyed by timeframe.  Per-symbol bar features and the
cross-asset step's rows arrive in any interleaving; a bar time is scored once
every symbol has delivered all feed features, or, for the symbols that have,
once every symbol has delivered a later bar time (a symbol still warming up is
left out, never zero-filled).  One scoring call per bar time runs the ONNX ensemble with its
members (LightGBM, streaming LSTM, GNN) and the tactical policy on all symbols
at once.

The policy observation needs a position state.  The step keeps the policy's own
book per symbol, as the tactical environment does in training: the position is
the policy's last target, marked with each bar's ``ret_1``.  The risk engine and
the portfolio downstream decide what is actually traded.

Snapshots are plain data: pending rows, the policy book and the stateful runners'
state (LSTM per symbol, GNN return window); the models themselves are attached
per worker (:meth:`ScoringStep.attach`).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np

from flows.operators.model_bank import ModelBank, feed_features
from flows.records import FeatureRow


class Prediction(NamedTuple):
    """One symbol's scores at a bar close (``ts``, ms)."""

    symbol: str
    timeframe: str
    ts: int
    probabilities: dict[str, float]  # member family -> P(up) (NaN while warming up)
    probability: float  # ensemble P(up)
    confidence: float  # |p - 0.5| * 2
    signal: int  # -1 no signal, 0 bearish, 1 bullish (inference.scorer.to_signal)
    rl_target: float  # policy target position in [-1, 1]; NaN without a policy
    versions: dict[str, str]
    ret_1: float
    volatility: float  # rv_15 of the bar features


@dataclass
class PolicyBook:
    """The policy's own position per symbol, marked bar by bar."""

    position: float = 0.0
    equity: float = 1.0
    entry_equity: float = 1.0
    peak: float = 1.0
    bars_held: int = 0
    last_change: float = 0.0

    def mark(self, ret_1: float) -> None:
        """Move equity by this bar's return on the held position."""
        before = self.equity
        self.equity *= 1.0 + self.position * math.expm1(ret_1)
        self.peak = max(self.peak, self.equity)
        self.last_change = self.equity / before - 1.0

    def observation_state(self) -> tuple[float, float, float, int, float]:
        """Return (position, unrealized_pnl, equity_change, bars_held, drawdown)."""
        upnl = self.equity / self.entry_equity - 1.0 if self.position else 0.0
        return self.position, upnl, self.last_change, self.bars_held, 1.0 - self.equity / self.peak

    def hold(self, target: float) -> None:
        """Take the policy's new target; a new or flipped position restarts the holding clock."""
        if target == 0.0 or self.position == 0.0 or (target > 0) != (self.position > 0):
            self.bars_held, self.entry_equity = 0, self.equity
        else:
            self.bars_held += 1
        self.position = float(target)


def _tactical_observation() -> Callable[..., np.ndarray]:
    fn: Callable[..., np.ndarray] = importlib.import_module("inference.rl_observation").tactical_observation
    return fn


class ScoringStep:
    """Join one timeframe's feature rows by bar time and score complete bar times."""

    def __init__(self, symbols: tuple[str, ...], timeframe: str, bank: ModelBank | None = None,
                 state: dict[str, Any] | None = None, feed: list[str] | None = None,
                 max_pending: int = 1000) -> None:
        """Create the step; ``state`` is a :meth:`snapshot`; ``bank`` may be attached later.

        ``feed`` is the ordered feature vector the models take (default :func:`feed_features`).
        """
        self.symbols, self.timeframe = tuple(symbols), timeframe
        s = state or {}
        self.feed = list(feed or s.get("feed") or (bank.feed if bank is not None else feed_features()))
        self._feed_keys, self._n_feed, self._take = frozenset(self.feed), len(self.feed), itemgetter(*self.feed)
        self.pending: dict[int, dict[str, dict[str, float]]] = {
            int(t): {sym: dict(v) for sym, v in rows.items()} for t, rows in s.get("pending", {}).items()}
        self.books = {sym: PolicyBook(**b) for sym, b in s.get("books", {}).items()}
        self.scored_until: int = int(s.get("scored_until", -1))
        self.latest: dict[str, int] = {k: int(v) for k, v in s.get("latest", {}).items()}
        self.max_pending = int(s.get("max_pending", max_pending))
        self._models: dict[str, Any] = dict(s.get("models", {}))
        self.bank: ModelBank | None = None
        if bank is not None:
            self.attach(bank)

    def attach(self, bank: ModelBank) -> None:
        """Use ``bank`` for scoring, restoring runner state saved in the snapshot."""
        self.bank = bank
        if self._models:
            bank.restore(self._models)
            self._models = {}

    def on_row(self, row: FeatureRow) -> list[Prediction]:
        """Take one feature row; return the predictions of every bar time it completes or closes."""
        return self.on_rows((row,))

    def on_rows(self, rows: Iterable[FeatureRow]) -> list[Prediction]:
        """Take feature rows (a batch, a stretch of history); score every bar time they make ready at once."""
        for row in rows:
            if row.ts <= self.scored_until:
                continue  # a replayed row of a bar time already scored
            values = self.pending.setdefault(row.ts, {}).setdefault(row.symbol, {})
            values.update(row.values)
            if row.ts > self.latest.get(row.symbol, -1) and self._complete(values):
                self.latest[row.symbol] = row.ts
        # A bar time is given up on (scored with the symbols it has) once every symbol has delivered
        # a complete later bar time (bar and cross-asset rows run apart in a batch), or once
        # ``max_pending`` later bar times wait: arrival order across symbols then never changes the output.
        passed = min([self.latest.get(s, -1) for s in self.symbols])
        ready: list[tuple[int, dict[str, dict[str, float]]]] = []
        for ts in sorted(self.pending):
            got = self.pending[ts]
            complete = len(got) == len(self.symbols) and all([self._complete(v) for v in got.values()])
            if not (complete or ts < passed or len(self.pending) - len(ready) > self.max_pending):
                break
            ready.append((ts, {s: v for s, v in got.items() if self._complete(v)}))
        for ts, _ in ready:
            del self.pending[ts]
            self.scored_until = ts
        return self.score_history(ready) if ready else []

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
        todo = [(ts, rows, [s for s in self.symbols if s in rows]) for ts, rows in times]
        todo = [t for t in todo if t[2]]
        feeds = [{s: np.array(self._take(rows[s]), np.float64) for s in symbols} for _, rows, symbols in todo]
        out: list[Prediction] = []
        for (ts, rows, symbols), scores in zip(todo, self.bank.score_many(feeds), strict=True):
            out += self._predictions(ts, rows, symbols, scores)
        return out

    def _predictions(self, ts: int, rows: dict[str, dict[str, float]], symbols: list[str],
                     scores: dict[str, Any]) -> list[Prediction]:
        targets = self._policy(symbols, rows)
        versions = self.bank.versions() if self.bank is not None else {}
        ens = scores["ensemble"]
        members = [f for f in scores if f != "ensemble"]
        out = []
        for i, s in enumerate(symbols):
            out.append(Prediction(
                s, self.timeframe, ts, {f: float(scores[f].probability[i]) for f in members},
                float(ens.probability[i]), float(ens.confidence[i]), int(ens.signal[i]), float(targets[i]),
                versions, float(rows[s].get("ret_1", 0.0)), float(rows[s].get("rv_15", 0.0))))
        return out

    def _policy(self, symbols: list[str], rows: dict[str, dict[str, float]]) -> np.ndarray:
        policy = self.bank.policy if self.bank is not None else None
        if policy is None:
            return np.full(len(symbols), np.nan)
        observe = _tactical_observation()
        names = [f for f in policy.features if f in self.feed]
        obs = []
        for s in symbols:
            book = self.books.setdefault(s, PolicyBook())
            book.mark(float(rows[s].get("ret_1", 0.0)))
            x = np.fromiter((rows[s][f] for f in names), np.float32, len(names))
            obs.append(observe(x, *book.observation_state()))
        act = np.asarray(policy.act(np.stack(obs)), np.float64).reshape(len(symbols), -1)[:, 0]
        act = np.clip(act, -1.0, 1.0)
        for s, a in zip(symbols, act, strict=True):
            self.books[s].hold(float(a))
        return act

    def snapshot(self) -> dict[str, Any]:
        """Return the state as plain data."""
        return {"symbols": list(self.symbols), "timeframe": self.timeframe, "feed": self.feed,
                "scored_until": self.scored_until, "latest": dict(self.latest), "max_pending": self.max_pending,
                "pending": {str(t): rows for t, rows in self.pending.items()},
                "books": {s: vars(b).copy() for s, b in self.books.items()},
                "models": self.bank.snapshot() if self.bank is not None else self._models}

    def __getstate__(self) -> dict[str, Any]:
        # Bytewax pickles operator state: keep it plain data, the sessions stay with the worker.
        return self.snapshot()

    def __setstate__(self, snap: dict[str, Any]) -> None:
        self.__init__(tuple(snap["symbols"]), snap["timeframe"], None, snap)  # type: ignore[misc]
