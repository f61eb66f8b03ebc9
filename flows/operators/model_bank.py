"""Registered models of the scoring step, loaded once per worker and hot-swappable.

A :class:`ModelBank` holds the ONNX ensemble (:class:`inference.runners.EnsembleScorer`)
and, when registered, the tactical RL policy (``inference.policy.PolicyRunner``).
:meth:`ModelBank.request_swap` (a SIGHUP handler, a settings or Redis key checked
per bar) marks a reload; :meth:`ModelBank.maybe_swap` then loads the registry's
current versions and keeps every member runner whose version did not change,
so the streaming LSTM keeps its per-symbol state across a swap.

Only versions of the bank's timeframe load (the registry's ``latest.<tf>`` pointers,
:mod:`inference.promotions`), and a policy must observe the ensemble's feature service:
:func:`check_policy` refuses any other with the command that trains the right one.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from flows.feature_catalog import BAR_FEATURES, CROSS_FEATURES, FEATURE_SERVICE_VERSION
from flows.feature_groups import SERVICE_VERSIONS, daily_groups, research_services, service_features
from inference.graph import sliding_adjacency
from inference.lstm_stream import LstmRunner
from inference.manifest import (
    Manifest,
    ManifestError,
    check_policy,
    read_manifest,
    resolve_version_dir,
    train_hint,
)
from inference.runners import EnsembleScorer, GnnGraphRunner

STATELESS = frozenset({"lightgbm"})  # row-wise members: any batch of rows in one session run


class Scores(NamedTuple):
    """Scores of consecutive bar times, flat over their rows (bar time after bar time)."""

    members: dict[str, np.ndarray]  # family -> P(up), in the runners' order
    probability: np.ndarray  # the ensemble's P(up)
    confidence: np.ndarray
    signal: np.ndarray  # int8: -1 no signal, 0 bearish, 1 bullish


class Policy(Protocol):
    """What the scoring step needs of ``inference.policy.PolicyRunner``."""

    features: Sequence[str]

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Return post-processed actions for observations ``[n, d]``."""
        ...


def services(timeframe: str) -> dict[str, list[str]]:
    """Return the ordered feature list of each model family's feature service for a timeframe (every version)."""
    names = [f"{family}_{timeframe}_{v}" for v, families in SERVICE_VERSIONS.items() for family in families]
    return {n: service_features(n) for n in (*names, *research_services(timeframe))}


def feed_features() -> list[str]:
    """Return the order of the per-symbol feed vector: bar features then cross-asset features."""
    return [*BAR_FEATURES, *CROSS_FEATURES]


def models_problem(root: Path, timeframe: str | None = None, version: str = "latest") -> str | None:
    """Return why the registry holds no ensemble (of ``timeframe`` when given) to score with, or ``None``."""
    try:
        d = resolve_version_dir(root, "ensemble", version, timeframe=timeframe)
        service = read_manifest(d).feature_service
    except (ManifestError, FileNotFoundError, OSError) as exc:
        return str(exc)
    if timeframe is not None and service != f"ensemble_{timeframe}_{FEATURE_SERVICE_VERSION}":
        return (f"the {timeframe} ensemble in {root} was trained on {service}, not ensemble_{timeframe}_"
                f"{FEATURE_SERVICE_VERSION}: train one with {train_hint('ensemble', timeframe)}")
    return None


def daily_features() -> list[str]:
    """Return the daily groups' features, in registry order: the scoring step's side input appends them."""
    return [f for g in daily_groups() for f in g.features]


def model_feed() -> list[str]:
    """Return the models' feed: the per-symbol feed, then the daily side input (v1 models take a subset)."""
    return [*feed_features(), *daily_features()]


def has_models(root: Path, timeframe: str | None = None) -> bool:
    """Return whether the registry holds an ensemble (of ``timeframe`` when given) for the scoring step."""
    return models_problem(root, timeframe) is None


