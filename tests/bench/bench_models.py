"""Benchmark: scoring a bar with the full ensemble, and LightGBM walk-forward training time and memory.

Usage::

    .venv/bin/python tests/bench/bench_models.py [--data ../shared/data] [--sections 1 2] [--bars 2000]

1. Scoring.  A registry with LightGBM, the streaming LSTM, the GAT and the ensemble
   (trained briefly on the last ``--train-bars`` 1h bars of the 5 assets with the
   training CLI's default sizes: LSTM hidden 32 / bptt 32 / burn-in 32 / segment 512, GAT hidden 16 x 4 heads /
   graph window 60, LightGBM ``--rounds`` trees), loaded by
   ``EnsembleScorer.from_registry``.  Each of ``--bars`` later bars (5 symbols, bar
   times given) is scored once; p50/p99 in microseconds.  Baseline in the same run:
   the same models natively (lightgbm ``Booster.predict``, eager torch for the LSTM
   step with the same one carried state per symbol, and the GAT, numpy ensemble; all single-threaded
   like the sessions) on the same bars.  Then each member alone, both ways.  The paths
   run one after the other, not interleaved.
2. Training.  LightGBM purged walk-forward, 5 folds (``LightGBMModel.cross_validate``:
   early stopping per fold on a slice of its training side, ``--threads`` threads),
   on the 5 assets' 1h features (~187,000 rows) and the 10 assets' 5m features
   (~720,000 rows).  Features come from the flow's operators
   (``training.walkforward_report.feature_frame``; its time is printed but not counted).  Each
   training runs in a child process that reads the features from parquet; its peak
   RSS is ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` taken by a small launcher
   process after the child exits (not by this process: its own size would leak in
   through fork).
   Baselines in the same run: time of one LightGBM fit on all rows for the folds'
   median round count; peak RSS of a child that only reads the same parquet.

Not a test; the machines are shared and noisy: compare ratios.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

from training.walkforward_report import BAR_ONLY, BOTH, feature_frame, load_candles  # noqa: E402

SERVICES = {"lightgbm_1h_v1": BOTH, "lstm_1h_v1": BAR_ONLY, "gnn_1h_v1": BOTH}
MEMBERS = ("lightgbm", "lstm", "gnn")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


# ------------------------------------------------------------------ section 1: scoring


def build_registry(frame: pd.DataFrame, root: Path, rounds: int, seed: int = 7) -> dict[str, Any]:
    """Train each member briefly, export, register; return the native models."""
    from training.export.ensemble_onnx import export_ensemble
    from training.export.lightgbm_onnx import export_lightgbm
    from training.export.torch_onnx import export_gnn, export_lstm_seq, export_lstm_step
    from training.models.ensemble import Ensemble, EnsembleConfig
    from training.models.gnn import GnnClassifier, GnnConfig
    from training.models.graph import GraphConfig
    from training.models.lightgbm_model import LightGBMConfig, LightGBMModel
    from training.models.lstm import LstmClassifier, LstmConfig
    from training.registry import Parity, frame_hash, save_model

    bar = pd.Timedelta("1h")
    fit = frame[frame.event_timestamp < frame.event_timestamp.quantile(0.8)].reset_index(drop=True)
    held = frame[frame.event_timestamp >= frame.event_timestamp.quantile(0.8)].reset_index(drop=True)

    def save(family: str, files: dict[str, bytes], service: str, features: list[str], exp: Any,
             config: dict[str, Any], extra: dict[str, Any]) -> str:
        m = save_model(root, family, files=files, feature_service=service, features=features,
                       train_start=fit.event_timestamp.min(), train_end=fit.event_timestamp.max(),
                       data_hash=frame_hash(fit, features), seeds={"seed": seed},
                       config={**config, "timeframe": "1h"}, metrics={"folds": [], "mean": {}},
                       parity=Parity(exp.max_abs_diff, exp.tolerance, exp.checked_rows), extra=extra)
        return m.version

    lgb = LightGBMModel(LightGBMConfig(seed=seed, num_threads=2)).fit_final(fit, rounds, BOTH)
    exp = export_lightgbm(lgb, held[BOTH].to_numpy())
    versions = {"lightgbm": save("lightgbm", {"model.onnx": exp.onnx}, "lightgbm_1h_v1", BOTH, exp,
                                 lgb.config.to_dict(), {})}
    lcfg = LstmConfig(bptt=32, burn_in=32, segment=512, hidden=32, max_epochs=2, seed=seed)
    lstm = LstmClassifier(BAR_ONLY, lcfg).fit(fit, bar=bar)
    seqs = lstm.sequences(held, 64, bar)[:20]
    exp, seq = export_lstm_step(lstm, seqs), export_lstm_seq(lstm, seqs)
    versions["lstm"] = save("lstm", {"step.onnx": exp.onnx, "seq.onnx": seq.onnx}, "lstm_1h_v1", BAR_ONLY, exp,
                            asdict(lcfg), {"burn_in": lcfg.burn_in, "bptt": lcfg.bptt, "segment": lcfg.segment,
                                           "best_epoch": lstm.best_epoch})
    graph = GraphConfig(window=60)
    gnn = GnnClassifier(BOTH, GnnConfig(hidden=16, heads=4, max_epochs=2, seed=seed), graph).fit(fit)
    gs = gnn.graphs(held)
    exp = export_gnn(gnn, gs.x[:200], gs.adj[:200])
    versions["gnn"] = save("gnn", {"model.onnx": exp.onnx}, "gnn_1h_v1", BOTH, exp, asdict(gnn.config),
                           {"symbols": list(gnn.symbols), "graph": asdict(graph)})
    ens = Ensemble(EnsembleConfig(MEMBERS, (0.5, 0.25, 0.25), "confidence", threshold=0.1))
    exp = export_ensemble(ens, np.random.default_rng(seed).uniform(0.3, 0.7, (200, 3)))
    save_model(root, "ensemble", files={"ensemble.onnx": exp.onnx}, feature_service="ensemble_1h_v1",
               features=MEMBERS, train_start=fit.event_timestamp.min(), train_end=fit.event_timestamp.max(),
               data_hash="-", seeds={}, config=ens.config.to_dict(), metrics={"folds": [], "mean": {}},
               parity=Parity(exp.max_abs_diff, exp.tolerance, exp.checked_rows),
               extra={"members": versions, "ensemble": ens.config.to_dict()})
    return {"lightgbm": lgb, "lstm": lstm, "gnn": gnn, "ensemble": ens}


class Native:
    """The same models without onnxruntime: lightgbm Booster, eager torch, numpy ensemble."""

    def __init__(self, models: dict[str, Any], symbols: tuple[str, ...]) -> None:
        import torch

        from inference.graph import correlation_adjacency
        from inference.lstm_stream import LstmStreamRunner

        torch.set_num_threads(1)  # like the onnxruntime sessions: single-threaded
        self.torch, self.adjacency = torch, correlation_adjacency
        self.booster = models["lightgbm"].booster
        lstm, self.gnn, self.ens = models["lstm"], models["gnn"], models["ensemble"]
        net = lstm.net.eval()

        def step(x: np.ndarray, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            with torch.no_grad():
                logit, h2, c2 = net.step(torch.from_numpy(x), torch.from_numpy(h), torch.from_numpy(c))
            return torch.sigmoid(logit).double().numpy(), h2.numpy(), c2.numpy()

        c = lstm.config
        self.stream = LstmStreamRunner(step, c.layers, c.hidden, c.burn_in, 3_600_000 * 1_000_000)
        self.lstm_cols = [BOTH.index(f) for f in BAR_ONLY]
        self.ret = BOTH.index("ret_1")
        self.symbols = symbols
        self.rets = np.zeros((0, len(symbols)))

    def members(self, x: np.ndarray, bar_ts: int) -> dict[str, Any]:
        """Return each member's scoring function of one bar (rows of ``x`` in ``self.symbols`` order)."""
        torch = self.torch

        def lgb() -> np.ndarray:
            return np.asarray(self.booster.predict(x, num_threads=1))

        def lstm() -> np.ndarray:
            return self.stream.step(self.symbols, x[:, self.lstm_cols], np.full(len(self.symbols), bar_ts * 1_000_000))

        def gnn() -> np.ndarray:
            self.rets = np.vstack([self.rets, x[None, :, self.ret]])[-self.gnn.graph.window:]
            if len(self.rets) < self.gnn.graph.window:
                return np.full(len(self.symbols), np.nan)
            adj = self.adjacency(self.rets, self.gnn.graph.threshold)[None]
            with torch.no_grad():
                logits = self.gnn.net(torch.from_numpy(x[None].astype(np.float32)), torch.from_numpy(adj))
            return torch.sigmoid(logits)[0].double().numpy()

        return {"lightgbm": lgb, "lstm": lstm, "gnn": gnn}

    def score(self, x: np.ndarray, bar_ts: int, timings: dict[str, list[float]] | None = None) -> np.ndarray:
        """Return ensemble P(up) per symbol of one bar; add per-member microseconds to ``timings``."""
        probs = []
        for fam, fn in self.members(x, bar_ts).items():
            t0 = time.perf_counter_ns()
            probs.append(fn())
            if timings is not None:
                timings.setdefault(fam, []).append((time.perf_counter_ns() - t0) / 1e3)
        t0 = time.perf_counter_ns()
        p = self.ens.predict_proba(np.stack(probs, axis=1))
        if timings is not None:
            timings.setdefault("ensemble combine", []).append((time.perf_counter_ns() - t0) / 1e3)
        return p


