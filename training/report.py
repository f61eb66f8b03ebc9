"""Walk-forward out-of-sample report of LightGBM, LSTM, GAT and the ensemble on real candles.

    python -m training.report [--data-dir ../shared/data/binance-spot-1h] [--out training/reports/models] \\
        [--holdout-start 2024-01-01] [--folds 5] [--fee-bps 10] [--seed 7] \\
        [--lstm-epochs 4] [--gnn-epochs 12] [--symbols BTC/USDT ...] [--start ...] [--end ...]

What it does, in order:

1. **Features** come from the flow's own operators (``SymbolPipeline`` per symbol and
   ``CrossAssetStep``, exactly as ``training.backfill`` drives them), computed in
   process from the candle files rather than read back from a database.  They are
   joined to decision times as Feast does: the latest row at or before the decision
   time, within the feature views' two-day TTL.  Labels are those of
   ``training.datasets.attach_labels`` (log return from the decision bar's open to the
   close ``horizon`` bars later).
2. **Development period** (decision times before ``--holdout-start``): purged expanding
   walk-forward (``training.validation``) with ``--folds`` test folds.  Each fold's
   models see only its purged training side; early stopping uses a slice carved from
   the end of that side.  No hyper-parameter is tuned anywhere: every model runs with
   fixed settings chosen for the time budget.
3. **Ensemble**: performance weights ``max(AUC - 0.5, 0)`` of each member over the
   *earlier* folds only (fold 0, which has none, and any fold where no member had an
   edge before it, use equal weights); an equal-weight ensemble is shown beside it.
4. **Hold-out** (decision times from ``--holdout-start``): every model is fitted once on
   the whole development period (purged against the hold-out's first label) with the
   settings above (LightGBM: the median of the folds' early-stopping rounds), the
   ensemble uses the development folds' AUCs, and the hold-out is scored once.
   Nothing about it feeds back into any choice.
5. **Baselines**: *always up* (P(up) = the training side's up-rate, at least 0.501, so
   it is always long) and *last-return sign* (long after an up bar, short otherwise;
   P = the training side's hit rate of that rule, at least 0.501, for the predicted side).

Every model is scored on the same rows: those where all of them have a prediction
(the LSTM has none across missing bars).  Metrics per fold and pooled over folds are
those of ``training.metrics``; the Sharpe ratio is after ``--fee-bps`` per unit of
position change (and, for context, before fees).  Writes ``REPORT.md`` and PNG plots
to ``--out`` (default ``training/reports/models``); the run id hashes the effective config.

Where the pieces live: the run (features, walk-forward, hold-out, metric tables) in
:mod:`training.walkforward_report`, markdown tables in :mod:`training.render`, plots
in :mod:`training.plots` (both shared with the RL evaluation); here, the report's
text and the command line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd

from flows.settings import SettingsError
from training.metrics import TradingConfig
from training.plots import plot_equity_panels
from training.render import md_table
from training.walkforward_report import (
    BASELINES,
    DEFAULT_DATA,
    ENSEMBLES,
    MEMBERS,
    ReportConfig,
    ReportResult,
    default_data_dir,
    equity,
    metrics_table,
    run,
)

# ------------------------------------------------------------------ the report's text and plots


def plot_equity(df: pd.DataFrame, trading: TradingConfig, title: str, path: Path,
                marks: Sequence[pd.Timestamp] = ()) -> None:
    """Write a small PNG: equity curves after fees (left) and before fees (right), cumulative log return in %."""
    plot_equity_panels([(f"after {trading.fee_bps:g} bps fees", equity(df, trading)),
                        ("before fees", equity(df, replace(trading, fee_bps=0.0)))], title, path, marks)


COLS = ["model", "accuracy", "log_loss", "roc_auc", "brier", "sharpe", "sharpe_gross", "turnover", "n"]


def _findings(dev: pd.DataFrame, hold: pd.DataFrame) -> list[str]:
    """Plain statements computed from the pooled tables (no judgement added by hand)."""
    out = []
    for name, t in (("Development walk-forward", dev), ("Hold-out", hold)):
        t = t.set_index("model")
        best = t.loc[list(MEMBERS) + list(ENSEMBLES), "roc_auc"].idxmax()
        beat = [m for m in (*MEMBERS, *ENSEMBLES) if t.loc[m, "sharpe"] > max(t.loc[list(BASELINES), "sharpe"])]
        out.append(f"- {name}: highest ROC AUC {best} ({t.loc[best, 'roc_auc']:.4f}); "
                   f"log loss of the always-up baseline {t.loc['always_up', 'log_loss']:.4f} vs the best model's "
                   f"{t.loc[list(MEMBERS) + list(ENSEMBLES), 'log_loss'].min():.4f}; after fees "
                   + (f"{', '.join(beat)} beat both baselines' Sharpe" if beat
                      else "no model beats the better baseline's Sharpe")
                   + f" (models' after-fee Sharpe {t.loc[list(MEMBERS), 'sharpe'].min():.2f} to "
                     f"{t.loc[list(MEMBERS), 'sharpe'].max():.2f}, before fees "
                     f"{t.loc[list(MEMBERS), 'sharpe_gross'].min():.2f} to "
                     f"{t.loc[list(MEMBERS), 'sharpe_gross'].max():.2f}).")
    lrs = (dev.set_index("model").loc["last_return_sign", "roc_auc"], hold.set_index("model").loc[
        "last_return_sign", "roc_auc"])
    if max(lrs) < 0.5:
        out.append(f"- The last-return-sign rule ranks below chance (AUC {lrs[0]:.4f} / {lrs[1]:.4f}): one-bar "
                   "returns tend to reverse, which is what the models' small edge mostly looks like; at a position "
                   "change on a large share of bars, fees take far more than that edge.")
    return out


def write_report(res: ReportResult, command: str) -> Path:
    """Write REPORT.md and its plots to the config's ``out_dir``; return the markdown path."""
    cfg, trading = res.config, res.trading()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev_all, dev_folds = metrics_table(res.oos, trading), metrics_table(res.oos, trading, by_fold=True)
    hold_all = metrics_table(res.holdout, trading)
    starts = [g["event_timestamp"].min() for _, g in res.oos.groupby("fold")]
    plot_equity(res.oos, trading, f"Walk-forward out of sample, {len(res.symbols)} assets {res.timeframe}, "
                "sign of P(up) - 0.5 per asset, equal weight; grey lines: fold starts",
                out / "equity_walk_forward.png", starts[1:])
    plot_equity(res.holdout, trading, f"Hold-out from {cfg.holdout_start} (never used to choose anything)",
                out / "equity_holdout.png")
    folds = res.oos.groupby("fold")["event_timestamp"].agg(["min", "max", "size"])
    fold_lines = [f"| {k} | {r['min']:%Y-%m-%d %H:%M} | {r['max']:%Y-%m-%d %H:%M} | {r['size']:,} | "
                  + " / ".join(f"{w:.2f}" for w in res.weights[str(k)]) + " |" for k, r in folds.iterrows()]
    per_fold = dev_folds.assign(model=dev_folds["fold"].astype(str) + " " + dev_folds["model"])
    t = res.timings
    h = res.holdout["event_timestamp"]
    lines = [
        "# Models: walk-forward out-of-sample report",
        "",
        f"Run `{res.config.run_id()}` (config hash), data hash `{res.data_hash}`, generated by `{command}`.",
        f"Data: {len(res.symbols)} assets ({', '.join(res.symbols)}), {res.timeframe} candles from "
        f"`{Path(cfg.data_dir).name}`, {res.rows:,} labelled rows after feature warm-up. Label: up/down of the "
        f"log return from the decision bar's open over {cfg.horizon} bar(s). Fees: {cfg.fee_bps:g} bps per unit "
        "of position change (a flip is 2 units). Wall time "
        f"{t['total'] / 60:.1f} min on this machine (2 cores shared with other jobs, 1-minute load average "
        f"{os.getloadavg()[0]:.1f} at the end; features {t['features']:.0f} s, LightGBM {t['lightgbm']:.0f} s, "
        f"LSTM {t['lstm']:.0f} s, GAT {t['gnn']:.0f} s).",
        "",
        "## How it was measured",
        "",
        "- Features: the flow's own operators (`SymbolPipeline`, `CrossAssetStep`) over the candle files, joined "
        "to decision times point-in-time like Feast (latest row at or before t, TTL 2 days). The files carry "
        "OHLCV only, so `taker_imbalance` and `trade_count` are constant 0 and `vwap_dist` uses the typical "
        "price (as in `training.backfill`).",
        f"- Development period: decision times before {cfg.holdout_start}, purged expanding walk-forward with "
        f"{cfg.folds} test folds (purge = label horizon); early stopping on the last 20% of each fold's "
        "training side. Nothing was tuned: all settings below were fixed before the run.",
        f"- Hold-out: every decision time from {cfg.holdout_start} ({h.min():%Y-%m-%d} to {h.max():%Y-%m-%d}). "
        "Models are fitted once on the whole development period and scored once; the ensemble's weights come "
        "from the development folds. The hold-out feeds no choice.",
        f"- LightGBM: project defaults (`training/models/lightgbm_model.py`), early-stopped per fold "
        f"(rounds {res.rounds}); hold-out model trained for their median.",
        f"- LSTM (bar features, `lstm_{res.timeframe}_v1`): {cfg.lstm}. GAT (bar + cross-asset features, "
        f"correlation graph over {cfg.graph_window} bars): {cfg.gnn}. Epochs are kept modest for the time budget "
        "(best checkpoint by validation loss is kept), so the neural models are not trained to convergence.",
        "- Ensemble (`ensemble`): performance weights max(AUC - 0.5, 0) of each member over the *earlier* folds "
        "only (equal weights on fold 0, or when no member had an edge yet). `ensemble_equal`: equal weights.",
        "- Baselines: `always_up` (P(up) = training up-rate, always long); `last_return_sign` (long after an up "
        "bar, short otherwise; P = the rule's training hit rate for the predicted side).",
        f"- All models are scored on the same rows: those where every member predicts (dropped: "
        f"{res.dropped['development']:,} development and {res.dropped['holdout']:,} hold-out rows, the LSTM's "
        "burn-in after a missing bar). Sharpe: annualised (24/7) mean/std of the equal-weight per-bar portfolio return "
        "of holding sign(p - 0.5) per asset; `sharpe_gross` is before fees; turnover = mean position change "
        "per asset and bar.",
        "",
        "## Findings",
        "",
        *_findings(dev_all, hold_all),
        "",
        "## Development walk-forward, pooled over folds",
        "",
        md_table(dev_all, COLS),
        "",
        "![walk-forward equity](equity_walk_forward.png)",
        "",
        f"## Hold-out from {cfg.holdout_start} (reported separately, never used for choices)",
        "",
        md_table(hold_all, COLS),
        "",
        "![hold-out equity](equity_holdout.png)",
        "",
        "## Folds",
        "",
        "| fold | first test time | last test time | rows | ensemble weights " + " / ".join(MEMBERS) + " |",
        "|---|---|---|---|---|",
        *fold_lines,
        f"| hold-out | {h.min():%Y-%m-%d %H:%M} | {h.max():%Y-%m-%d %H:%M} | {len(h):,} | "
        + " / ".join(f"{w:.2f}" for w in res.weights["holdout"]) + " |",
        "",
        "### Per-fold metrics",
        "",
        md_table(per_fold, COLS),
        "",
        "## LightGBM gain importance (hold-out model, top 10)",
        "",
        "| feature | share of gain |",
        "|---|---|",
        *[f"| {k} | {v / res.importance.sum():.3f} |" for k, v in res.importance.head(10).items()],
        "",
    ]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines))
    return path


