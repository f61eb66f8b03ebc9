"""Train, validate, export and register a model family.

    python -m training.train {lightgbm,lstm,gnn,ensemble} --symbols BTC/USDT ETH/USDT \\
        --timeframe 1h --start 2021-01-01 --end 2024-01-01 [--horizon 1] [--registry DIR] \\
        [--seed 7] [--folds 5]

For ``lightgbm``, ``lstm`` and ``gnn``: build the point-in-time training set
(``training.datasets.build_training_set``; feature service ``lightgbm_<tf>_v1``
for LightGBM and the GAT, ``lstm_<tf>_v1`` for the LSTM), run purged expanding
walk-forward validation (``training/validation.py``; every fold's model sees only
its purged training side, early stopping inside it), fit the final model on all
rows, export it to ONNX (accepted only on parity, measured on the last fold's test
rows), and save it with a full manifest and the out-of-sample fold predictions
(``oos.csv``) to the registry.  The LSTM registers two graphs, ``step.onnx`` (one bar)
and ``seq.onnx`` (a stretch of bars), and ``extra`` = burn_in, bptt, segment, best
epoch (``--bptt``, ``--burn-in``, ``--segment``).  The neural models write per-epoch losses to
``<log-dir>/<family>/fold-<k>|final`` (TensorBoard event files).

For ``ensemble``: read the latest manifest of each member family, take
performance weights (``max(AUC - 0.5, 0)`` of the walk-forward means; ``--method``
changes that), join the members' out-of-sample predictions, score the ensemble on
them (the weights come from the same folds' means, so these ensemble figures are
mildly optimistic), export the ensemble graph with parity on those rows and save
it with the member versions it was built from.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from tqdm import tqdm

from flows.cli import HelpFormatter
from flows.settings import Settings, SettingsError, load_settings
from training.export import OnnxExport
from training.metrics import TradingConfig, fold_metrics, mean_metrics
from training.registry import Manifest, Parity, default_root, frame_hash, load_manifest, save_model
from training.validation import WalkForward, WalkForwardConfig

FAMILIES = ("lightgbm", "lstm", "gnn", "ensemble")
MEMBERS = ("lightgbm", "lstm", "gnn")
KEYS = ("symbol", "event_timestamp", "label", "fwd_ret")


@dataclass(frozen=True)
class TrainJob:
    """One ``python -m training.train`` run, built from the command line and the settings in :func:`main`."""

    family: str
    registry: Path
    log_dir: Path
    work_dir: Path
    symbols: tuple[str, ...] = ()
    timeframe: str = "1h"
    ensemble_timeframe: str | None = None  # ensemble: the members' timeframe (None: their only one)
    start: str | None = None
    end: str | None = None
    horizon: int = 1
    seed: int = 7
    folds: int = 5
    epochs: int = 30
    hidden: int = 32
    bptt: int = 32
    burn_in: int = 32
    segment: int = 512
    graph_window: int = 60
    members: tuple[str, ...] = MEMBERS
    method: Literal["fixed", "performance", "confidence"] = "performance"
    metric: Literal["roc_auc", "sharpe"] = "roc_auc"
    weights: tuple[float, ...] | None = None
    threshold: float = 0.1
    calibrate: bool = True  # ensemble: Platt's map fitted on the members' out-of-sample rows
    lgb_params: Mapping[str, Any] = field(default_factory=dict)  # LightGBM parameters over DEFAULT_PARAMS


def service_for(family: str, timeframe: str) -> str:
    """Return the feature service a family is trained on and fed."""
    return f"{'lstm' if family == 'lstm' else 'lightgbm'}_{timeframe}_v1"


def _oos_csv(oos: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    out = oos.assign(event_timestamp=pd.to_datetime(oos["event_timestamp"], utc=True).map(pd.Timestamp.isoformat))
    out.to_csv(buf, index=False, float_format="%.10g")
    return buf.getvalue().encode()


def _read_oos(root: Path, m: Manifest) -> pd.DataFrame:
    df = pd.read_csv(root / m.family / m.version / "oos.csv")
    df["event_timestamp"] = pd.to_datetime(df["event_timestamp"], utc=True)
    return df


def walk_forward(frame: pd.DataFrame, splitter: WalkForward, trading: TradingConfig,
                 fit_predict: Callable[[int, pd.DataFrame, pd.DataFrame], np.ndarray]
                 ) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Run ``fit_predict(fold, train_rows, rows_up_to_fold_end) -> P(up) per row`` on every fold.

    The second frame holds every row up to the fold's last time, so sequence and graph
    models have the history they need; only the fold's own rows are scored.
    """
    folds, oos = [], []
    for split in tqdm(splitter.splits(), desc="walk-forward", unit="fold"):
        ts = pd.to_datetime(frame["event_timestamp"], utc=True)
        upto = frame[ts <= split.test_end]
        p_all = fit_predict(split.fold, frame.iloc[split.train], upto)
        p = pd.Series(p_all, index=upto.index).reindex(frame.index[split.test]).to_numpy()
        t = frame.iloc[split.test].assign(p=p)
        t = t[np.isfinite(t["p"])]
        m = fold_metrics(t["label"], t["p"], t["fwd_ret"], t["symbol"], t["event_timestamp"], trading)
        folds.append({"fold": split.fold, "train_rows": int(len(split.train)), "test_start":
                      split.test_start.isoformat(), "test_end": split.test_end.isoformat(), **m})
        oos.append(t[["symbol", "event_timestamp", "label", "fwd_ret", "p"]].assign(fold=split.fold))
    return folds, pd.concat(oos, ignore_index=True)