def member_times(scorer: Any, rows: dict[str, np.ndarray], bar_ts: int, timings: dict[str, list[float]]) -> None:
    """Score one bar member by member through a second EnsembleScorer, timing each part."""
    symbols = tuple(rows)
    x = np.stack([rows[s] for s in symbols])
    probs = []
    for fam in MEMBERS:
        t0 = time.perf_counter_ns()
        probs.append(scorer.scorer.runners[fam].score(symbols, x, bar_ts=bar_ts))
        timings.setdefault(fam, []).append((time.perf_counter_ns() - t0) / 1e3)
    t0 = time.perf_counter_ns()
    scorer.session.run(["prob", "confidence", "signal"], {"probs": np.stack(probs, axis=1)})
    timings.setdefault("ensemble combine", []).append((time.perf_counter_ns() - t0) / 1e3)


def section_scoring(args: argparse.Namespace) -> list[tuple[str, float, str, float]]:
    """Section 1: one bar of 5 symbols through EnsembleScorer vs the native models."""
    from inference.runners import EnsembleScorer

    candles, tf = load_candles(Path(args.data) / "binance-spot-1h")
    frame = feature_frame({s: df.iloc[-(args.train_bars + args.bars + 200):] for s, df in candles.items()}, tf)
    times = np.sort(frame.event_timestamp.unique())
    train = frame[frame.event_timestamp < times[-args.bars - 100]].reset_index(drop=True)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        models = build_registry(train, Path(tmp), args.rounds)
        log(f"1: registry trained and exported in {time.perf_counter() - t0:.0f}s")
        scorer = EnsembleScorer.from_registry(tmp, SERVICES, feed=BOTH)
        parts = EnsembleScorer.from_registry(tmp, SERVICES, feed=BOTH)  # its own state: timed member by member
        symbols = tuple(sorted(frame.symbol.unique()))
        native, native_parts = Native(models, symbols), Native(models, symbols)
        onnx_us: list[float] = []
        native_us: list[float] = []
        onnx_by: dict[str, list[float]] = {}
        native_by: dict[str, list[float]] = {}
        bars = frame[frame.event_timestamp >= times[-args.bars - 100]]
        feed = []
        for t, g in bars.groupby("event_timestamp", sort=True):
            x = g.set_index("symbol").reindex(list(symbols))[BOTH].to_numpy(np.float64)
            feed.append((int(pd.Timestamp(t).value // 1_000_000), x, dict(zip(symbols, x, strict=True))))
        # one path at a time: interleaving them lets torch's and LightGBM's OpenMP threads, still
        # spinning after their call, take the core from the next onnxruntime call
        got = []
        for i, (ts, _, rows) in enumerate(feed):
            t1 = time.perf_counter_ns()
            out = scorer.score(rows, bar_ts=ts)
            t2 = time.perf_counter_ns()
            got.append(out["ensemble"].probability)
            if i >= 100:  # the first 100 bars warm the LSTM states (burn-in) and fill the graph window
                onnx_us.append((t2 - t1) / 1e3)
        for i, (ts, _, rows) in enumerate(feed):
            member_times(parts, rows, ts, onnx_by if i >= 100 else {})
        diffs = []
        for i, (ts, x, _) in enumerate(feed):
            t1 = time.perf_counter_ns()
            ref = native.score(x, ts)
            t2 = time.perf_counter_ns()
            if i >= 100:
                native_us.append((t2 - t1) / 1e3)
                diffs.append(float(np.nanmax(np.abs(got[i] - ref))))
        for i, (ts, x, _) in enumerate(feed):
            native_parts.score(x, ts, native_by if i >= 100 else {})
    log(f"1: {len(onnx_us)} bars scored; max |onnx - native| ensemble P(up) {max(diffs):.2e}")
    rows_out = []
    for q in (50, 99):
        rows_out.append((f"score 1 bar x 5 symbols, full ensemble (EnsembleScorer) p{q} us", pct(onnx_us, q),
                         f"native lightgbm + eager torch p{q} us", pct(native_us, q)))
    for part in (*MEMBERS, "ensemble combine"):
        for q in (50, 99):
            rows_out.append((f"  of which {part} (onnxruntime) p{q} us", pct(onnx_by[part], q),
                             f"{part} native p{q} us", pct(native_by[part], q)))
    return rows_out


# ------------------------------------------------------------------ section 2: training


def child_train(path: str, timeframe: str, threads: int, mode: str) -> None:
    """Child process: read the features; ``mode`` train = 5-fold walk-forward + one final fit, load = nothing more."""
    frame = pd.read_parquet(path)
    if mode == "load":
        print(json.dumps({"rows": len(frame)}))
        return
    from training.models.lightgbm_model import LightGBMConfig, LightGBMModel
    from training.validation import WalkForward, WalkForwardConfig

    cfg = LightGBMConfig(timeframe=timeframe, num_threads=threads, seed=7)
    t0, c0 = time.perf_counter(), time.process_time()
    splitter = WalkForward(frame["event_timestamp"], timeframe, WalkForwardConfig(n_splits=5))
    cv = LightGBMModel(cfg).cross_validate(frame, splitter, BOTH)
    wf, wf_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    LightGBMModel(cfg).fit_final(frame, cv.best_iterations, BOTH)
    one, one_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"rows": len(frame), "walk_forward_s": wf, "one_fit_s": one, "walk_forward_cpu_s": wf_cpu,
                      "one_fit_cpu_s": one_cpu, "rounds": cv.best_iterations, "auc": cv.mean["roc_auc"]}))


