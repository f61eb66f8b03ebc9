"""Ensemble of per-model probabilities: fixed, performance-based or confidence-weighted.

Input is ``p [N, M]``: P(up) of M member models for N rows (symbols of a bar, or
rows of a frame).  Every method starts from non-negative base weights ``w [M]``
normalised to sum 1 (all zero is refused: there would be no ensemble).

* ``fixed``: ``w`` as given.
* ``performance``: ``w`` from walk-forward mean metrics of each member
  (:func:`performance_weights`): proportional to ``max(AUC - 0.5, 0)`` (metric
  ``roc_auc``, the edge over a coin flip) or to ``max(Sharpe, 0)`` (metric
  ``sharpe``).  A member with no edge gets weight 0; all without edge is an error.
* ``confidence``: per row, member j gets ``w_j * |p_ij - 0.5| * 2``, renormalised
  over the row, so a member that is sure of itself on this row counts more.  When
  every weighted confidence of a row is 0 (all members at exactly 0.5) the row
  falls back to the base weights.

Missing members (NaN, e.g. an LSTM before its first full window) are left out of a
row and the remaining weights renormalised; a row with no usable member is NaN.
The ONNX export (``training/export/ensemble_onnx.py``) computes exactly this.

:func:`predict_with_threshold` turns probabilities into signals: -1 no signal
(confidence ``|p - 0.5| * 2`` below the threshold, or NaN), 0 bearish, 1 bullish.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Method = Literal["fixed", "performance", "confidence"]
METHODS = ("fixed", "performance", "confidence")


def normalise(weights: Sequence[float] | np.ndarray) -> np.ndarray:
    """Return weights scaled to sum 1.

    Raises:
        ValueError: a weight is negative or not finite, or all are zero.
    """
    w = np.asarray(weights, np.float64)
    if w.ndim != 1 or len(w) == 0:
        raise ValueError("weights must be a non-empty 1-d sequence")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"weights must be finite and non-negative, got {w.tolist()}")
    total = w.sum()
    if total <= 0:
        raise ValueError("all ensemble weights are zero: no member would count")
    return w / total


def performance_weights(means: Mapping[str, Mapping[str, float]], members: Sequence[str],
                        metric: Literal["roc_auc", "sharpe"] = "roc_auc") -> np.ndarray:
    """Return normalised weights from walk-forward mean metrics (see module docstring).

    Args:
        means: member name -> its walk-forward mean metrics (``manifest.metrics["mean"]``).
        members: member order of the ensemble.
        metric: ``roc_auc`` (weight ``max(AUC - 0.5, 0)``) or ``sharpe`` (weight ``max(Sharpe, 0)``).

    Raises:
        ValueError: a member lacks the metric, or no member has an edge.
    """
    if metric not in ("roc_auc", "sharpe"):
        raise ValueError(f"metric must be roc_auc or sharpe, not {metric!r}")
    raw = []
    for m in members:
        if m not in means or metric not in means[m]:
            raise ValueError(f"member {m!r} has no walk-forward mean {metric!r}")
        v = float(means[m][metric])
        edge = v - 0.5 if metric == "roc_auc" else v
        raw.append(max(edge, 0.0) if np.isfinite(edge) else 0.0)
    try:
        return normalise(raw)
    except ValueError as exc:
        raise ValueError(f"no member has a positive {metric} edge ({dict(zip(members, raw, strict=True))}): "
                         "use fixed weights instead") from exc


@dataclass(frozen=True)
class EnsembleConfig:
    """Members (column order of ``p``), method, base weights (normalised) and signal threshold."""

    members: tuple[str, ...]
    weights: tuple[float, ...]
    method: Method = "fixed"
    threshold: float = 0.1
    source: dict[str, Any] = field(default_factory=dict)  # where the weights came from (metric, means)
    calibration: tuple[float, float] = (1.0, 0.0)  # Platt map on the logit: slope, intercept ((1, 0): none)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {self.method!r}")
        if len(self.members) != len(self.weights):
            raise ValueError(f"{len(self.members)} members but {len(self.weights)} weights")
        if len(set(self.members)) != len(self.members):
            raise ValueError(f"duplicate members {self.members}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError("threshold must be in [0, 1]")
        object.__setattr__(self, "members", tuple(self.members))
        object.__setattr__(self, "weights", tuple(float(v) for v in normalise(self.weights)))
        object.__setattr__(self, "calibration", (float(self.calibration[0]), float(self.calibration[1])))

    def to_dict(self) -> dict[str, Any]:
        """Return plain JSON-able data."""
        return {"members": list(self.members), "weights": list(self.weights), "method": self.method,
                "threshold": self.threshold, "source": dict(self.source), "calibration": list(self.calibration)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EnsembleConfig:
        """Inverse of :meth:`to_dict`."""
        a, b = d.get("calibration", (1.0, 0.0))  # registries from before calibration: none
        return cls(tuple(d["members"]), tuple(d["weights"]), d["method"], float(d["threshold"]),
                   dict(d.get("source", {})), (float(a), float(b)))


EPS = 1e-6  # probabilities are clipped to [EPS, 1 - EPS] before the logit


def calibrate(p: np.ndarray, calibration: tuple[float, float]) -> np.ndarray:
    """Return ``sigmoid(a * logit(p) + b)`` (Platt's map); the identity for ``(1, 0)``; NaN stays NaN."""
    p = np.asarray(p, np.float64)
    a, b = calibration
    if (a, b) == (1.0, 0.0):
        return p
    q = np.clip(p, EPS, 1.0 - EPS)
    with np.errstate(invalid="ignore"):
        return 1.0 / (1.0 + np.exp(-(a * np.log(q / (1.0 - q)) + b)))


def fit_platt(p: np.ndarray, y: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """Fit Platt's map ``P(y=1) = sigmoid(a * logit(p) + b)`` by Newton's method on the log loss.

    Two parameters and a monotone map: with ~10^5 rows of a weak signal it cannot overfit
    the way an isotonic step function can, and it keeps the ranking (AUC) unchanged.
    """
    ok = np.isfinite(p)
    q = np.clip(np.asarray(p, np.float64)[ok], EPS, 1.0 - EPS)
    x = np.log(q / (1.0 - q))
    t = np.asarray(y, np.float64)[ok]
    w = np.array([1.0, 0.0])
    for _ in range(iterations):
        z = w[0] * x + w[1]
        s = 1.0 / (1.0 + np.exp(-z))
        g = np.array([((s - t) * x).sum(), (s - t).sum()])
        h = s * (1.0 - s)
        hess = np.array([[(h * x * x).sum(), (h * x).sum()], [(h * x).sum(), h.sum()]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, g)
        w = w - step
        if np.abs(step).max() < 1e-10:
            break
    return float(w[0]), float(w[1])


def confidence(p: np.ndarray) -> np.ndarray:
    """Return ``|p - 0.5| * 2``."""
    return np.abs(np.asarray(p, np.float64) - 0.5) * 2.0


def predict_with_threshold(p: np.ndarray, threshold: float) -> np.ndarray:
    """Return signals: -1 no signal (confidence below ``threshold`` or NaN), 0 bearish, 1 bullish."""
    p = np.asarray(p, np.float64)
    sig = np.where(p > 0.5, 1, 0).astype(np.int64)
    sig[~(confidence(p) >= threshold)] = -1
    return sig


class Ensemble:
    """Combine member probabilities with the config's method (see module docstring)."""

    def __init__(self, config: EnsembleConfig) -> None:
        """Use a validated config."""
        self.config = config
        self.weights = np.asarray(config.weights, np.float64)

    def predict_proba(self, p: np.ndarray) -> np.ndarray:
        """Return the calibrated ensemble P(up) ``[N]`` (:func:`calibrate` of :meth:`predict_raw`)."""
        return calibrate(self.predict_raw(p), self.config.calibration)

    def predict_raw(self, p: np.ndarray) -> np.ndarray:
        """Return ensemble P(up) ``[N]`` for member probabilities ``[N, M]`` (NaN where no member is usable)."""
        p = np.asarray(p, np.float64)
        if p.ndim != 2 or p.shape[1] != len(self.weights):
            raise ValueError(f"expected probabilities [N, {len(self.weights)}], got shape {p.shape}")
        ok = np.isfinite(p)
        pz = np.where(ok, p, 0.0)
        base = self.weights[None, :] * ok
        w = base * confidence(pz) if self.config.method == "confidence" else base
        s = w.sum(axis=1, keepdims=True)
        w = np.where(s > 0, w, base)  # all members at exactly 0.5: fall back to the base weights
        s = w.sum(axis=1)
        num = (w * pz).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(s > 0, num / np.where(s > 0, s, 1.0), np.nan)

    def predict(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (calibrated probability, confidence, signal) for member probabilities ``[N, M]``."""
        prob = self.predict_proba(p)
        return prob, confidence(prob), predict_with_threshold(prob, self.config.threshold)