def _train_lightgbm(a: TrainJob, frame: pd.DataFrame, features: list[str], splitter: WalkForward
                    ) -> tuple[dict[str, bytes], OnnxExport, list[dict[str, Any]], pd.DataFrame,
                               dict[str, Any], dict[str, Any]]:
    from training.export.lightgbm_onnx import export_lightgbm
    from training.models.lightgbm_model import DEFAULT_PARAMS, LightGBMConfig, LightGBMModel

    cfg = LightGBMConfig(horizon=a.horizon, seed=a.seed, timeframe=a.timeframe,
                         params={**DEFAULT_PARAMS, **a.lgb_params})
    model = LightGBMModel(cfg)
    cv = model.cross_validate(frame, splitter, features)
    model.fit_final(frame, cv.best_iterations, features)
    exp = export_lightgbm(model, frame.iloc[splitter.splits()[-1].test][features].to_numpy(np.float64))
    native = model.save(Path(a.work_dir) / "lightgbm")
    return ({"model.onnx": exp.onnx, **native}, exp, cv.folds, cv.oos, cfg.to_dict(),
            {"final_rounds": model.final_rounds,
             "gain": {k: float(v) for k, v in model.feature_importance().items()}})


def run_log_dir(parent: Path, seed: int) -> Path:
    """Return a new TensorBoard directory for one training run: ``<parent>/<UTC time>-seed<seed>[-n]``.

    Runs never share a directory, so TensorBoard shows each as its own run (the name changes no model).
    """
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out, n = parent / f"{stamp}-seed{seed}", 1
    while out.exists():
        n += 1
        out = parent / f"{stamp}-seed{seed}-{n}"
    out.mkdir(parents=True)
    return out


