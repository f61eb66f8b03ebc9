"""Scoring with onnxruntime only: registered models, batched across symbols, one call per bar.

No training library (lightgbm, torch, sklearn) is imported on this path; a test
checks ``sys.modules`` in a fresh interpreter.  Sessions are single-threaded
(``intra_op_num_threads = inter_op_num_threads = 1``, sequential execution).

A model is refused at load time unless its manifest's ordered feature list equals
the feature list of the service it will be fed (the error names the missing,
extra and reordered features), and unless its files match their hashes.

Model kinds are :class:`ModelRunner` implementations chosen by family in
:data:`RUNNERS`; :class:`TabularRunner` scores row-wise models (LightGBM).
Stateful kinds (LSTM per-symbol state, GNN over all symbols at once) plug in by
adding a runner class with the same ``from_manifest`` / ``score`` methods.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from inference.manifest import Manifest, ManifestError, resolve_version_dir, verify

_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_TIMEFRAME = re.compile(r"(\d+)([smhd])")
_SERVICE_TF = re.compile(r"_(\d+[smhd])_v\d+$")  # feature services are named <family>_<tf>_v<n>


class FeatureMismatch(ValueError):
    """A model's feature list differs from the feature service it would be fed."""


def open_session(onnx_bytes: bytes) -> ort.InferenceSession:
    """Open a single-threaded, sequential CPU onnxruntime session."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])


def bar_ms(manifest: Manifest) -> int | None:
    """Return the model's bar length in ms from its config's ``timeframe`` or its feature service name."""
    tf = manifest.config.get("timeframe")
    if not isinstance(tf, str):
        m = _SERVICE_TF.search(manifest.feature_service)
        tf = m.group(1) if m else None
    m = _TIMEFRAME.fullmatch(tf) if tf else None
    return int(m.group(1)) * _UNIT_MS[m.group(2)] if m else None


def feed_columns(manifest: Manifest, feed: Sequence[str] | None) -> np.ndarray | None:
    """Return the feed positions of the manifest's features (None when ``x`` is already in manifest order)."""
    if feed is None or list(feed) == list(manifest.features):
        return None
    missing = [f for f in manifest.features if f not in feed]
    if missing:
        raise ManifestError(f"{manifest.family}/{manifest.version} needs features missing from the feed: {missing}")
    pos = {f: i for i, f in enumerate(feed)}
    return np.array([pos[f] for f in manifest.features], np.intp)


def check_features(manifest: Manifest, service_features: Sequence[str]) -> None:
    """Raise :class:`FeatureMismatch` naming the difference unless the lists are equal in order."""
    model, service = list(manifest.features), list(service_features)
    if model == service:
        return
    missing = [f for f in model if f not in service]  # the model needs them, the service lacks them
    extra = [f for f in service if f not in model]
    common_m = [f for f in model if f in service]
    common_s = [f for f in service if f in model]
    moved = [f"{f} (model #{common_m.index(f)}, service #{common_s.index(f)})"
             for f in common_m if common_m.index(f) != common_s.index(f)]
    raise FeatureMismatch(
        f"{manifest.family}/{manifest.version} was trained on {manifest.feature_service!r} and does not "
        f"match the features it would be fed: missing from service {missing}, extra in service {extra}, "
        f"reordered {moved}")


class ModelRunner(Protocol):
    """One registered model ready to score a bar for several symbols."""

    manifest: Manifest

    def score(self, symbols: Sequence[str], x: np.ndarray, bar_ts: int | None = None) -> np.ndarray:
        """Return P(up) per symbol (NaN when not available yet) for raw features ``[len(symbols), F]``.

        ``bar_ts`` is the bar's close in epoch ms; stateful runners use it to notice gaps.
        """
        ...


class TabularRunner:
    """Row-wise model (LightGBM): one session run for every symbol of a bar."""

    def __init__(self, manifest: Manifest, version_dir: Path) -> None:
        """Open the manifest's ONNX graph (the first ``*.onnx`` file)."""
        self.manifest = manifest
        name = next(n for n in manifest.files if n.endswith(".onnx"))
        self.session = open_session((version_dir / name).read_bytes())
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.dtype = np.float64 if inp.type == "tensor(double)" else np.float32
        self.output_name = manifest.outputs[0].name

    @classmethod
    def from_manifest(cls, manifest: Manifest, version_dir: Path) -> TabularRunner:
        """Build the runner for a verified manifest."""
        return cls(manifest, version_dir)

    def score(self, symbols: Sequence[str], x: np.ndarray, bar_ts: int | None = None) -> np.ndarray:
        """Return P(up) per row of ``x`` (row-wise: ``bar_ts`` does not matter)."""
        out = self.session.run([self.output_name], {self.input_name: np.asarray(x, self.dtype)})[0]
        return np.asarray(out, np.float64).reshape(len(symbols), -1)[:, -1]


RunnerFactory = Callable[[Manifest, Path], ModelRunner]
RUNNERS: dict[str, RunnerFactory] = {"lightgbm": TabularRunner.from_manifest}


