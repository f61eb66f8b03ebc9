"""The ensemble's calibrated probability as an input of the tactical policy, point in time.

In the stream the policy sees, beside its market features, the ``prob`` output of the
registered ``ensemble.onnx`` for the same symbol and bar (``flows.operators.scoring``).
In training it must see the same quantity as it would have been known then, so the
rows come from the ensemble's *out-of-sample* predictions, never from a model fitted
on them:

* the members' predictions are their walk-forward fold predictions (``oos.csv`` of the
  member versions the ensemble records), each made by a model trained before its fold;
* what the ensemble itself fits on those rows, its performance weights (walk-forward mean
  AUC or Sharpe of the members) and its Platt calibration map, is refitted for fold ``k``
  on the folds before ``k`` only (expanding), so no row's probability uses its own label
  or a later one.  Fold 0 has no earlier fold and is left out (never filled);
* fixed weights and an uncalibrated ensemble fit nothing: then the probability is exactly
  ``ensemble.onnx``'s (``tests/unit/training/rl/test_signal.py``).

:func:`with_signal` attaches the probabilities to a :class:`MarketData` by decision time
(row ``t``'s probability is the one scored at the close of bar ``t``, as the flow's
prediction of that bar), keeping only the rows where every symbol has one.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.rl.data import MarketData

SIGNAL = "ensemble_prob"  # the observation column's name (manifest ``extra.observation``)


def _member_oos(root: Path, family: str, version: str) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    from training.registry import load_manifest

    m = load_manifest(root, family, version)
    df = pd.read_csv(root / family / m.version / "oos.csv")
    df["event_timestamp"] = pd.to_datetime(df["event_timestamp"], utc=True)
    return df, list(m.metrics.get("folds", []))


def ensemble_oos_probability(registry: str | Path, version: str = "latest", timeframe: str | None = None
                             ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Return the ensemble's point-in-time probability on its members' out-of-sample rows, and its provenance.

    ``timeframe``: the bars the policy is trained on; an ensemble of another timeframe is refused.

    Returns:
        A frame ``symbol, event_timestamp (UTC), fold, prob`` in time order (folds >= 1), and a record
        of the ensemble version, its members' versions and how each fold's weights and map were fitted.

    Raises:
        ValueError: the members' out-of-sample folds do not line up, or fewer than two folds.
    """
    from training.metrics import mean_metrics
    from training.models.ensemble import (
        Ensemble,
        EnsembleConfig,
        calibrate,
        fit_platt,
        performance_weights,
    )
    from training.registry import load_manifest

    root = Path(registry)
    man = load_manifest(root, "ensemble", version, timeframe=timeframe)
    cfg = EnsembleConfig.from_dict(man.extra["ensemble"])
    members, versions = cfg.members, {k: str(v) for k, v in man.extra["members"].items()}
    joined: pd.DataFrame | None = None
    folds: dict[str, list[dict[str, Any]]] = {}
    for fam in members:
        o, folds[fam] = _member_oos(root, fam, versions[fam])
        o = o[["symbol", "event_timestamp", "fold", "label", "p"]].rename(columns={"p": fam})
        joined = o if joined is None else joined.merge(o, on=["symbol", "event_timestamp", "fold", "label"],
                                                       how="outer")
    assert joined is not None  # an EnsembleConfig has at least one member
    if joined.duplicated(["symbol", "event_timestamp"]).any():
        raise ValueError(f"ensemble {man.version}: its members' out-of-sample folds differ (trained on other "
                         "ranges or --folds): one row falls in two folds")
    joined = joined.sort_values(["event_timestamp", "symbol"]).reset_index(drop=True)
    probs = joined[list(members)].to_numpy(np.float64)
    label = joined["label"].to_numpy(np.float64)
    fold = joined["fold"].to_numpy()
    calibrated = cfg.calibration != (1.0, 0.0)
    metric = str(cfg.source.get("metric", "roc_auc"))
    out = np.full(len(joined), np.nan)
    fits: list[dict[str, Any]] = []
    ks = sorted(int(k) for k in np.unique(fold))
    if len(ks) < 2:
        raise ValueError(f"ensemble {man.version}: {len(ks)} out-of-sample fold(s); point in time needs two or more")
    for k in ks[1:]:
        weights: tuple[float, ...] = cfg.weights
        if cfg.method == "performance":  # the weights from the folds before k only
            means = {m: mean_metrics([{n: v for n, v in f.items() if isinstance(v, float)}
                                      for f in folds[m] if int(f["fold"]) < k]) for m in members}
            try:
                weights = tuple(performance_weights(means, members, metric))  # type: ignore[arg-type]
            except ValueError:
                fits.append({"fold": k, "note": "no member had an edge on the earlier folds: rows left out"})
                continue
        ens = Ensemble(replace(cfg, weights=weights, calibration=(1.0, 0.0)))
        raw = ens.predict_raw(probs)
        before, here = fold < k, fold == k
        cal = (1.0, 0.0)
        if calibrated:
            ok = before & np.isfinite(raw)
            cal = fit_platt(raw[ok], label[ok])
        out[here] = calibrate(raw[here], cal)
        fits.append({"fold": k, "weights": list(weights), "calibration": list(cal)})
    frame = joined.loc[:, ["symbol", "event_timestamp", "fold"]].assign(prob=out)
    frame = frame[np.isfinite(frame["prob"])].reset_index(drop=True)
    record = {"signal": SIGNAL, "ensemble": man.version, "members": versions, "method": cfg.method,
              "calibrated": calibrated, "point_in_time": "weights and calibration refitted per fold on the "
              "earlier folds; fold 0 left out", "folds": fits}
    return frame, record


def with_signal(md: MarketData, probs: pd.DataFrame, source: dict[str, Any] | None = None) -> MarketData:
    """Return ``md`` with ``signal[t, a]`` = the probability of symbol ``a`` at decision time ``t``.

    ``probs`` has ``symbol, event_timestamp, prob`` (event time = the decision time, the bar's
    close).  Rows where some symbol has no probability are dropped, never filled.  ``source``
    (the record of :func:`ensemble_oos_probability`) is kept as ``signal_source``.

    Raises:
        ValueError: no row of ``md`` has a probability for every symbol.
    """
    ts = pd.to_datetime(probs["event_timestamp"], utc=True).dt.as_unit("ns").astype("int64")
    wide = pd.DataFrame({"t": ts.to_numpy(), "symbol": probs["symbol"].to_numpy(),
                         "prob": probs["prob"].to_numpy(np.float64)}).pivot(index="t", columns="symbol", values="prob")
    sig = wide.reindex(index=md.decision_times, columns=list(md.symbols)).to_numpy(np.float64)
    rows = np.flatnonzero(np.isfinite(sig).all(axis=1))
    if len(rows) == 0:
        raise ValueError(f"no bar of {list(md.symbols)} {md.timeframe} has an ensemble probability for every "
                         "symbol (is the ensemble trained on these symbols and this range?)")
    out = md.take(rows)
    return replace(out, signal=sig[rows].astype(np.float32), signal_source=source)