def _train_torch(a: TrainJob, frame: pd.DataFrame, features: list[str], splitter: WalkForward,
                 trading: TradingConfig) -> tuple[dict[str, bytes], OnnxExport, list[dict[str, Any]],
                                                  pd.DataFrame, dict[str, Any], dict[str, Any]]:
    from training.export.torch_onnx import export_gnn, export_lstm_seq, export_lstm_step
    from training.models.gnn import GnnClassifier, GnnConfig
    from training.models.graph import GraphConfig
    from training.models.lstm import LstmClassifier, LstmConfig

    bar = pd.Timedelta(a.timeframe)
    logs = run_log_dir(Path(a.log_dir) / a.family, a.seed)
    last_test = frame.iloc[splitter.splits()[-1].test]
    if a.family == "lstm":
        base = LstmConfig(bptt=a.bptt, burn_in=a.burn_in, segment=a.segment, hidden=a.hidden,
                          max_epochs=a.epochs, seed=a.seed)

        def lstm_fp(fold: int, train: pd.DataFrame, upto: pd.DataFrame) -> np.ndarray:
            c = LstmConfig(**{**asdict(base), "log_dir": str(logs / f"fold-{fold}")})
            return LstmClassifier(features, c).fit(train, bar=bar).predict_proba(upto, bar=bar)

        folds, oos = walk_forward(frame, splitter, trading, lstm_fp)
        lstm = LstmClassifier(features, LstmConfig(**{**asdict(base), "log_dir": str(logs / "final")}))
        lstm.fit(frame, bar=bar)
        # parity rows: the last fold's test bars, as pieces of runs of consecutive bars
        for length in (64, 16, 4, 1):
            seqs = lstm.sequences(last_test, length, bar)[-50:]
            if len(seqs):
                break
        step, seq = export_lstm_step(lstm, seqs), export_lstm_seq(lstm, seqs)
        files = {"step.onnx": step.onnx, "seq.onnx": seq.onnx}
        exp = OnnxExport(step.onnx, step.inputs, step.outputs, max(step.max_abs_diff, seq.max_abs_diff),
                         step.tolerance, step.checked_rows + seq.checked_rows, step.opset)
        extra = {"burn_in": a.burn_in, "bptt": a.bptt, "segment": a.segment, "best_epoch": lstm.best_epoch}
        return files, exp, folds, oos, asdict(base), extra
    gbase, graph = GnnConfig(hidden=a.hidden, max_epochs=a.epochs, seed=a.seed), GraphConfig(window=a.graph_window)
    symbols = tuple(sorted(frame["symbol"].unique()))

    def gnn_fp(fold: int, train: pd.DataFrame, upto: pd.DataFrame) -> np.ndarray:
        c = GnnConfig(**{**asdict(gbase), "log_dir": str(logs / f"fold-{fold}")})
        return GnnClassifier(features, c, graph, symbols).fit(train).predict_proba(upto)

    folds, oos = walk_forward(frame, splitter, trading, gnn_fp)
    gnn = GnnClassifier(features, GnnConfig(**{**asdict(gbase), "log_dir": str(logs / "final")}), graph, symbols)
    gnn.fit(frame)
    gs = gnn.graphs(frame)
    sel = gs.times >= pd.Timestamp(last_test.event_timestamp.min())
    g = export_gnn(gnn, gs.x[sel], gs.adj[sel])
    exp = OnnxExport(g.onnx, g.inputs, g.outputs, g.max_abs_diff, g.tolerance, g.checked_rows, g.opset)
    return ({"model.onnx": exp.onnx}, exp, folds, oos, asdict(gbase),
            {"symbols": list(symbols), "graph": asdict(graph), "best_epoch": gnn.best_epoch})


def train_member(a: TrainJob, settings: Settings) -> Manifest:
    """Train, validate, export and register one of lightgbm / lstm / gnn."""
    if not (a.symbols and a.start and a.end):
        raise SettingsError("--symbols, --start and --end are required to train a model")
    from training.datasets import build_training_set

    service = service_for(a.family, a.timeframe)
    frame = build_training_set(settings, tuple(a.symbols), a.timeframe, a.start, a.end, service, a.horizon)
    if frame.empty:
        raise SettingsError(f"no training rows for {a.symbols} {a.timeframe} in [{a.start}, {a.end})")
    # nanosecond times: the LSTM's run split compares asi8 differences against Timedelta.value (ns)
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True).dt.as_unit("ns")
    features = [c for c in frame.columns if c not in KEYS]
    wf = WalkForwardConfig(n_splits=a.folds, horizon=a.horizon)
    splitter = WalkForward(frame["event_timestamp"], a.timeframe, wf)
    trading = TradingConfig(timeframe=a.timeframe, horizon=a.horizon)
    if a.family == "lightgbm":
        files, exp, folds, oos, cfg, extra = _train_lightgbm(a, frame, features, splitter)
    else:
        files, exp, folds, oos, cfg, extra = _train_torch(a, frame, features, splitter, trading)
    numeric = [{k: v for k, v in f.items() if isinstance(v, float)} for f in folds]
    files["oos.csv"] = _oos_csv(oos)
    config = {"model": cfg, "walk_forward": asdict(wf), "symbols": list(a.symbols), "timeframe": a.timeframe,
              "horizon": a.horizon, "start": a.start, "end": a.end}
    ts = pd.to_datetime(frame["event_timestamp"], utc=True)
    return save_model(a.registry, a.family, files=files, feature_service=service, features=features,
                      train_start=ts.min(), train_end=ts.max(), data_hash=frame_hash(frame, features),
                      seeds={"seed": a.seed}, config=config, symbols=sorted(frame["symbol"].unique()),
                      metrics={"folds": folds, "mean": mean_metrics(numeric)},
                      parity=Parity(exp.max_abs_diff, exp.tolerance, exp.checked_rows), extra=extra)