def load_policy(root: Path, family: str, version: str = "latest", timeframe: str | None = None,
                ensemble: Manifest | None = None) -> Policy | None:
    """Load the policy of ``timeframe``, or ``None`` when the registry has no such family.

    Raises:
        TimeframeMismatch: the family has no version of ``timeframe``, or it does not observe
            the ``ensemble``'s feature service (:func:`check_policy`).
    """
    if not (Path(root) / family).is_dir():
        return None
    module = importlib.import_module("inference.policy")
    runner: Policy = module.PolicyRunner.from_registry(root, family, version=version,
                                                       allowed_features=feed_features(), timeframe=timeframe)
    if ensemble is not None:
        check_policy(runner.manifest, ensemble)  # type: ignore[attr-defined]
    return runner


def gnn_many(runner: GnnGraphRunner, syms: Sequence[tuple[str, ...]], xs: Sequence[np.ndarray],
             flat: np.ndarray | None = None) -> np.ndarray:
    """Score consecutive bar times with the GNN in one session run; advance its return window.

    Equal to calling ``runner.score`` bar by bar up to float rounding of the batched graph run.
    ``flat``: the ``xs`` stacked (``score_rows`` has them so), saving a copy.
    """
    index = {s: i for i, s in enumerate(runner.symbols)}
    n_nodes, n_feat = len(runner.symbols), len(runner.manifest.features)
    same = syms.count(syms[0]) == len(syms)  # history: every bar time with the same symbols
    if same and tuple(syms[0]) == tuple(runner.symbols):  # every node in node order: the rows are the nodes
        x2 = np.concatenate(xs) if flat is None else flat
        x2 = x2 if runner.cols is None else x2[:, runner.cols]
        nodes = x2.reshape(len(xs), n_nodes, n_feat)  # the values the placement below copies
        rets = nodes[:, :, runner.ret_idx]
        return _gnn_run(runner, syms, nodes, rets, index, same)
    nodes = np.zeros((len(xs), n_nodes, n_feat))
    rets = np.full((len(xs), n_nodes), np.nan)
    for b, (sy, x) in enumerate(zip(syms, xs, strict=True)) if not same else ():
        x = x if runner.cols is None else x[:, runner.cols]
        rows = [(r, index[s]) for r, s in enumerate(sy) if s in index]
        if rows:
            r_idx, n_idx = map(list, zip(*rows, strict=True))
            nodes[b, n_idx] = x[r_idx]
            rets[b, n_idx] = x[r_idx, runner.ret_idx]
    rows0 = [(r, index[s]) for r, s in enumerate(syms[0]) if s in index] if same else []
    if rows0:  # the same placement for every bar time, in one assignment (the same values)
        x3 = np.stack(xs)
        x3 = x3 if runner.cols is None else x3[:, :, runner.cols]
        r_idx, n_idx = map(list, zip(*rows0, strict=True))
        nodes[:, n_idx] = x3[:, r_idx]
        rets[:, n_idx] = x3[:, r_idx, runner.ret_idx]
    return _gnn_run(runner, syms, nodes, rets, index, same)


def _gnn_run(runner: GnnGraphRunner, syms: Sequence[tuple[str, ...]], nodes: np.ndarray, rets: np.ndarray,
             index: dict[str, int], same: bool) -> np.ndarray:
    """:func:`gnn_many` once its bar times' node features ``[B, N, F]`` and returns ``[B, N]`` are placed."""
    g, n_nodes = runner.runner, len(runner.symbols)
    held = g.returns
    hist = np.vstack([held, rets])
    first = len(held)  # hist row of the first new bar
    p = np.full((len(syms), n_nodes), np.nan)
    ends = np.arange(first, len(hist)) + 1  # exclusive end of each bar's window
    ok = ends >= g.window
    if ok.any():
        # the windows ending at ends[ok] (consecutive): correlation_adjacency of each, bit for bit
        adj = sliding_adjacency(hist[ends[ok][0] - g.window:], g.window, g.threshold)
        feats = np.nan_to_num((nodes if ok.all() else nodes[ok]).astype(np.float32), copy=False)
        p[ok] = g.sess.run(["prob"], {"x": feats, "adj": adj})[0].astype(np.float64)
    g.returns = hist[-g.window:]
    if same and all(s in index for s in syms[0]):
        return p[:, [index[s] for s in syms[0]]].reshape(-1)
    out = np.full(sum(len(sy) for sy in syms), np.nan)
    k = 0
    for b, sy in enumerate(syms):
        for s in sy:
            out[k] = p[b, index[s]] if s in index else np.nan
            k += 1
    return out