@dataclass(frozen=True)
class ModelScore:
    """One model's output for the symbols of a bar: P(up), confidence |p - 0.5| * 2, signal."""

    symbols: tuple[str, ...]
    probability: np.ndarray
    confidence: np.ndarray
    signal: np.ndarray  # -1 no signal (confidence below threshold or NaN), 0 bearish, 1 bullish


def check_bar_ts(bar_ts: object) -> int | None:
    """Return ``bar_ts`` as an int (epoch ms of the bar close), or None.

    Raises:
        TypeError: it is not an integer (a float or a datetime is refused rather than guessed at).
    """
    if bar_ts is None:
        return None
    if isinstance(bar_ts, (bool, np.bool_)) or not isinstance(bar_ts, (int, np.integer)):
        raise TypeError(f"bar_ts must be the bar close in integer epoch milliseconds, got {bar_ts!r} "
                        f"({type(bar_ts).__name__})")
    return int(bar_ts)


def to_signal(p: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Return (confidence, signal) for probabilities; ``threshold`` is the minimum confidence."""
    conf = p - 0.5
    np.abs(conf, out=conf)
    conf *= 2.0
    sig = (p > 0.5).astype(np.int8)
    sig[~(conf >= threshold)] = -1  # NaN confidence -> no signal
    return conf, sig


class Scorer:
    """Registered models, each checked against its feature service, scored per bar."""

    def __init__(self, runners: Mapping[str, ModelRunner], confidence_threshold: float = 0.1) -> None:
        """Use already built runners keyed by family."""
        self.runners = dict(runners)
        self.confidence_threshold = confidence_threshold

    @classmethod
    def from_registry(cls, root: str | Path, families: Sequence[str],
                      feature_service_features: Mapping[str, Sequence[str]],
                      versions: Mapping[str, str] | None = None, confidence_threshold: float = 0.1,
                      runners: Mapping[str, RunnerFactory] | None = None) -> Scorer:
        """Load, verify and check each family's manifest, then open its sessions.

        Args:
            root: registry root.
            families: model families to load (``latest`` unless ``versions`` says otherwise).
            feature_service_features: ordered feature list of every feature service that can be fed.
            versions: optional family -> version.
            confidence_threshold: minimum confidence for a signal.
            runners: family -> runner factory (defaults to :data:`RUNNERS`).

        Raises:
            FeatureMismatch: a model's features differ from its service's (or the service is unknown).
            inference.manifest.ManifestError: a manifest is missing or its files fail their hashes.
        """
        kinds = {**RUNNERS, **(runners or {})}
        built: dict[str, ModelRunner] = {}
        for fam in families:
            d = resolve_version_dir(root, fam, (versions or {}).get(fam, "latest"))
            m = verify(d)
            if m.feature_service not in feature_service_features:
                raise FeatureMismatch(f"{fam}/{m.version} needs feature service {m.feature_service!r}, "
                                      f"which is not among {sorted(feature_service_features)}")
            check_features(m, feature_service_features[m.feature_service])
            if fam not in kinds:
                raise KeyError(f"no runner for model family {fam!r}; known: {sorted(kinds)}")
            built[fam] = kinds[fam](m, d)
        return cls(built, confidence_threshold)

    def score(self, rows: Mapping[str, np.ndarray], bar_ts: int | None = None) -> dict[str, ModelScore]:
        """Score one bar: ``rows`` maps symbol -> raw feature vector in the service's order.

        Every model runs once for all symbols (one batched session run for row-wise models).

        Args:
            rows: symbol -> feature vector of this bar.
            bar_ts: the bar's close time in epoch milliseconds (optional).  With it, the
                streaming LSTM starts a symbol afresh when that symbol's bars are not
                consecutive (a gap of more than one timeframe, a repeat, or a step back),
                as training never lets a window span missing bars.  Without it, bars are
                taken to be consecutive.

        Raises:
            TypeError: ``bar_ts`` is not an integer.
        """
        symbols, p = self.probabilities(rows, bar_ts)
        return self.model_scores(symbols, p)

    def probabilities(self, rows: Mapping[str, np.ndarray], bar_ts: int | None = None
                      ) -> tuple[tuple[str, ...], np.ndarray]:
        """Run every model once on one bar: the symbols and P(up) ``[models, symbols]`` in runner order.

        Arguments and errors as :meth:`score`.
        """
        bar_ts = check_bar_ts(bar_ts)
        symbols = tuple(rows)
        n = len(symbols)
        x = np.array([rows[s] for s in symbols], np.float64) if n else np.empty((0, 0))
        p = np.empty((len(self.runners), n))
        for i, runner in enumerate(self.runners.values()):
            p[i] = runner.score(symbols, x, bar_ts=bar_ts).reshape(n)
        return symbols, p

    def model_scores(self, symbols: tuple[str, ...], p: np.ndarray) -> dict[str, ModelScore]:
        """Return each model's :class:`ModelScore` for :meth:`probabilities`' output (one signal pass for all)."""
        conf, sig = to_signal(p, self.confidence_threshold)
        return {fam: ModelScore(symbols, p[i], conf[i], sig[i]) for i, fam in enumerate(self.runners)}