def train_ensemble(a: TrainJob) -> Manifest:
    """Build, evaluate, export and register the ensemble of the latest member models."""
    from training.export.ensemble_onnx import export_ensemble
    from training.models.ensemble import Ensemble, EnsembleConfig, performance_weights

    members = tuple(a.members)
    mans = {m: load_manifest(a.registry, m, timeframe=a.ensemble_timeframe) for m in members}
    tfs = {m: mans[m].timeframe for m in members}
    if len(set(tfs.values())) > 1:
        raise SettingsError(f"the members are of different timeframes ({tfs}): pass --timeframe to combine one's")
    if a.method == "fixed":
        weights = np.asarray(a.weights or [1.0] * len(members), np.float64)
    else:
        weights = performance_weights({m: mans[m].metrics["mean"] for m in members}, members, a.metric)
    cfg = EnsembleConfig(members, tuple(weights), a.method, a.threshold,
                         {"metric": a.metric, "means": {m: mans[m].metrics["mean"] for m in members}})
    ens = Ensemble(cfg)
    joined = joined_oos(Path(a.registry), mans, members)
    probs = joined[list(members)].to_numpy(np.float64)
    calibration, check = calibrate_on(ens.predict_raw(probs), joined["label"].to_numpy(), a.calibrate)
    ens = Ensemble(replace(cfg, calibration=calibration))
    exp = export_ensemble(ens, probs)
    p = ens.predict_proba(probs)
    ok = np.isfinite(p)
    tf = tfs[members[0]] or mans[members[0]].config.get("timeframe", a.timeframe)
    horizon = int(mans[members[0]].config.get("horizon", a.horizon))
    j = joined[ok]
    metrics = fold_metrics(j["label"], p[ok], j["fwd_ret"], j["symbol"], j["event_timestamp"],
                           TradingConfig(timeframe=tf, horizon=horizon))
    ts = pd.to_datetime(joined["event_timestamp"], utc=True)
    return save_model(a.registry, "ensemble", files={"ensemble.onnx": exp.onnx}, feature_service=f"ensemble_{tf}_v1",
                      features=members, train_start=ts.min(), train_end=ts.max(),
                      data_hash=frame_hash(joined, members),
                      symbols=sorted({s for m in members for s in mans[m].symbols} or set(joined["symbol"])),
                      seeds={m: mans[m].seeds.get("seed", 0) for m in members}, config=cfg.to_dict(),
                      metrics={"folds": [], "mean": metrics, "note": "on the members' out-of-sample rows",
                               "calibration": check},
                      parity=Parity(exp.max_abs_diff, exp.tolerance, exp.checked_rows),
                      extra={"members": {m: mans[m].version for m in members}, "ensemble": ens.config.to_dict(),
                             "horizon": horizon})


def joined_oos(registry: Path, mans: dict[str, Manifest], members: Sequence[str]) -> pd.DataFrame:
    """Return the members' out-of-sample predictions joined on (symbol, time), in time order."""
    joined: pd.DataFrame | None = None
    for m in members:
        o = _read_oos(registry, mans[m]).rename(columns={"p": m})
        o = o[["symbol", "event_timestamp", "label", "fwd_ret", m]]
        joined = o if joined is None else joined.merge(o, on=["symbol", "event_timestamp", "label", "fwd_ret"],
                                                       how="outer")
    if joined is None:
        raise SettingsError("an ensemble needs at least one member")
    return joined.sort_values(["event_timestamp", "symbol"]).reset_index(drop=True)


