"""LSTM, GNN and ensemble scoring from the registry, onnxruntime + numpy only.

Importing this module registers the ``lstm`` and ``gnn`` families in
:data:`inference.scorer.RUNNERS` (the scorer's extension point), so
``Scorer.from_registry(root, ["lightgbm", "lstm", "gnn"], ...)`` loads all three.

Feeding several feature services.  :meth:`Scorer.score` stacks one feature vector
per symbol.  Families trained on different services (``lstm_1h_v1`` holds the bar
features only, ``lightgbm_1h_v1`` bar + cross-asset features) are fed one *feed*
vector in a given order, from which each runner takes its own manifest's features
by name: pass ``runners=runner_factories(feed)`` to ``Scorer.from_registry``.
Without a feed, ``x`` is taken to be in the manifest's own order.

Registry conventions (written by ``training/train.py``):

* ``lstm``: ``step.onnx`` (inputs x [B, F], h, c; outputs prob, h_out, c_out),
  ``seq.onnx`` (x [B, T, F], h, c; outputs prob [B, T], h_out, c_out) and
  ``extra = {"burn_in": int, "bptt": int, "segment": int, ...}``; scored by
  :class:`inference.lstm_stream.LstmStreamRunner` (one carried state per symbol).
* ``gnn``: ``model.onnx`` (inputs x [B, N, F], adj [B, N, N]; output prob) and
  ``extra = {"symbols": [...], "graph": {"return_col", "window", "threshold"}}``;
  all symbols of a bar in one call (a symbol absent from a bar gets zero features
  and a NaN return, as in training).
* ``ensemble``: ``ensemble.onnx`` (``training/export/ensemble_onnx.py``) and
  ``extra = {"members": {family: version}, "ensemble": EnsembleConfig.to_dict()}``;
  :class:`EnsembleScorer` loads exactly those member versions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnxruntime as ort

from inference.gnn_stream import GnnRunner
from inference.lstm_stream import LstmRunner
from inference.manifest import Manifest, ManifestError, resolve_version_dir, verify
from inference.scorer import (
    RUNNERS,
    ModelRunner,
    ModelScore,
    RunnerFactory,
    Scorer,
    TabularRunner,
    feed_columns,
    open_session,
)

GNN_FILE = "model.onnx"
ENSEMBLE_FILE = "ensemble.onnx"


class _RowMap(NamedTuple):
    """Where the rows of one symbol tuple go among the GAT's nodes (computed once per tuple)."""

    rows: np.ndarray  # rows of x whose symbol is a node
    nodes: np.ndarray  # their node positions
    complete: bool  # every node present, in node order: x's rows are the nodes


class GnnGraphRunner:
    """Graph attention network from the registry: all symbols of a bar at once."""

    MAX_ROW_MAPS = 64  # distinct symbol tuples remembered (a bar normally has the same ones)

    def __init__(self, manifest: Manifest, version_dir: Path, feed: Sequence[str] | None = None,
                 cluster_size: int = 0) -> None:
        """Open ``model.onnx`` with the manifest's symbol order and graph settings.

        ``cluster_size`` > 0: above that many assets, score them on correlated clusters of at
        most that many (:class:`inference.gnn_stream.GnnRunner`); 0: dense over all.
        """
        self.manifest = manifest
        self.cols = feed_columns(manifest, feed)
        graph = manifest.extra["graph"]
        self.symbols = tuple(manifest.extra["symbols"])
        ret_col = graph["return_col"]
        if ret_col not in manifest.features:
            raise ManifestError(f"gnn/{manifest.version}: return column {ret_col!r} is not among its features")
        self.ret_idx = list(manifest.features).index(ret_col)
        self._ret_col = self.ret_idx if self.cols is None else int(self.cols[self.ret_idx])  # in x as fed
        try:
            self.runner = GnnRunner((version_dir / GNN_FILE).read_bytes(), self.symbols, int(graph["window"]),
                                    float(graph["threshold"]), cluster_size)
        except ValueError as exc:  # a swap to it is refused, a start stops with the reason
            raise ManifestError(f"gnn/{manifest.version}: {exc}") from exc
        self._index = {s: i for i, s in enumerate(self.symbols)}
        self._maps: dict[tuple[str, ...], _RowMap] = {}

    def _row_map(self, symbols: Sequence[str]) -> _RowMap:
        key = symbols if isinstance(symbols, tuple) else tuple(symbols)
        m = self._maps.get(key)
        if m is None:
            if len(self._maps) >= self.MAX_ROW_MAPS:
                self._maps.clear()
            pairs = [(r, self._index[s]) for r, s in enumerate(key) if s in self._index]
            rows = np.array([r for r, _ in pairs], np.intp)
            nodes = np.array([n for _, n in pairs], np.intp)
            m = self._maps[key] = _RowMap(rows, nodes, key == self.symbols)
        return m

    def score(self, symbols: Sequence[str], x: np.ndarray, bar_ts: int | None = None) -> np.ndarray:
        """Push one bar of the model's assets; P(up) per given symbol (NaN for an unknown one).

        A model asset absent from the bar gets zero features and a NaN return, as in training.
        ``bar_ts`` is accepted and not used: the GAT was trained on consecutive stored bar
        times whatever their spacing, and its return window does the same.
        """
        m = self._row_map(symbols)
        x = np.asarray(x, np.float64)
        nodes = self.runner.nodes[0]
        if m.complete:
            rets = x[:, self._ret_col]
            nodes[:] = x if self.cols is None else x[:, self.cols]  # float64 -> float32 as astype rounds
        else:
            rets = np.full(len(self.symbols), np.nan)
            rets[m.nodes] = x[m.rows, self._ret_col]
            nodes.fill(0.0)
            nodes[m.nodes] = x[m.rows] if self.cols is None else x[np.ix_(m.rows, self.cols)]
        p = self.runner.step(rets)
        if m.complete:
            return p
        out = np.full(len(symbols), np.nan)
        out[m.rows] = p[m.nodes]
        return out


