"""Drift of the deployed models: features against their training window, P(up) against what happened.

- Feature drift: per symbol and feature of the model family's feature list (the ``bar_features``
  columns), the population stability index between the training window (the *reference*: quantile
  bins and their shares, saved beside the registry version as ``drift_reference.json``, built from
  the offline store over the manifest's training window) and the newest ``live_bars`` stored rows.
  ``PSI = sum((live - ref) * ln(live / ref))`` over the bins, shares floored at 1e-4.
- Calibration drift: the ensemble's stored P(up) against the realised label of its horizon
  (``training.datasets.attach_labels``, the label it was trained on): the expected calibration
  error over ``calibration_bins`` equal-width bins, the Brier score, and the reliability table.

The measures here are pure functions of arrays and frames; :mod:`training.drift` reads the
stores, publishes, alerts and triggers a retrain.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flows.feature_catalog import BAR_FEATURES
from flows.timeframes import timeframe_ms
from training.datasets import attach_labels

REFERENCE_FILE = "drift_reference.json"
EPS = 1e-4
_SERVICE_TF = re.compile(r"_(\d+[smhd])_v\d+$")


def quantile_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Return the interior edges of ``bins`` quantile bins of the finite ``values`` (duplicates merged)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return np.array([], dtype=float)
    return np.unique(np.quantile(v, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


def shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Return the share of the finite ``values`` in each of the ``len(edges) + 1`` bins."""
    v = values[np.isfinite(values)]
    counts = np.bincount(np.searchsorted(edges, v, side="right"), minlength=len(edges) + 1)
    return counts / max(v.size, 1)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Return the population stability index of ``actual`` shares against ``expected`` shares."""
    e, a = np.maximum(expected, EPS), np.maximum(actual, EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def timeframe_of(feature_service: str, default: str) -> str:
    """Return the timeframe a feature service is named for (``lightgbm_1h_v1`` -> ``1h``)."""
    m = _SERVICE_TF.search(feature_service)
    return m.group(1) if m else default


def drift_features(features: Sequence[str]) -> list[str]:
    """Return the features of a model that drift is measured on: its ``bar_features`` columns."""
    return [f for f in features if f in BAR_FEATURES]


def build_reference(frame: pd.DataFrame, features: Sequence[str], bins: int, min_rows: int,
                    meta: dict[str, Any]) -> dict[str, Any]:
    """Return the reference of the training rows ``frame`` (symbol + feature columns): bins and shares."""
    symbols: dict[str, Any] = {}
    for symbol, g in frame.groupby("symbol", sort=True):
        if len(g) < min_rows:
            continue
        per: dict[str, Any] = {}
        for f in features:
            values = g[f].to_numpy(dtype=float)
            edges = quantile_edges(values, bins)
            per[f] = {"edges": edges.tolist(), "p": shares(values, edges).tolist(),
                      "n": int(np.isfinite(values).sum())}
        symbols[str(symbol)] = per
    return {**meta, "bins": bins, "features": list(features), "symbols": symbols}


def feature_drift(reference: dict[str, Any], live: pd.DataFrame, min_rows: int) -> pd.DataFrame:
    """Return ``symbol, feature, psi, rows`` of the live rows against the reference (symbols in both)."""
    out = []
    for symbol, g in live.groupby("symbol", sort=True):
        ref = reference["symbols"].get(str(symbol))
        if ref is None or len(g) < min_rows:
            continue
        for f, r in ref.items():
            values = g[f].to_numpy(dtype=float)
            live_shares = shares(values, np.asarray(r["edges"], dtype=float))
            out.append((str(symbol), f, psi(np.asarray(r["p"]), live_shares), int(np.isfinite(values).sum())))
    return pd.DataFrame(out, columns=["symbol", "feature", "psi", "rows"])


@dataclass(frozen=True)
class Calibration:
    """Reliability of P(up) on settled predictions."""

    rows: int
    ece: float
    brier: float
    mean_prob: float
    up_rate: float
    table: list[dict[str, float]] = field(default_factory=list)  # per bin: lo, hi, rows, mean_prob, up_rate


def calibration(prob: np.ndarray, outcome: np.ndarray, bins: int) -> Calibration:
    """Return the expected calibration error, Brier score and reliability table of ``prob`` against 0/1 ``outcome``."""
    p, y = np.asarray(prob, dtype=float), np.asarray(outcome, dtype=float)
    if p.size == 0:
        return Calibration(0, float("nan"), float("nan"), float("nan"), float("nan"))
    which = np.minimum((p * bins).astype(int), bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        m = which == b
        if not m.any():
            continue
        mp, rate = float(p[m].mean()), float(y[m].mean())
        ece += m.sum() / p.size * abs(mp - rate)
        table.append({"lo": b / bins, "hi": (b + 1) / bins, "rows": int(m.sum()), "mean_prob": mp, "up_rate": rate})
    return Calibration(int(p.size), float(ece), float(np.mean((p - y) ** 2)), float(p.mean()), float(y.mean()), table)


def settled(predictions: pd.DataFrame, bars: pd.DataFrame, timeframe: str, horizon: int) -> pd.DataFrame:
    """Return the predictions (``symbol, ts, prob_up``) whose label horizon has passed, with their ``label``."""
    if predictions.empty or bars.empty:
        return predictions.assign(label=pd.Series(dtype="int64")).iloc[0:0]
    labels = attach_labels(bars, timeframe, horizon).rename(columns={"event_timestamp": "ts"})
    preds = predictions.assign(ts=pd.to_datetime(predictions["ts"], utc=True))
    labels["ts"] = pd.to_datetime(labels["ts"], utc=True)
    out = preds.merge(labels[["symbol", "ts", "label"]], on=["symbol", "ts"], how="inner")
    return out[np.isfinite(out["prob_up"].astype(float))].sort_values(["ts", "symbol"], kind="stable")


def bar_span(predictions: pd.DataFrame, timeframe: str, horizon: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Return the open-time range of the bars that settle ``predictions`` (decision times)."""
    tf = pd.Timedelta(milliseconds=timeframe_ms(timeframe))
    ts = pd.to_datetime(predictions["ts"], utc=True)
    return ts.min(), ts.max() + horizon * tf


def save_json(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` as JSON atomically (aside, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)
