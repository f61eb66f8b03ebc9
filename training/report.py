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
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flows.execution.costs import COSTS
from flows.operators.cross_asset import CROSS_FEATURES
from flows.operators.features import FEATURES as BAR_FEATURES
from flows.records import FeatureRow
from flows.settings import PROJECT_ROOT, SettingsError
from training.backfill import bars_from_frame, operator_records
from training.datasets import attach_labels
from training.metrics import TradingConfig, fold_metrics, roc_auc, sharpe, sign_trading_returns
from training.validation import WalkForward, WalkForwardConfig

MEMBERS = ("lightgbm", "lstm", "gnn")
BASELINES = ("always_up", "last_return_sign")
ENSEMBLES = ("ensemble", "ensemble_equal")
MODELS = (*MEMBERS, *ENSEMBLES, *BASELINES)
FEATURE_TTL = pd.Timedelta(days=2)  # the feature views' ttl (feature_repo/definitions.py)
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "binance-spot-1h"


def default_data_dir() -> Path | None:
    """Return ``../shared/data/binance-spot-1h`` when it is present, else None (the user must say)."""
    return DEFAULT_DATA if DEFAULT_DATA.is_dir() else None


@dataclass(frozen=True)
class ReportConfig:
    """Everything that decides the report's numbers (hashed into its run id)."""

    data_dir: Path
    out_dir: Path = PROJECT_ROOT / "training" / "reports" / "models"
    symbols: tuple[str, ...] = ()  # default: every candle file in data_dir
    start: str | None = None
    end: str | None = None
    holdout_start: str = "2024-01-01"
    folds: int = 5
    horizon: int = 1
    fee_bps: float = COSTS.fee_bps
    seed: int = 7
    threads: int = 1  # LightGBM threads (2 OpenMP threads ran 2-4x slower here when other jobs shared the cores)
    lstm: dict[str, Any] = field(default_factory=lambda: {
        "bptt": 16, "burn_in": 16, "segment": 256, "hidden": 24, "layers": 2, "dropout": 0.2, "batch_size": 32,
        "max_epochs": 4, "patience": 2, "lr": 1e-3, "num_threads": 1})
    gnn: dict[str, Any] = field(default_factory=lambda: {
        "hidden": 16, "heads": 4, "batch_size": 128, "max_epochs": 12, "patience": 3, "num_threads": 1})
    graph_window: int = 60

    def __post_init__(self) -> None:
        if not Path(self.data_dir).is_dir():
            raise SettingsError(f"data_dir: {self.data_dir} is not a directory of candle files")
        if self.folds < 2:
            raise SettingsError(f"folds must be at least 2 (earlier folds weight the ensemble), not {self.folds}")
        if self.horizon < 1 or self.fee_bps < 0 or self.threads < 1:
            raise SettingsError("horizon and threads must be >= 1 and fee_bps >= 0")

    def run_id(self) -> str:
        """Return a short hash of the config (paths excluded: the data hash covers the input)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("data_dir", "out_dir")}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ------------------------------------------------------------------ features and labels


def load_candles(data_dir: Path, symbols: Sequence[str] = (), start: str | None = None,
                 end: str | None = None) -> tuple[dict[str, pd.DataFrame], str]:
    """Read the candle files of ``data_dir`` (``BASE_QUOTE-TF.ext``); return per symbol frames and the timeframe.

    Raises:
        SettingsError: no candle files, mixed timeframes, or a requested symbol without a file.
    """
    from infra.replay_exchange.candles import CandleFile, read_candles

    ms = [None if t is None else int(pd.Timestamp(t, tz="UTC").value // 1_000_000) for t in (start, end)]
    frames, tfs = {}, set()
    for path in sorted(p for p in Path(data_dir).iterdir() if p.suffix in (".parquet", ".csv", ".feather")):
        cf = CandleFile.from_path(path)
        symbol = f"{cf.base}/{cf.quote}"
        if symbols and symbol not in symbols:
            continue
        frames[symbol] = read_candles(path, ms[0], ms[1])
        tfs.add(cf.interval)
    missing = [s for s in symbols if s not in frames]
    if not frames or missing:
        raise SettingsError(f"data_dir {data_dir}: no candle files for {missing or 'any symbol'}")
    if len(tfs) != 1:
        raise SettingsError(f"data_dir {data_dir} mixes timeframes {sorted(tfs)}")
    return frames, tfs.pop()


def feature_frame(candles: Mapping[str, pd.DataFrame], timeframe: str, horizon: int = 1) -> pd.DataFrame:
    """Run the flow's operators over the candles; return features and labels per (symbol, decision time).

    Columns: ``symbol``, ``event_timestamp`` (decision time, UTC ns), the bar features,
    the cross-asset features, ``fwd_ret`` and ``label``; rows without every feature
    (warm-up) or without a full label window are dropped.
    """
    symbols = tuple(sorted(candles))
    rows: dict[str, list[tuple[str, int, dict[str, float]]]] = {"bar_features": [], "cross_asset_features": []}
    enabled = gc.isenabled()
    gc.disable()  # millions of small acyclic records (as in training.backfill)
    try:
        for rec in operator_records({s: bars_from_frame(s, timeframe, candles[s]) for s in symbols}, timeframe):
            if isinstance(rec, FeatureRow):
                rows[rec.table].append((rec.symbol, rec.ts, rec.values))
    finally:
        if enabled:
            gc.enable()
    bars = pd.concat([df.assign(symbol=s) for s, df in candles.items()], ignore_index=True)
    bars["ts"] = pd.to_datetime(bars["ts"], unit="ms", utc=True)
    frame = attach_labels(bars, timeframe, horizon)
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True).dt.as_unit("ns")
    for key, names in (("bar_features", BAR_FEATURES), ("cross_asset_features", CROSS_FEATURES)):
        view = pd.DataFrame([v for *_, v in rows[key]], columns=list(names))
        view.insert(0, "symbol", [s for s, *_ in rows[key]])
        view.insert(1, "ft", pd.to_datetime([t for _, t, _ in rows[key]], unit="ms", utc=True).as_unit("ns"))
        frame = pd.merge_asof(frame.sort_values("event_timestamp"), view.sort_values("ft"),
                              left_on="event_timestamp", right_on="ft", by="symbol", direction="backward",
                              tolerance=FEATURE_TTL).drop(columns="ft")  # Feast's point-in-time join
    cols = ["symbol", "event_timestamp", *BAR_FEATURES, *CROSS_FEATURES, "fwd_ret", "label"]
    frame = frame[cols].dropna().sort_values(["event_timestamp", "symbol"], kind="mergesort")
    return frame.reset_index(drop=True)


# ------------------------------------------------------------------ models


BOTH = [*BAR_FEATURES, *CROSS_FEATURES]  # lightgbm_<tf>_v1 / gnn_<tf>_v1 feature order
BAR_ONLY = list(BAR_FEATURES)  # lstm_<tf>_v1


class Members:
    """Fit and predict each member with the report's fixed settings (nothing is tuned)."""

    def __init__(self, cfg: ReportConfig, timeframe: str, symbols: tuple[str, ...], log_dir: Path | None) -> None:
        """Hold the settings; ``log_dir`` receives the neural models' TensorBoard logs."""
        from training.models.lightgbm_model import LightGBMConfig

        self.cfg, self.symbols, self.log_dir = cfg, symbols, log_dir
        self.bar = pd.Timedelta(timeframe)
        self.lgb_cfg = LightGBMConfig(horizon=cfg.horizon, seed=cfg.seed, timeframe=timeframe,
                                      fee_bps=cfg.fee_bps, num_threads=cfg.threads)
        self.rounds: list[int] = []
        self.importance = pd.Series(dtype=np.float64)

    def _logs(self, fam: str, tag: str) -> str | None:
        return str(self.log_dir / fam / tag) if self.log_dir else None

    def lightgbm_walk_forward(self, dev: pd.DataFrame, splitter: WalkForward) -> pd.DataFrame:
        """Return out-of-sample P(up) (``symbol, event_timestamp, lightgbm``) of every fold; keep the rounds."""
        from training.models.lightgbm_model import LightGBMModel

        cv = LightGBMModel(self.lgb_cfg).cross_validate(dev, splitter, BOTH)
        self.rounds = list(cv.best_iterations)
        return cv.oos[["symbol", "event_timestamp", "p"]].rename(columns={"p": "lightgbm"})

    def lightgbm_final(self, dev: pd.DataFrame, frame: pd.DataFrame) -> np.ndarray:
        """Fit on the development rows for the folds' median round count; P(up) per row of ``frame``."""
        from training.models.lightgbm_model import LightGBMModel

        model = LightGBMModel(self.lgb_cfg).fit_final(dev, self.rounds, BOTH)
        self.importance = model.feature_importance()
        return model.predict_proba(frame)

    def lstm(self, tag: str, train: pd.DataFrame, score: pd.DataFrame) -> np.ndarray:
        """Fit the LSTM on ``train``; P(up) per row of ``score`` (NaN in the burn-in of each run of consecutive bars)."""
        from training.models.lstm import LstmClassifier, LstmConfig

        c = LstmConfig(**self.cfg.lstm, seed=self.cfg.seed,
                       embargo=self.cfg.horizon, log_dir=self._logs("lstm", tag))
        return LstmClassifier(BAR_ONLY, c).fit(train, bar=self.bar).predict_proba(score, bar=self.bar)

    def gnn(self, tag: str, train: pd.DataFrame, score: pd.DataFrame) -> np.ndarray:
        """Fit the graph attention network on ``train``; P(up) per row of ``score``."""
        from training.models.gnn import GnnClassifier, GnnConfig
        from training.models.graph import GraphConfig

        c = GnnConfig(**self.cfg.gnn, seed=self.cfg.seed,
                      embargo=self.cfg.horizon, log_dir=self._logs("gnn", tag))
        model = GnnClassifier(BOTH, c, GraphConfig(window=self.cfg.graph_window), self.symbols)
        return model.fit(train).predict_proba(score)


