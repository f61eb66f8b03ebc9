"""Section 2 of ``bench_scale.py``: per-close cost of the steps that see every symbol, at 10 and 200 symbols.

- risk engine + portfolio per close (``bench_risk.run``: bars to the engine, mark, every symbol
  decided against one snapshot, the portfolio row), the engine's correlations as matrices (what the
  engine takes from ``MATRIX_FROM`` symbols on) against the dictionary of pairs throughout, same run;
- the decision step's portfolio key per close, every symbol predicted (``bench_scale_decisions``:
  against the order book before its per-symbol index, same run, with the share of its time that
  depends on one symbol's state only);
- the cross-asset step per bar time (all symbols' returns -> feature rows), against the per-symbol
  loop it replaced (issue 21) on the same returns;
- the graph attention network per bar as the scorer runs it (``GnnRunner.score``: the bar's returns,
  the window's adjacency, one onnxruntime run), dense over all N assets against the same network
  on clusters of at most ``--cluster`` assets chosen from the window's correlations
  (``scoring.gnn_cluster_size``: one batched session run over the clusters).  Random weights
  (cost only: the model's quality at 200 assets is not measured here).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_flow import log
from bench_risk import run as risk_run
from bench_scale import universe_symbols
from bench_scale_decisions import decision_key_per_close

from flows.operators.cross_asset import CrossAssetStep
from flows.risk.config import RiskConfig
from flows.risk.engine import RiskEngine

TF = 60_000


def _pcts(times: list[float]) -> tuple[float, float]:
    s = sorted(times)
    return statistics.median(s) * 1e3, s[min(len(s) - 1, int(0.99 * len(s)))] * 1e3


def risk_per_close(n: int, closes: int, pairs: bool) -> float:
    """Return ms per close of the risk engine + portfolio for ``n`` symbols."""
    rng = np.random.default_rng(7)
    symbols = list(universe_symbols(n))
    factor = rng.normal(0, 0.002, (closes, 1))
    rets = (factor * rng.uniform(0.5, 1.5, n) + rng.normal(0, 0.002, (closes, n))).tolist()
    engine = RiskEngine(RiskConfig.model_validate({"sizing": {"method": "fixed_fraction", "fixed_fraction": 0.15}}))
    if pairs:
        engine.matrix_from = 10**9  # the dictionary of pairs throughout

    def decide(s: str, ts: int, frac: float, conf: float, price: float, snap: object) -> float:
        return engine.decide(s, ts, frac, conf, price, 0.01, snap, False).approved_qty_delta

    total, _, _ = risk_run(symbols, rets, decide, engine)
    return total / closes * 1e3


def cross_per_close(n: int, closes: int) -> dict[str, tuple[float, float]]:
    """Return p50/p99 ms of the cross-asset step per bar time for ``n`` symbols, and of the loop it replaced.

    ``step``: :class:`CrossAssetStep` fed every symbol's return of a bar time (``update`` per symbol,
    the join included); ``loop_before``: the per-symbol Python loop of before issue 21
    (``tests/kit/cross_asset_reference.py``) on the same complete bar times.
    """
    from tests.kit.cross_asset_reference import ReferenceCrossAsset

    symbols = universe_symbols(n)
    step, before = CrossAssetStep(symbols, tf_ms=TF), ReferenceCrossAsset(symbols)
    rng = np.random.default_rng(3)
    out: dict[str, list[float]] = {"step": [], "loop_before": []}
    for k in range(closes + 70):
        rets = rng.normal(0, 0.002, n).tolist()
        joined = dict(zip(symbols, rets, strict=True))
        t0 = time.perf_counter()
        for s, r in zip(symbols, rets, strict=True):
            step.update(s, k * TF, r)
        t1 = time.perf_counter()
        before.bar_time(k * TF, joined)
        if k >= 70:
            out["step"].append(t1 - t0)
            out["loop_before"].append(time.perf_counter() - t1)
    return {key: _pcts(v) for key, v in out.items()}


def gat_per_close(n: int, cluster: int, closes: int) -> dict[str, tuple[float, float]]:
    """Return p50/p99 ms per bar of the scorer's GAT step over ``n`` assets: dense, and on clusters of ``cluster``.

    ``inference.gnn_stream.GnnRunner.score`` as the scorer calls it (push the bar's returns, the
    window's adjacency, one onnxruntime run), with ``cluster_size`` 0 (dense ``N x N``) and
    ``cluster`` (clusters chosen from the window's correlations each bar, one batched run).
    """
    import torch

    from inference.gnn_stream import GnnRunner
    from training.export.torch_onnx import export_gnn
    from training.models.gnn import GnnConfig, GnnNet

    torch.manual_seed(0)
    cfg, feats, window = GnnConfig(), 25, 60
    net = GnnNet(feats, cfg.hidden, cfg.heads, 0.0).eval()
    rng = np.random.default_rng(1)
    m = min(n, cluster)
    onnx = export_gnn(net, rng.normal(size=(2, m, feats)), np.ones((2, m, m)), 1e-3).onnx
    symbols = universe_symbols(n)
    runners = {"dense": GnnRunner(onnx, symbols, window, 0.3, 0),
               "clusters": GnnRunner(onnx, symbols, window, 0.3, cluster)}
    factor = rng.normal(0, 0.002, (window + closes, 8))
    rets = factor[:, np.arange(n) % 8] + rng.normal(0, 0.002, (window + closes, n))
    x = rng.normal(size=(n, feats))
    out: dict[str, list[float]] = {"dense": [], "clusters": []}
    for t in range(window + closes):
        for key, runner in runners.items():
            t0 = time.perf_counter()
            runner.score(x, rets[t])
            if t >= window:
                out[key].append(time.perf_counter() - t0)
    return {key: _pcts(v) for key, v in out.items()}


def section_close(args: argparse.Namespace) -> dict[str, Any]:
    """Run section 2; return its figures."""
    res: dict[str, Any] = {}
    closes = min(args.closes, 100)
    timed: list[tuple[str, Callable[[], Any]]] = []
    for n in (10, 200):
        timed += [(f"risk_matrix_{n}", lambda n=n: min(risk_per_close(n, closes, False) for _ in range(3))),
                  (f"risk_pairs_before_{n}", lambda n=n: min(risk_per_close(n, closes, True) for _ in range(3))),
                  (f"decision_key_{n}", lambda n=n: decision_key_per_close(n, closes * 2)),
                  (f"cross_asset_{n}", lambda n=n: cross_per_close(n, args.closes)),
                  (f"gat_{n}", lambda n=n: gat_per_close(n, min(args.cluster, n), args.closes))]
    for name, fn in timed:
        res[name] = fn()
        res[name + "_load"] = os.getloadavg()[0]
        log(f"2: {name}: {res[name]} ms (load {res[name + '_load']:.1f})")
    return res


def close_to_intent(n: int, closes: int, registry: Path, tmp: Path, days: float) -> dict[str, float]:
    """Return p50/p99 ms per stage of bar close -> order intent at ``n`` symbols of the universe.

    ``bench_decisions.section_latency`` (the batch completing a bar time through parse -> bars
    -> features -> cross-asset, the flow's close barrier with scoring, the decision step on the
    paper broker, local profile) on ``n`` symbols, timed from the first close with predictions
    (the features' warm-up: ``closes`` must exceed it, e.g. 340 for ~100 timed closes).  The
    models of ``registry`` are bootstrapped once for these ``n`` symbols (``days`` of history):
    the GNN has every symbol of the universe as a node, scored dense up to
    ``scoring.gnn_cluster_size`` (20) symbols and on correlated clusters of at most 20 above.
    """
    from bench_decisions import ensure_registry, section_latency

    from flows.operators.model_bank import ModelBank
    from flows.settings import load_settings
    from inference.runners import GnnGraphRunner

    ensure_registry(registry, universe_symbols(n), tmp / f"boot{n}", days)
    settings = load_settings(env={"CRYPTOSTREAM_SYMBOLS": ",".join(universe_symbols(n)),
                                  "CRYPTOSTREAM_DATA_DIR": str(tmp / f"run{n}"), "CRYPTOSTREAM_PROFILE": "local",
                                  "CRYPTOSTREAM_SCORING__REGISTRY": str(registry),
                                  "CRYPTOSTREAM_BARS__TIMEFRAMES": "1m"})
    sc = settings.scoring
    bank = ModelBank(registry, "1m", sc.ensemble_version, sc.policy_family, sc.policy_version,
                     gnn_cluster_size=sc.gnn_cluster_size)
    gnn = bank.ensemble.scorer.runners["gnn"]
    assert isinstance(gnn, GnnGraphRunner)
    log(f"4: {n} symbols: the GNN has {len(gnn.symbols)} nodes, clusters of {gnn.runner.cluster_size or 'none (dense)'}")
    rows = section_latency(argparse.Namespace(closes=closes), settings, bank)
    return {r.figure: r.value for r in rows}


def section_intent(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Section 4: bar close to order intent at 200 symbols against 10 in the same run (target p99 <= 50 ms)."""
    res: dict[str, Any] = {}
    for n in (10, 200):
        registry = args.registry.with_name(f"{args.registry.name}-u{n}")  # a GNN over these n symbols
        res[str(n)] = close_to_intent(n, args.closes, registry, tmp, args.bootstrap_days)
        res[f"{n}_load"] = os.getloadavg()[0]
        log(f"4: close -> intent, {n} symbols: " + ", ".join(f"{k} {v:.1f}" for k, v in res[str(n)].items())
            + f" ms (load {res[f'{n}_load']:.1f})")
    return res