# A small interpreter starts each measured child and reports its children's peak RSS: a child
# forked straight from this (large) process would count this process's pages in its ru_maxrss.
LAUNCHER = ("import json, resource, subprocess, sys; "
            "r = subprocess.run(sys.argv[1:], capture_output=True, text=True, check=True); "
            "print(r.stdout.strip().splitlines()[-1]); "
            "print(json.dumps({'maxrss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))")


def _child(args: list[str]) -> tuple[dict[str, Any], float]:
    """Run this script as a measured child; return its JSON line and its peak RSS in MB."""
    cmd = [sys.executable, "-c", LAUNCHER, sys.executable, __file__, "--child", *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()
    return json.loads(out[-2]), json.loads(out[-1])["maxrss_kb"] / 1024  # Linux: kilobytes


def section_training(args: argparse.Namespace) -> list[tuple[str, float, str, float]]:
    """Section 2: LightGBM walk-forward on 5 x 1h and 10 x 5m features, time and peak RSS."""
    rows: list[tuple[str, float, str, float]] = []
    targets = {"1h": "<= 30 s", "5m": "<= 120 s"}
    with tempfile.TemporaryDirectory() as tmp:
        sets = [("binance-spot-1h", "1h")]
        if not args.skip_5m:
            sets.append(("binance-spot-5m-2024", "5m"))
        for folder, tf in sets:
            t0 = time.perf_counter()
            candles, tf_files = load_candles(Path(args.data) / folder)
            frame = feature_frame(candles, tf_files)
            path = Path(tmp) / f"{tf}.parquet"
            frame.to_parquet(path)
            log(f"2: {folder}: {len(frame):,} feature rows of {len(candles)} assets in {time.perf_counter() - t0:.0f}s"
                " (operators; not counted)")
            base, rss_load = _child([str(path), tf, str(args.threads), "load"])
            res, rss_train = _child([str(path), tf, str(args.threads), "train"])
            log(f"2: {tf}: {res}")
            label = f"LightGBM 5-fold walk-forward, {len(candles)} assets {tf} ({res['rows']:,} rows)"
            rows.append((f"{label}, s (target {targets[tf]})", res["walk_forward_s"],
                         "one fit on all rows, median rounds, s", res["one_fit_s"]))
            rows.append((f"{label}, CPU s ({args.threads} threads)", res["walk_forward_cpu_s"],
                         "one fit on all rows, CPU s", res["one_fit_cpu_s"]))
            rows.append((f"{label}, peak RSS MB", rss_train, "child that only reads the features, MB", rss_load))
            del frame, candles
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", nargs=4, metavar=("PARQUET", "TF", "THREADS", "MODE"), help=argparse.SUPPRESS)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--sections", nargs="+", type=int, default=[1, 2])
    p.add_argument("--bars", type=int, default=2000, help="section 1: bars timed")
    p.add_argument("--train-bars", type=int, default=3000, help="section 1: bars the models are trained on")
    p.add_argument("--rounds", type=int, default=200, help="section 1: LightGBM trees")
    p.add_argument("--threads", type=int, default=1, help="section 2: LightGBM threads (the project default, 1)")
    p.add_argument("--skip-5m", action="store_true", help="section 2: only the 1h set")
    args = p.parse_args()
    if args.child:
        child_train(args.child[0], args.child[1], int(args.child[2]), args.child[3])
        return 0
    if not (Path(args.data) / "binance-spot-1h").is_dir():
        log(f"needs the real market data under {args.data} (binance-spot-1h, binance-spot-5m-2024)")
        return 2
    rows: list[tuple[str, float, str, float]] = []
    if 1 in args.sections:
        rows += section_scoring(args)
    if 2 in args.sections:
        rows += section_training(args)
    print(f"{'figure':<78} {'value':>10}  {'baseline':<44} {'value':>10}  ratio")
    for name, v, bname, b in rows:
        print(f"{name:<78} {v:>10.1f}  {bname:<44} {b:>10.1f}  {v / b:5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
