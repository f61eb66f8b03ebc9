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

* ``lstm``: ``step.onnx`` (inputs x, h, c; outputs prob, h_out, c_out) and
  ``extra = {"window": int, ...}``; scored by
  :class:`inference.lstm_stream.LstmStreamRunner` (per-symbol state).
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
from dataclasses import dataclass
from pathlib import Path

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


class GnnGraphRunner:
    """Graph attention network from the registry: all symbols of a bar at once."""

    def __init__(self, manifest: Manifest, version_dir: Path, feed: Sequence[str] | None = None) -> None:
        """Open ``model.onnx`` with the manifest's symbol order and graph settings."""
        self.manifest = manifest
        self.cols = feed_columns(manifest, feed)
        graph = manifest.extra["graph"]
        self.symbols = tuple(manifest.extra["symbols"])
        ret_col = graph["return_col"]
        if ret_col not in manifest.features:
            raise ManifestError(f"gnn/{manifest.version}: return column {ret_col!r} is not among its features")
        self.ret_idx = list(manifest.features).index(ret_col)
        self.runner = GnnRunner((version_dir / GNN_FILE).read_bytes(), self.symbols, int(graph["window"]),
                                float(graph["threshold"]))

    def score(self, symbols: Sequence[str], x: np.ndarray, bar_ts: int | None = None) -> np.ndarray:
        """Push one bar of the model's assets; P(up) per given symbol (NaN for an unknown one).

        ``bar_ts`` is accepted and not used: the GAT was trained on consecutive stored bar
        times whatever their spacing, and its return window does the same.
        """
        x = np.asarray(x, np.float64)
        x = x if self.cols is None else x[:, self.cols]
        nodes = np.zeros((len(self.symbols), x.shape[1]))
        rets = np.full(len(self.symbols), np.nan)
        index = {s: i for i, s in enumerate(self.symbols)}
        for row, s in enumerate(symbols):
            if s in index:
                nodes[index[s]] = x[row]
                rets[index[s]] = x[row, self.ret_idx]
        p = self.runner.score(nodes, rets)
        return np.array([p[index[s]] if s in index else np.nan for s in symbols], np.float64)


def runner_factories(feed: Sequence[str] | None = None) -> dict[str, RunnerFactory]:
    """Return factories for ``lightgbm``, ``lstm`` and ``gnn`` taking their features by name from ``feed``."""
    def lightgbm(m: Manifest, d: Path) -> ModelRunner:
        return _Selecting(TabularRunner(m, d), feed_columns(m, feed))

    def lstm(m: Manifest, d: Path) -> ModelRunner:
        return LstmRunner(m, d, feed)

    def gnn(m: Manifest, d: Path) -> ModelRunner:
        return GnnGraphRunner(m, d, feed)

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

    @classmethod
    def from_registry(cls, root: str | Path, feature_service_features: Mapping[str, Sequence[str]],
                      feed: Sequence[str] | None = None, version: str = "latest") -> EnsembleScorer:
        """Load the ensemble manifest, then its members (through the scorer) at the recorded versions.

        Args:
            root: registry root.
            feature_service_features: ordered feature list of every feature service that can be fed.
            feed: order of the per-symbol vectors given to :meth:`score` (default: members share one order).
            version: ensemble version (``latest`` by default).
        """
        d = resolve_version_dir(root, "ensemble", version)
        m = verify(d)
        cfg = m.extra["ensemble"]
        members = tuple(cfg["members"])
        versions = {fam: str(v) for fam, v in m.extra["members"].items()}
        scorer = Scorer.from_registry(root, members, feature_service_features, versions=versions,
                                      confidence_threshold=float(cfg["threshold"]),
                                      runners=runner_factories(feed))
        return cls(scorer, m, members, open_session((d / ENSEMBLE_FILE).read_bytes()))

    def score(self, rows: Mapping[str, np.ndarray], bar_ts: int | None = None) -> dict[str, ModelScore]:
        """Score one bar: every member's :class:`ModelScore` and ``"ensemble"`` from the ensemble graph.

        ``bar_ts`` (bar close, epoch ms) lets the streaming LSTM reset a symbol after a gap;
        see :meth:`inference.scorer.Scorer.score`.
        """
        out = self.scorer.score(rows, bar_ts=bar_ts)
        symbols = tuple(rows)
        probs = np.stack([out[f].probability for f in self.members], axis=1) if symbols else np.empty(
            (0, len(self.members)))
        p, conf, sig = self.session.run(["prob", "confidence", "signal"], {"probs": probs.astype(np.float64)})
        out["ensemble"] = ModelScore(symbols, np.asarray(p, np.float64), np.asarray(conf, np.float64),
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
