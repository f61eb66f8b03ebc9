"""Calibration report of a registered ensemble: ``python -m training.calibration_report``.

Usage::

    python -m training.calibration_report --registry DIR [--registry DIR2 ...] [--out training/reports/calibration]

For each registry's ensemble: its members' out-of-sample predictions (the purged
walk-forward's ``oos.csv``), the raw weighted probability, Platt's map fitted on the first
70 % of those rows in time (as ``training.train ensemble`` checks it) and applied to the
last 30 %; on those last rows, a reliability table (10 bins: rows, mean predicted, observed
frequency) raw and calibrated, the Brier score, the log loss and the expected calibration
error (ECE: the rows-weighted mean gap between predicted and observed).  Writes
``REPORT.md`` and ``reliability.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from flows.settings import SettingsError
from training.models.ensemble import Ensemble, EnsembleConfig, calibrate, fit_platt
from training.plots import _pyplot, _save
from training.registry import load_manifest
from training.train import joined_oos

FIT_SHARE = 0.7


def reliability(p: np.ndarray, y: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Return rows, mean predicted and observed frequency per probability bin (equal width on [0, 1])."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    k = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    df = pd.DataFrame({"bin": k, "p": p, "y": y}).groupby("bin").agg(rows=("p", "size"), predicted=("p", "mean"),
                                                                     observed=("y", "mean"))
    df.index = [f"{edges[i]:.1f}-{edges[i + 1]:.1f}" for i in df.index]
    return df


def scores(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Return the Brier score, the log loss and the ECE of ``p``."""
    q = np.clip(p, 1e-12, 1 - 1e-12)
    rel = reliability(p, y)
    ece = float((rel["rows"] * (rel["predicted"] - rel["observed"]).abs()).sum() / rel["rows"].sum())
    return {"brier": float(np.mean((p - y) ** 2)),
            "logloss": float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))), "ece": ece}


def study(registry: Path) -> tuple[str, dict[str, float], pd.DataFrame, pd.DataFrame]:
    """Return (label, scores raw/calibrated, reliability raw, reliability calibrated) of one registry's ensemble."""
    ens_m = load_manifest(registry, "ensemble")
    cfg = EnsembleConfig.from_dict(ens_m.extra["ensemble"])
    members = cfg.members
    mans = {m: load_manifest(registry, m, ens_m.extra["members"][m]) for m in members}
    joined = joined_oos(registry, mans, members)
    raw = Ensemble(EnsembleConfig(members, cfg.weights, cfg.method, cfg.threshold)).predict_raw(
        joined[list(members)].to_numpy(np.float64))
    y = joined["label"].to_numpy(np.float64)
    ok = np.isfinite(raw)
    raw, y = raw[ok], y[ok]
    cut = int(len(raw) * FIT_SHARE)
    cal = calibrate(raw[cut:], fit_platt(raw[:cut], y[:cut]))
    horizon = int(ens_m.extra.get("horizon", mans[members[0]].config.get("horizon", 1)))
    label = (f"horizon {horizon} ({ens_m.version}; oos rows {pd.Timestamp(joined['event_timestamp'].iloc[0]):%Y-%m-%d}"
             f"..{pd.Timestamp(joined['event_timestamp'].iloc[-1]):%Y-%m-%d}, scored {len(raw) - cut})")
    figures = {f"{k}_raw": v for k, v in scores(raw[cut:], y[cut:]).items()}
    figures |= {f"{k}_calibrated": v for k, v in scores(cal, y[cut:]).items()}
    figures["base_rate"] = float(y[cut:].mean())
    return label, figures, reliability(raw[cut:], y[cut:]), reliability(cal, y[cut:])


def main(argv: Sequence[str] | None = None) -> int:
    """Write the report for every ``--registry``; return 0, or 2 on an error."""
    p = argparse.ArgumentParser(prog="python -m training.calibration_report", description=__doc__.split("\n\n")[0])
    p.add_argument("--registry", type=Path, action="append", required=True, help="registry holding an ensemble")
    p.add_argument("--out", type=Path, default=Path("training/reports/calibration"))
    p.add_argument("--command", default="", help="the command line to record in the report")
    a = p.parse_args(argv)
    try:
        results = [study(r) for r in a.registry]
    except (SettingsError, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3.6), dpi=80, squeeze=False)
    lines = ["# Calibration of the ensemble's probability", "",
             f"Platt's map fitted on the first {FIT_SHARE:.0%} of each ensemble's out-of-sample rows (in time), "
             "scored on the rest. " + (f"Command: `{a.command}`" if a.command else ""), ""]
    for ax, (label, fig_, raw_rel, cal_rel) in zip(axes[0], results, strict=True):
        lines += [f"## {label}", "", "| figure | raw | calibrated |", "|---|---|---|"]
        lines += [f"| {k} | {fig_[k + '_raw']:.5f} | {fig_[k + '_calibrated']:.5f} |" for k in ("brier", "logloss", "ece")]
        lines += [f"| base rate (share of up) | {fig_['base_rate']:.4f} | |", "",
                  "| bin | rows raw | predicted raw | observed raw | rows cal. | predicted cal. | observed cal. |",
                  "|---|---|---|---|---|---|---|"]
        both = raw_rel.join(cal_rel, how="outer", lsuffix="_r", rsuffix="_c")
        for b, r in both.iterrows():
            lines.append(f"| {b} | {r['rows_r']:.0f} | {r['predicted_r']:.4f} | {r['observed_r']:.4f} | "
                         f"{r['rows_c']:.0f} | {r['predicted_c']:.4f} | {r['observed_c']:.4f} |"
                         .replace("nan", "-"))
        lines.append("")
        ax.plot([0.3, 0.7], [0.3, 0.7], color="grey", lw=0.8)
        ax.plot(raw_rel["predicted"], raw_rel["observed"], "o-", label="raw")
        ax.plot(cal_rel["predicted"], cal_rel["observed"], "s-", label="calibrated")
        ax.set_title(label.split(" (")[0], fontsize=10)
        ax.set_xlabel("predicted P(up)")
        ax.set_ylabel("observed share up")
        ax.legend(fontsize=8)
    _save(plt, fig, a.out / "reliability.png")
    (a.out / "REPORT.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
