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
  :class:`inference.runners_torch_free.LstmStreamRunner` (per-symbol state).
* ``gnn``: ``model.onnx`` (inputs x [B, N, F], adj [B, N, N]; output prob) and
  ``extra = {"symbols": [...], "graph": {"return_col", "window", "threshold"}}``;
  all symbols of a bar in one call (a symbol absent from a bar gets zero features
  and a NaN return, as in training).
* ``ensemble``: ``ensemble.onnx`` (``training/export/ensemble_onnx.py``) and
  ``extra = {"members": {family: version}, "ensemble": EnsembleConfig.to_dict()}``;
  :class:`EnsembleScorer` loads exactly those member versions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from inference.manifest import Manifest, ManifestError, resolve_version_dir, verify
from inference.runners_torch_free import GnnRunner, LstmStreamRunner
from inference.scorer import (
    RUNNERS,
    ModelRunner,
    ModelScore,
    RunnerFactory,
    Scorer,
    TabularRunner,
    open_session,
)

LSTM_STEP_FILE = "step.onnx"
GNN_FILE = "model.onnx"
ENSEMBLE_FILE = "ensemble.onnx"
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_TIMEFRAME = re.compile(r"(\d+)([smhd])")
_SERVICE_TF = re.compile(r"_(\d+[smhd])_v\d+$")  # feature services are named <family>_<tf>_v<n>


def bar_ms(manifest: Manifest) -> int | None:
    """Return the model's bar length in ms from its config's ``timeframe`` or its feature service name."""
    tf = manifest.config.get("timeframe")
    if not isinstance(tf, str):
        m = _SERVICE_TF.search(manifest.feature_service)
        tf = m.group(1) if m else None
    m = _TIMEFRAME.fullmatch(tf) if tf else None
    return int(m.group(1)) * _UNIT_MS[m.group(2)] if m else None


def _columns(manifest: Manifest, feed: Sequence[str] | None) -> np.ndarray | None:
    """Return the feed positions of the manifest's features (None when ``x`` is already in manifest order)."""
    if feed is None or list(feed) == list(manifest.features):
        return None
    missing = [f for f in manifest.features if f not in feed]
    if missing:
        raise ManifestError(f"{manifest.family}/{manifest.version} needs features missing from the feed: {missing}")
    pos = {f: i for i, f in enumerate(feed)}
    return np.array([pos[f] for f in manifest.features], np.intp)


class LstmRunner:
    """Streaming LSTM from the registry: one batched step per bar, per-symbol staggered states.

    Given bar times (``bar_ts``, the bar close in ms), a symbol whose bar is not exactly
    one timeframe after its previous one (a gap, a repeat, or a step back) starts again
    from a zero state and gives NaN until it has ``window`` consecutive bars, which is
    what the windowed model trained on (windows never span missing bars).
    """

    def __init__(self, manifest: Manifest, version_dir: Path, feed: Sequence[str] | None = None) -> None:
        """Open ``step.onnx`` with the manifest's window and timeframe."""
        self.manifest = manifest
        self.cols = _columns(manifest, feed)
        self.bar_ms = bar_ms(manifest)
        self.stream = LstmStreamRunner.from_onnx((version_dir / LSTM_STEP_FILE).read_bytes(),
                                                 int(manifest.extra["window"]),
                                                 None if self.bar_ms is None else self.bar_ms * 1_000_000)

    def score(self, symbols: Sequence[str], x: np.ndarray, bar_ts: int | None = None) -> np.ndarray:
        """Advance every symbol one bar; P(up) per symbol (NaN before ``window`` consecutive bars).

        Raises:
            ManifestError: ``bar_ts`` is given but the manifest names no timeframe to check it against.
        """
        x = np.asarray(x, np.float64)
        x = x if self.cols is None else x[:, self.cols]
        if bar_ts is None:
            return self.stream.step(symbols, x)
        if self.bar_ms is None:
            raise ManifestError(f"lstm/{self.manifest.version}: no timeframe in its config or feature service "
                                f"name {self.manifest.feature_service!r}, so bar_ts gaps cannot be checked")
        return self.stream.step(symbols, x, [int(bar_ts) * 1_000_000] * len(symbols))


class GnnGraphRunner:
    """Graph attention network from the registry: all symbols of a bar at once."""

    def __init__(self, manifest: Manifest, version_dir: Path, feed: Sequence[str] | None = None) -> None:
        """Open ``model.onnx`` with the manifest's symbol order and graph settings."""
        self.manifest = manifest
        self.cols = _columns(manifest, feed)
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
        return _Selecting(TabularRunner(m, d), _columns(m, feed))

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