def baselines(train: pd.DataFrame, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """Return the naive baselines' P(up) for ``rows``, calibrated on ``train`` (see module docstring)."""
    up_rate = float(train["label"].mean())
    hit = float(np.mean((train["ret_1"].to_numpy() > 0) == (train["label"].to_numpy() > 0.5)))
    q = min(max(hit, 0.501), 0.999)
    return {"always_up": np.full(len(rows), min(max(up_rate, 0.501), 0.999)),
            "last_return_sign": np.where(rows["ret_1"].to_numpy() > 0, q, 1.0 - q)}


def ensemble_weights(history: Sequence[Mapping[str, float]], members: Sequence[str] = MEMBERS) -> np.ndarray:
    """Return performance weights from earlier folds' AUCs (equal weights when there is no usable edge).

    Args:
        history: per *earlier* fold, member -> AUC on that fold (empty for the first fold).
        members: member order.
    """
    from training.models.ensemble import performance_weights

    equal = np.full(len(members), 1.0 / len(members))
    if not history:
        return equal
    means = {m: {"roc_auc": float(np.nanmean([h[m] for h in history]))} for m in members}
    try:
        return performance_weights(means, members, "roc_auc")
    except ValueError:  # no member had an edge before this fold (said in the report)
        return equal


def combine(p: pd.DataFrame, weights: np.ndarray) -> np.ndarray:
    """Return the ensemble P(up) of the members' columns of ``p`` with base ``weights``."""
    from training.models.ensemble import Ensemble, EnsembleConfig

    cfg = EnsembleConfig(MEMBERS, tuple(float(w) for w in weights), "performance")
    return Ensemble(cfg).predict_proba(p[list(MEMBERS)].to_numpy(np.float64))


# ------------------------------------------------------------------ the run


@dataclass
class ReportResult:
    """Predictions of a run and what REPORT.md needs besides them."""

    config: ReportConfig
    timeframe: str
    symbols: tuple[str, ...]
    rows: int
    data_hash: str
    oos: pd.DataFrame  # development folds: keys, fold, one P(up) column per model
    holdout: pd.DataFrame  # hold-out rows: keys, one P(up) column per model
    weights: dict[str, list[float]]  # fold number (or "holdout") -> ensemble weights in MEMBERS order
    dropped: dict[str, int]  # rows without every member's prediction, per period
    timings: dict[str, float]
    importance: pd.Series
    rounds: list[int]

    def trading(self) -> TradingConfig:
        """Return the sign-trading settings of the run."""
        return TradingConfig(self.config.fee_bps, self.timeframe, self.config.horizon)


KEYS = ["symbol", "event_timestamp", "label", "fwd_ret", "ret_1"]


def _common_rows(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep rows where every member has a prediction; return them and how many were dropped."""
    ok = np.isfinite(df[list(MEMBERS)].to_numpy(np.float64)).all(axis=1)
    return df[ok].reset_index(drop=True), int((~ok).sum())


def _auc(df: pd.DataFrame, col: str) -> float:
    return roc_auc(df["label"], df[col])


def _walk_forward(cfg: ReportConfig, members: Members, dev: pd.DataFrame, bar: pd.Timedelta,
                  timings: dict[str, float], log: Callable[[str], None]) -> pd.DataFrame:
    """Return the development folds' out-of-sample predictions of the members and baselines."""
    splitter = WalkForward(dev["event_timestamp"], bar, WalkForwardConfig(n_splits=cfg.folds, horizon=cfg.horizon))
    t1 = time.perf_counter()
    lgb = members.lightgbm_walk_forward(dev, splitter)
    timings["lightgbm"] = time.perf_counter() - t1
    log(f"lightgbm: {cfg.folds} folds in {timings['lightgbm']:.0f}s (rounds {members.rounds})")
    parts = []
    for split in splitter.splits():
        test, train = dev.iloc[split.test], dev.iloc[split.train]
        upto = dev[dev["event_timestamp"] <= split.test_end]
        part = test[KEYS].assign(fold=split.fold)
        for fam, fit in (("lstm", members.lstm), ("gnn", members.gnn)):
            t1 = time.perf_counter()
            p = pd.Series(fit(f"fold-{split.fold}", train, upto), index=upto.index)
            part[fam] = p.reindex(test.index).to_numpy()
            timings[fam] = timings.get(fam, 0.0) + time.perf_counter() - t1
        part = part.assign(**baselines(train, test))
        parts.append(part)
        log(f"fold {split.fold}: train {len(train):,} rows, test {split.test_start:%Y-%m-%d}..{split.test_end:%Y-%m-%d}"
            f" ({len(test):,} rows); lstm {timings['lstm']:.0f}s, gnn {timings['gnn']:.0f}s so far")
    oos = pd.concat(parts).merge(lgb, on=["symbol", "event_timestamp"], how="left")
    return oos.sort_values(["event_timestamp", "symbol"], kind="mergesort").reset_index(drop=True)


def run(cfg: ReportConfig, log: Callable[[str], None] = print, log_dir: Path | None = None) -> ReportResult:
    """Compute features, run the walk-forward and the hold-out; return every prediction."""
    from training.registry import frame_hash

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    candles, tf = load_candles(cfg.data_dir, cfg.symbols, cfg.start, cfg.end)
    frame = feature_frame(candles, tf, cfg.horizon)
    timings["features"] = time.perf_counter() - t0
    symbols = tuple(sorted(candles))
    log(f"features: {len(frame):,} rows of {len(symbols)} symbols ({tf}) in {timings['features']:.1f}s")
    bar = pd.Timedelta(tf)
    holdout_t = pd.Timestamp(cfg.holdout_start, tz="UTC")
    is_dev = (frame["event_timestamp"] < holdout_t).to_numpy()
    # purge: no development label may reach into the hold-out
    dev = frame[(frame["event_timestamp"] <= holdout_t - cfg.horizon * bar).to_numpy()].reset_index(drop=True)
    if dev.empty or is_dev.all():
        raise SettingsError(f"holdout_start {cfg.holdout_start} leaves no development or no hold-out rows")
    members = Members(cfg, tf, symbols, log_dir)
    oos, n_dev_dropped = _common_rows(_walk_forward(cfg, members, dev, bar, timings, log))

    weights: dict[str, list[float]] = {}
    history: list[dict[str, float]] = []
    oos["ensemble"] = np.nan
    for k in range(cfg.folds):  # weights of fold k from folds 0..k-1 only
        sel = (oos["fold"] == k).to_numpy()
        w = ensemble_weights(history)
        weights[str(k)] = [float(v) for v in w]
        oos.loc[sel, "ensemble"] = combine(oos[sel], w)
        history.append({m: _auc(oos[sel], m) for m in MEMBERS})
    oos["ensemble_equal"] = combine(oos, np.full(len(MEMBERS), 1.0 / len(MEMBERS)))

    hold_rows = frame.index[~is_dev]
    hold = frame.loc[hold_rows, KEYS].copy()
    t1 = time.perf_counter()
    hold["lightgbm"] = members.lightgbm_final(dev, frame)[hold_rows]
    timings["lightgbm"] += time.perf_counter() - t1
    for fam, fit in (("lstm", members.lstm), ("gnn", members.gnn)):
        t1 = time.perf_counter()
        hold[fam] = fit("holdout", dev, frame)[hold_rows]
        timings[fam] += time.perf_counter() - t1
    hold = hold.assign(**baselines(dev, hold))
    hold, n_hold_dropped = _common_rows(hold)
    w = ensemble_weights(history)
    weights["holdout"] = [float(v) for v in w]
    hold["ensemble"] = combine(hold, w)
    hold["ensemble_equal"] = combine(hold, np.full(len(MEMBERS), 1.0 / len(MEMBERS)))
    timings["total"] = time.perf_counter() - t0
    log(f"hold-out: {len(hold):,} rows scored; total {timings['total']:.0f}s")
    return ReportResult(cfg, tf, symbols, len(frame), frame_hash(frame, BOTH)[:16], oos, hold, weights,
                        {"development": n_dev_dropped, "holdout": n_hold_dropped}, timings,
                        members.importance, members.rounds)


# ------------------------------------------------------------------ metrics, plots, markdown


def metrics_table(df: pd.DataFrame, trading: TradingConfig, by_fold: bool = False) -> pd.DataFrame:
    """Return one row per model (and fold when ``by_fold``): the fold metrics plus Sharpe before fees."""
    gross = replace(trading, fee_bps=0.0)
    groups = list(df.groupby("fold", sort=True)) if by_fold else [("all", df)]
    out = []
    for fold, g in groups:
        for m in MODELS:
            r = fold_metrics(g["label"], g[m], g["fwd_ret"], g["symbol"], g["event_timestamp"], trading)
            rets, _ = sign_trading_returns(g[m], g["fwd_ret"], g["symbol"], g["event_timestamp"], gross)
            out.append({"fold": fold, "model": m, **r, "sharpe_gross": sharpe(rets, gross.timeframe, gross.horizon)})
    return pd.DataFrame(out)


def equity(df: pd.DataFrame, trading: TradingConfig) -> pd.DataFrame:
    """Return each model's cumulative after-fee log return of trading the sign (columns per model)."""
    curves = {m: sign_trading_returns(df[m], df["fwd_ret"], df["symbol"], df["event_timestamp"], trading)[0]
              for m in MODELS}
    return pd.DataFrame(curves).fillna(0.0).cumsum()


def plot_equity(df: pd.DataFrame, trading: TradingConfig, title: str, path: Path,
                marks: Sequence[pd.Timestamp] = ()) -> None:
    """Write a small PNG: equity curves after fees (left) and before fees (right), cumulative log return in %."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), dpi=80)
    styles = {"always_up": ":", "last_return_sign": ":", "ensemble_equal": "--"}
    for ax, cfg, name in ((axes[0], trading, f"after {trading.fee_bps:g} bps fees"),
                          (axes[1], replace(trading, fee_bps=0.0), "before fees")):
        curves = equity(df, cfg)
        for m in curves.columns:
            ax.plot(curves.index, 100 * curves[m], styles.get(m, "-"), lw=1.4 if m == "ensemble" else 0.9,
                    label=m)
        for t in marks:
            ax.axvline(t, color="grey", lw=0.5, alpha=0.6)
        ax.axhline(0, color="black", lw=0.5)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("cumulative log return, %", fontsize=8)
    axes[1].legend(fontsize=7, ncol=2, loc="best")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, (float, np.floating)):
        return "n/a" if not np.isfinite(v) else f"{v:.{digits}f}"
    return str(v)


def md_table(df: pd.DataFrame, cols: Sequence[str], digits: Mapping[str, int] | None = None) -> str:
    """Return a markdown table of ``cols`` of ``df``."""
    d = {"sharpe": 2, "sharpe_gross": 2, "turnover": 3, "n": 0, **(digits or {})}
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c], d.get(c, 4)) if c != "n" else f"{int(r[c]):,}"
                                       for c in cols) + " |")
    return "\n".join(lines)


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
