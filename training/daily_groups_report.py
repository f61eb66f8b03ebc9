"""Compare walk-forward runs of several feature versions: ``python -m training.daily_groups_report ROOT --out DIR``.

``ROOT`` holds the runs of ``training/reports/research/daily-groups/run.sh``: ``dev-<version>``
(development windows) and ``holdout-<version>`` (2024, once), each a ``training.walkforward``
output, with their shared work directories ``dev-work`` / ``holdout-work`` (backfilled features,
one registry per version).  For every run it reads the after-fee and before-fee figures of
``summary.json`` and measures two AUCs of each window's LightGBM model:

* ``cv_auc``: the mean ROC AUC of the model's own purged walk-forward folds inside its training
  window (its manifest's ``metrics.mean.roc_auc``);
* ``test_auc``: ROC AUC on the window's traded period, every (symbol, bar) row of it, from the
  point-in-time training frame of the ``lightgbm_<tf>_v2`` service (which holds every feature any
  version uses), scored with the registered ONNX model on its own features (the label of the
  run's horizon).

It writes ``DIR/results.json`` and ``DIR/results.md`` (tables only; the prose lives in README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flows.settings import load_settings


def _versions(root: Path, kind: str) -> list[str]:
    order = ["v1", "v2_fear_greed", "v2_hash_rate", "v2_difficulty", "v2_funding", "v2"]
    found = [p.name.removeprefix(f"{kind}-") for p in root.glob(f"{kind}-*") if (p / "summary.json").is_file()]
    return sorted(found, key=lambda v: order.index(v) if v in order else len(order))


def _test_frame(work: Path, summary: dict[str, Any], start: str, end: str) -> pd.DataFrame:
    """Return the point-in-time rows of [start, end) with every feature (the v2 service) and the run's labels."""
    from training.datasets import build_training_set

    job = summary["job"]
    base = load_settings(job.get("config"))
    settings = base.model_copy(update={"data_dir": work / "var", "feast_repo": work / "feature_repo",
                                       "profile": "local"})
    tf = summary["timeframe"]
    return build_training_set(settings, tuple(base.symbols), tf, start, end, f"lightgbm_{tf}_v2", int(job["horizon"]))


def _model(registry: Path) -> tuple[Any, list[str], float]:
    import onnxruntime as ort

    from inference.manifest import read_manifest, resolve_version_dir

    d = resolve_version_dir(registry, "lightgbm")
    m = read_manifest(d)
    sess = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
    return sess, list(m.features), float(m.metrics.get("mean", {}).get("roc_auc", float("nan")))


def _predict(sess: Any, x: np.ndarray) -> np.ndarray:
    name = sess.get_inputs()[0].name
    want = np.float64 if "double" in sess.get_inputs()[0].type else np.float32
    out = sess.run(None, {name: x.astype(want)})
    for o in out:
        a = np.asarray(o)
        if a.ndim == 2 and a.shape[1] == 2:
            return a[:, 1].astype(np.float64)
        if a.ndim in (1, 2) and a.shape[0] == len(x) and np.issubdtype(a.dtype, np.floating):
            return a.reshape(len(x), -1)[:, -1].astype(np.float64)
    raise ValueError("the ONNX model gave no probability output")


def run_figures(root: Path, kind: str, version: str, frame: pd.DataFrame) -> dict[str, Any]:
    """Return one run's figures: after/before fees, benchmarks, per-window and mean AUCs."""
    from sklearn.metrics import roc_auc_score

    out_dir = root / f"{kind}-{version}"
    summary = json.loads((out_dir / "summary.json").read_text())
    windows = pd.read_csv(out_dir / "windows.csv")
    reg_root = root / f"{kind}-work" / ("registry" if version == "v1" else f"registry-{version}")
    per: list[dict[str, Any]] = []
    ts = pd.to_datetime(frame["event_timestamp"], utc=True)
    for _, w in windows.iterrows():
        sess, feats, cv_auc = _model(reg_root / f"window-{int(w['window'])}")
        rows = frame[(ts >= pd.Timestamp(w["test_start"])) & (ts < pd.Timestamp(w["test_end"]))]
        p = _predict(sess, rows[feats].to_numpy(np.float64))
        test_auc = float(roc_auc_score(rows["label"], p)) if rows["label"].nunique() == 2 else float("nan")
        per.append({"window": int(w["window"]), "test_start": str(w["test_start"]), "cv_auc": cv_auc,
                    "test_auc": test_auc, "rows": len(rows), "return": float(w["return"]),
                    "sharpe": float(w["sharpe"]), "fills": int(w["fills"])})
    pick = ("total_return", "sharpe", "max_drawdown")
    return {"version": version, "windows": per,
            "cv_auc": float(np.nanmean([r["cv_auc"] for r in per])),
            "test_auc": float(np.nanmean([r["test_auc"] for r in per])),
            "fills": int(summary.get("fills", 0)), "fees": float(summary.get("fees", 0.0)),
            **{name: {k: float(summary[name][k]) for k in pick} for name in
               ("strategy", "strategy_before_fees", "buy_and_hold", "vol_target_buy_and_hold") if name in summary}}


def table(runs: list[dict[str, Any]]) -> str:
    """Return the comparison as a markdown table."""
    head = ("| features | cv AUC | test AUC | Sharpe after fees | return after fees | max DD | Sharpe before fees "
            "| fills |\n|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in runs:
        s, b = r.get("strategy", {}), r.get("strategy_before_fees", {})
        lines.append(f"| `{r['version']}` | {r['cv_auc']:.4f} | {r['test_auc']:.4f} | {s.get('sharpe', 0):+.2f} | "
                     f"{s.get('total_return', 0):+.2%} | {s.get('max_drawdown', 0):.2%} | "
                     f"{b.get('sharpe', float('nan')):+.2f} | {r['fills']} |")
    bench = runs[0] if runs else {}
    for name, label in (("buy_and_hold", "equal-weight buy-and-hold"),
                        ("vol_target_buy_and_hold", "volatility-targeted buy-and-hold")):
        m = bench.get(name)
        if m:
            lines.append(f"| {label} | | | {m['sharpe']:+.2f} | {m['total_return']:+.2%} | {m['max_drawdown']:.2%} "
                         "| | |")
    lines.append("| cash | | | 0 | 0 | 0 | | |")
    return head + "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    p = argparse.ArgumentParser(prog="python -m training.daily_groups_report", description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    result: dict[str, Any] = {}
    md = []
    for kind in ("dev", "holdout"):
        versions = _versions(a.root, kind)
        if not versions:
            continue
        s0 = json.loads((a.root / f"{kind}-{versions[0]}" / "summary.json").read_text())
        w0 = pd.read_csv(a.root / f"{kind}-{versions[0]}" / "windows.csv")
        frame = _test_frame(a.root / f"{kind}-work", s0, str(w0["test_start"].min())[:10],
                            str(pd.Timestamp(w0["test_end"].max()))[:19])
        runs = [run_figures(a.root, kind, v, frame) for v in versions]
        result[kind] = runs
        md.append(f"## {kind}\n\n{table(runs)}")
        print(f"{kind}:\n{table(runs)}", flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    (a.out / "results.md").write_text("# Walk-forward by feature group (generated)\n\n" + "\n".join(md))
    return 0 if result else 1


if __name__ == "__main__":
    sys.exit(main())