# ------------------------------------------------------------------ command line


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, ReportConfig]:
    """Parse the command line into the run's config (see module docstring)."""
    p = argparse.ArgumentParser(prog="python -m training.report", description=__doc__.split("\n\n")[0])
    d = ReportConfig.__dataclass_fields__
    p.add_argument("--data-dir", type=Path, default=default_data_dir(),
                   help=f"candle files, one per asset (default {DEFAULT_DATA} when present)")
    p.add_argument("--out", type=Path, default=d["out_dir"].default, help="report directory")
    p.add_argument("--log-dir", type=Path, help="TensorBoard logs of the neural models (default: none)")
    p.add_argument("--symbols", nargs="+", default=[], help="subset of the files' symbols, e.g. BTC/USDT")
    p.add_argument("--start", help="first candle time (ISO 8601 UTC)")
    p.add_argument("--end", help="end of candles (exclusive)")
    p.add_argument("--holdout-start", default=d["holdout_start"].default)
    p.add_argument("--folds", type=int, default=d["folds"].default)
    p.add_argument("--horizon", type=int, default=d["horizon"].default, help="label horizon in bars")
    p.add_argument("--fee-bps", type=float, default=d["fee_bps"].default)
    p.add_argument("--seed", type=int, default=d["seed"].default)
    p.add_argument("--threads", type=int, default=d["threads"].default, help="LightGBM threads")
    p.add_argument("--lstm-epochs", type=int, help="LSTM maximum epochs (default 4)")
    p.add_argument("--gnn-epochs", type=int, help="GAT maximum epochs (default 12)")
    p.add_argument("--hidden", type=int, help="hidden size of both neural models (default LSTM 24, GAT 16)")
    a = p.parse_args(argv)
    if a.data_dir is None:
        raise SettingsError(f"--data-dir is required: the default {DEFAULT_DATA} is not present")
    base = ReportConfig(a.data_dir)
    lstm, gnn = dict(base.lstm), dict(base.gnn)
    if a.lstm_epochs is not None:
        lstm["max_epochs"] = a.lstm_epochs
    if a.gnn_epochs is not None:
        gnn["max_epochs"] = a.gnn_epochs
    if a.hidden is not None:
        lstm["hidden"] = gnn["hidden"] = a.hidden
    cfg = ReportConfig(a.data_dir, a.out, tuple(a.symbols), a.start, a.end, a.holdout_start, a.folds, a.horizon,
                       a.fee_bps, a.seed, a.threads, lstm, gnn)
    return a, cfg


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit code."""
    try:
        a, cfg = parse_args(argv)
        res = run(cfg, log=lambda msg: print(msg, file=sys.stderr, flush=True), log_dir=a.log_dir)
    except (SettingsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args = list(argv if argv is not None else sys.argv[1:])
    for flag in ("--out", "--log-dir"):  # where files go does not change a figure
        while flag in args:
            i = args.index(flag)
            del args[i:i + 2]
    shown = " ".join(["python -m training.report", *args])
    path = write_report(res, shown)
    print(f"report -> {path} (run {cfg.run_id()}, {res.timings['total'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