def runner_factories(feed: Sequence[str] | None = None, gnn_cluster_size: int = 0) -> dict[str, RunnerFactory]:
    """Return factories for ``lightgbm``, ``lstm`` and ``gnn`` taking their features by name from ``feed``.

    ``gnn_cluster_size``: see :class:`GnnGraphRunner` (0: the GNN dense over all its assets).
    """
    def lightgbm(m: Manifest, d: Path) -> ModelRunner:
        cols = feed_columns(m, feed)
        return TabularRunner(m, d) if cols is None else _Selecting(TabularRunner(m, d), cols)

    def lstm(m: Manifest, d: Path) -> ModelRunner:
        return LstmRunner(m, d, feed)

    def gnn(m: Manifest, d: Path) -> ModelRunner:
        return GnnGraphRunner(m, d, feed, gnn_cluster_size)

    return {"lightgbm": lightgbm, "lstm": lstm, "gnn": gnn}


def register() -> None:
    """Add the ``lstm`` and ``gnn`` families to the scorer's :data:`RUNNERS` (x in manifest order)."""
    factories = runner_factories()
    RUNNERS["lstm"], RUNNERS["gnn"] = factories["lstm"], factories["gnn"]


register()


@dataclass
class EnsembleScorer:
    """The registered ensemble and its exact member versions: member scores plus the ensemble's."""

    scorer: Scorer
    manifest: Manifest
    members: tuple[str, ...]

    session: ort.InferenceSession
    _order: tuple[str, ...] = field(default=(), init=False, repr=False)
    _rows: np.ndarray | None = field(default=None, init=False, repr=False)  # None: runners in member order

    @classmethod
    def from_registry(cls, root: str | Path, feature_service_features: Mapping[str, Sequence[str]],
                      feed: Sequence[str] | None = None, version: str = "latest",
                      timeframe: str | None = None, gnn_cluster_size: int = 0) -> EnsembleScorer:
        """Load the ensemble manifest, then its members (through the scorer) at the recorded versions.

        Args:
            root: registry root.
            feature_service_features: ordered feature list of every feature service that can be fed.
            feed: order of the per-symbol vectors given to :meth:`score` (default: members share one order).
            version: ensemble version (``latest`` by default).
            timeframe: the run's timeframe: an ensemble of another is refused
                (:class:`inference.manifest.TimeframeMismatch`).
            gnn_cluster_size: the GNN member's clusters (:class:`GnnGraphRunner`; 0: dense).
        """
        d = resolve_version_dir(root, "ensemble", version, timeframe=timeframe)
        m = verify(d)
        cfg = m.extra["ensemble"]
        members = tuple(cfg["members"])
        versions = {fam: str(v) for fam, v in m.extra["members"].items()}
        scorer = Scorer.from_registry(root, members, feature_service_features, versions=versions,
                                      confidence_threshold=float(cfg["threshold"]),
                                      runners=runner_factories(feed, gnn_cluster_size))
        return cls(scorer, m, members, open_session((d / ENSEMBLE_FILE).read_bytes()))

    @property
    def horizon(self) -> int:
        """Return the bars the ensemble's label looks ahead (its manifest, else its first member's config, else 1)."""
        h = self.manifest.extra.get("horizon")
        if h is None and self.members:  # registries from before the ensemble recorded it
            member = getattr(self.scorer.runners.get(self.members[0]), "manifest", None)
            h = member.config.get("horizon") if member is not None else None
        return int(h or 1)

    def score(self, rows: Mapping[str, np.ndarray], bar_ts: int | None = None) -> dict[str, ModelScore]:
        """Score one bar: every member's :class:`ModelScore` and ``"ensemble"`` from the ensemble graph.

        ``bar_ts`` (bar close, epoch ms) lets the streaming LSTM reset a symbol after a gap;
        see :meth:`inference.scorer.Scorer.score`.
        """
        symbols, p = self.scorer.probabilities(rows, bar_ts=bar_ts)
        out = self.scorer.model_scores(symbols, p)
        order = tuple(self.scorer.runners)
        if order != self._order:  # rows of p in member order, recomputed only if the runners changed
            at = [order.index(f) for f in self.members]
            self._order, self._rows = order, None if at == list(range(len(order))) else np.array(at, np.intp)
        probs = np.ascontiguousarray((p if self._rows is None else p[self._rows]).T)  # [symbols, members]
        pe, conf, sig = self.session.run(["prob", "confidence", "signal"], {"probs": probs})
        out["ensemble"] = ModelScore(symbols, np.asarray(pe, np.float64), np.asarray(conf, np.float64),
                                     np.asarray(sig, np.int8))
        return out


class _Selecting:
    """A row-wise runner fed a wider vector: take its manifest's columns first."""

    def __init__(self, inner: ModelRunner, cols: np.ndarray | None) -> None:
        self.inner, self.cols, self.manifest = inner, cols, inner.manifest

    def score(self, symbols: Sequence[str], x: np.ndarray, bar_ts: int | None = None) -> np.ndarray:
        x = np.asarray(x, np.float64)
        x = x if self.cols is None else x[:, self.cols]
        return self.inner.score(symbols, x, bar_ts=bar_ts)