class ModelBank:
    """The ensemble and the policy of one timeframe, with versions and hot swap."""

    def __init__(self, root: Path, timeframe: str, ensemble_version: str = "latest",
                 policy_family: str | None = "rl_tactical", policy_version: str = "latest",
                 service_features: Mapping[str, Sequence[str]] | None = None,
                 feed: Sequence[str] | None = None, gnn_cluster_size: int = 0) -> None:
        """Load the ensemble (with its exact members) and the policy from ``root``.

        ``service_features`` and ``feed`` default to the project's feature services and
        :func:`model_feed` (the per-symbol feed, then the daily side input); tests pass their own.
        ``gnn_cluster_size`` (``scoring.gnn_cluster_size``): above that many assets the GNN scores
        correlated clusters of at most that many, in one batched run per close; 0: dense.
        """
        self.gnn_cluster_size = gnn_cluster_size
        self.root, self.timeframe = Path(root), timeframe
        self.service_features = dict(service_features or services(timeframe))
        self.feed = list(feed or model_feed())
        self.ensemble_version, self.policy_family, self.policy_version = ensemble_version, policy_family, \
            policy_version
        self.ensemble = self._load_ensemble()
        self.policy = self._load_policy()
        self._swap = False
        # history mode: the GNN's bar times in one session run, the LSTM's in one seq.onnx call per run of
        # consecutive bars (float-close to bar by bar, not bitwise)
        self.history_mode = False
        self._versions: dict[str, str] | None = None
        self.swaps = 0
        self.swap_error: str | None = None

    def _load_ensemble(self) -> EnsembleScorer:
        return EnsembleScorer.from_registry(self.root, self.service_features, feed=self.feed,
                                            version=self.ensemble_version, timeframe=self.timeframe,
                                            gnn_cluster_size=self.gnn_cluster_size)

    def _load_policy(self) -> Policy | None:
        if not self.policy_family:
            return None
        return load_policy(self.root, self.policy_family, self.policy_version, self.timeframe,
                           self.ensemble.manifest)

    def needs(self) -> set[str]:
        """Return the feed features the loaded members take."""
        return {f for r in self.ensemble.scorer.runners.values() for f in r.manifest.features}

    def versions(self) -> dict[str, str]:
        """Return family -> loaded version (ensemble, its members, and the policy when loaded)."""
        if self._versions is None:
            self._versions = self._read_versions()
        return self._versions

    def _read_versions(self) -> dict[str, str]:
        out = {"ensemble": self.ensemble.manifest.version}
        out.update({f: r.manifest.version for f, r in self.ensemble.scorer.runners.items()})
        if self.policy is not None and self.policy_family:
            manifest = getattr(self.policy, "manifest", None)
            out[self.policy_family] = str(getattr(manifest, "version", "?"))
        return out

    def request_swap(self, *_: Any) -> None:
        """Mark a reload for the next bar (usable directly as a signal handler)."""
        self._swap = True

    def maybe_swap(self) -> bool:
        """Reload if a swap was requested; keep unchanged member runners (and their state).

        A swap to versions that cannot load (another timeframe, a tampered file) is refused:
        the bank keeps its models and says why (:attr:`swap_error`).
        """
        if not self._swap:
            return False
        self._swap = False
        old, kept = self.ensemble.scorer.runners, self.ensemble
        try:
            new = self._load_ensemble()
            self.ensemble = new
            policy = self._load_policy()
        except ManifestError as exc:  # a bad promotion never stops the flow: it keeps scoring with what it had
            self.ensemble, self.swap_error = kept, str(exc)
            print(f"model swap refused, scoring on with {self.versions()}: {exc}", file=sys.stderr, flush=True)
            return False
        for fam, runner in new.scorer.runners.items():
            if fam in old and old[fam].manifest.version == runner.manifest.version:
                new.scorer.runners[fam] = old[fam]
        self.policy, self._versions, self.swap_error = policy, None, None
        self.swaps += 1
        return True

    def score_rows(self, syms: Sequence[tuple[str, ...]], xs: Sequence[np.ndarray],
                   times: Sequence[int] | None = None) -> Scores:
        """Score consecutive bar times at once: their symbols and feed matrices ``[symbols, feed]``.

        Row-wise members (:data:`STATELESS`) and the ensemble graph run once over every row of
        every bar time; stateful members (streaming LSTM, GNN window) step bar by bar in order,
        or, in history mode (:attr:`history_mode`), score all the bar times in one go.
        ``times`` (bar closes, ms) let the streaming LSTM restart a symbol after a gap in its bars.
        Returns the scores flat over the rows, bar time after bar time.
        """
        ens = self.ensemble
        probs: dict[str, np.ndarray] = {}
        flat_x = xs[0] if len(xs) == 1 else np.concatenate(xs)
        for fam, runner in ens.scorer.runners.items():
            if fam in STATELESS:
                flat = syms[0] if len(syms) == 1 else tuple(chain.from_iterable(syms))
                probs[fam] = np.asarray(runner.score(flat, flat_x), np.float64)
            elif self.history_mode and isinstance(runner, GnnGraphRunner) and not runner.runner.cluster_size:
                probs[fam] = gnn_many(runner, syms, xs, flat_x)
            elif self.history_mode and isinstance(runner, LstmRunner) and len(syms) > 1:
                probs[fam] = runner.history_rows(syms, flat_x, times)
            elif len(syms) == 1:
                probs[fam] = np.asarray(runner.score(syms[0], xs[0], bar_ts=None if times is None else times[0]),
                                        np.float64)
            else:
                at = list(times) if times is not None else [None] * len(syms)
                probs[fam] = np.concatenate([np.asarray(runner.score(sy, x, bar_ts=t), np.float64)
                                             for sy, x, t in zip(syms, xs, at, strict=True)])
        members = np.stack([probs[f] for f in ens.members], axis=1)
        p, conf, sig = ens.session.run(["prob", "confidence", "signal"], {"probs": members})
        return Scores(probs, np.asarray(p, np.float64), np.asarray(conf, np.float64), np.asarray(sig, np.int8))

    def snapshot(self) -> dict[str, Any]:
        """Return the stateful runners' state as plain data (LSTM per-symbol states, GNN return window)."""
        out: dict[str, Any] = {}
        for fam, runner in self.ensemble.scorer.runners.items():
            stream = getattr(runner, "stream", None)
            if stream is not None:
                out[fam] = {"version": runner.manifest.version, "lstm": stream.snapshot()}
            gnn = getattr(getattr(runner, "runner", None), "returns", None)
            if gnn is not None:
                out[fam] = {"version": runner.manifest.version, "gnn": np.asarray(gnn).tolist()}
        return out

    def restore(self, snap: Mapping[str, Any]) -> None:
        """Load a :meth:`snapshot` into runners of the same version (others start fresh)."""
        for fam, st in snap.items():
            runner = self.ensemble.scorer.runners.get(fam)
            if runner is None or runner.manifest.version != st.get("version"):
                continue
            if "lstm" in st:
                runner.stream.restore(st["lstm"])  # type: ignore[attr-defined]
            if "gnn" in st:
                inner = runner.runner  # type: ignore[attr-defined]
                inner.returns = np.asarray(st["gnn"], np.float64)