def calibrate_on(raw: np.ndarray, label: np.ndarray, enabled: bool = True, fit_share: float = 0.7
                 ) -> tuple[tuple[float, float], dict[str, Any]]:
    """Fit Platt's map on the out-of-sample rows; return it and an honest check of it.

    The check fits the map on the first ``fit_share`` of the rows (in time order) and
    scores the rest: Brier score and log loss before and after.  The map exported is
    then fitted on every row.  ``enabled=False`` returns the identity.
    """
    from training.models.ensemble import calibrate, fit_platt

    if not enabled:
        return (1.0, 0.0), {}
    ok = np.isfinite(raw)
    r, y = raw[ok], label[ok].astype(np.float64)
    cut = int(len(r) * fit_share)
    if cut < 100 or len(r) - cut < 100:
        return (1.0, 0.0), {"note": "too few out-of-sample rows to calibrate: none"}
    held = calibrate(r[cut:], fit_platt(r[:cut], y[:cut]))

    def brier(q: np.ndarray) -> float:
        return float(np.mean((q - y[cut:]) ** 2))

    def logloss(q: np.ndarray) -> float:
        q = np.clip(q, 1e-12, 1 - 1e-12)
        return float(-np.mean(y[cut:] * np.log(q) + (1 - y[cut:]) * np.log(1 - q)))

    a, b = fit_platt(r, y)
    return (a, b), {"slope": a, "intercept": b, "rows_checked": float(len(r) - cut),
                    "brier_raw": brier(r[cut:]), "brier_calibrated": brier(held),
                    "logloss_raw": logloss(r[cut:]), "logloss_calibrated": logloss(held)}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line (see module docstring): ``FAMILY [options]``, one sub-command per family.

    The members (lightgbm, lstm, gnn) require ``--symbols``, ``--start`` and ``--end``; the
    ensemble combines registered members and needs no training window.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="settings file (default: environment / defaults)")
    common.add_argument("--timeframe", help="bar timeframe (members: default 1h; ensemble: default the members' "
                        "one timeframe)")
    common.add_argument("--horizon", type=int, default=1, help="label horizon in bars")
    common.add_argument("--registry", type=Path, help="registry root (default <data_dir>/registry)")
    common.add_argument("--seed", type=int, default=7)
    common.add_argument("--folds", type=int, default=5)
    common.add_argument("--log-dir", type=Path, help="neural models' logs (default <data_dir>/logs)")
    common.add_argument("--epochs", type=int, default=30, help="lstm/gnn maximum epochs")
    common.add_argument("--hidden", type=int, default=32, help="lstm/gnn hidden size")
    common.add_argument("--bptt", type=int, default=32, help="lstm rows per truncated-BPTT chunk")
    common.add_argument("--burn-in", type=int, default=32,
                        help="lstm bars after a zero state, neither trained nor scored")
    common.add_argument("--segment", type=int, default=512,
                        help="lstm rows per training segment (zero state at its start)")
    common.add_argument("--graph-window", type=int, default=60, help="gnn correlation window in bars")
    common.add_argument("--members", nargs="+", default=list(MEMBERS), help="ensemble members")
    common.add_argument("--method", choices=("fixed", "performance", "confidence"), default="performance",
                        help="ensemble weighting")
    common.add_argument("--metric", choices=("roc_auc", "sharpe"), default="roc_auc",
                        help="ensemble: the members' score behind performance weights")
    common.add_argument("--weights", type=float, nargs="+", help="fixed/confidence base weights (default equal)")
    common.add_argument("--threshold", type=float, default=0.1, help="ensemble minimum confidence for a signal")
    common.add_argument("--no-calibration", action="store_true",
                        help="ensemble: export the raw weighted probability (no Platt map)")
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="family", required=True, metavar="FAMILY", help=" | ".join(FAMILIES))
    for family in FAMILIES:
        member = family != "ensemble"
        f = sub.add_parser(family, parents=[common], formatter_class=HelpFormatter,
                           help="combine the registered members" if not member else f"train a {family} model")
        window = f.add_argument_group("training window" + ("" if member else " (not used by the ensemble)"))
        window.add_argument("--symbols", nargs="+", default=[], required=member, help="ccxt symbols")
        window.add_argument("--start", required=member, help="first bar time, ISO 8601 UTC")
        window.add_argument("--end", required=member, help="end (exclusive), ISO 8601 UTC")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit code."""
    ns = parse_args(argv)
    try:
        settings = load_settings(ns.config)
        a = TrainJob(family=ns.family, registry=Path(ns.registry or default_root(settings.data_dir)),
                     log_dir=Path(ns.log_dir or Path(settings.data_dir) / "logs"),
                     work_dir=Path(settings.data_dir) / "work", symbols=tuple(ns.symbols),
                     timeframe=ns.timeframe or "1h", ensemble_timeframe=ns.timeframe, start=ns.start, end=ns.end, horizon=ns.horizon, seed=ns.seed,
                     folds=ns.folds, epochs=ns.epochs, hidden=ns.hidden, bptt=ns.bptt, burn_in=ns.burn_in,
                     segment=ns.segment, graph_window=ns.graph_window, members=tuple(ns.members),
                     method=ns.method, metric=ns.metric,
                     weights=None if ns.weights is None else tuple(ns.weights), threshold=ns.threshold,
                     calibrate=not ns.no_calibration)
        if a.family == "ensemble":
            m = train_ensemble(a)
        else:
            m = train_member(a, settings)
    except (SettingsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    mean = {k: round(v, 4) for k, v in m.metrics.get("mean", {}).items() if isinstance(v, float)}
    print(f"{m.family}/{m.version} -> {Path(a.registry) / m.family / m.version}\n"
          f"parity max |diff| {m.parity.max_abs_diff:.2e} on {m.parity.rows} rows; walk-forward mean {mean}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
