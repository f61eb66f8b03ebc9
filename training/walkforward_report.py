"""The walk-forward run behind ``python -m training.report``: features, folds, hold-out, metric tables.

Features from the flow's own operators over candle files, purged expanding
walk-forward of LightGBM, the LSTM and the GAT with an ensemble weighted on earlier
folds only, a hold-out scored once, and the baselines; see :mod:`training.report`
for the method in full and the command line.
"""

from __future__ import annotations

import gc
import hashlib
import json
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


def load_candles(data_dir: Path, symbols: Sequence[str] = (), start: str | None = None,
                 end: str | None = None) -> tuple[dict[str, pd.DataFrame], str]:
    """Read the candle files of ``data_dir`` (``BASE_QUOTE-TF.ext``); return per symbol frames and the timeframe.

    Raises:
        SettingsError: no candle files, mixed timeframes, or a requested symbol without a file.
    """
    from flows.sources.candle_files import CANDLE_EXTS, CandleFile, read_candles

    ms = [None if t is None else int(pd.Timestamp(t, tz="UTC").value // 1_000_000) for t in (start, end)]
    frames, tfs = {}, set()
    for path in sorted(p for p in Path(data_dir).iterdir() if p.suffix in CANDLE_EXTS):
        cf = CandleFile.from_path(path)
        symbol = cf.symbol
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
