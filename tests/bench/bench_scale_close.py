"""Section 2 of ``bench_scale.py``: per-close cost of the steps that see every symbol, at 10 and 200 symbols.

- risk engine + portfolio per close (``bench_risk.run``: bars to the engine, mark, every symbol
  decided against one snapshot, the portfolio row), the engine's correlations as matrices (what the
  engine takes from ``MATRIX_FROM`` symbols on) against the dictionary of pairs throughout, same run;
- the cross-asset step per bar time (all symbols' returns -> feature rows);
- the graph attention network per bar: adjacency of the return window + one onnxruntime run,
  dense over all N assets against the same network on clusters of at most ``--cluster`` assets
  (block-diagonal graph: one batched session run over the clusters).  Random weights (cost only:
  the model's quality at 200 assets is not measured here).
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
from bench_flow import SYMBOL_POOL, log
from bench_risk import run as risk_run
from bench_scale import universe_symbols

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


def cross_per_close(n: int, closes: int) -> tuple[float, float]:
    """Return p50/p99 ms of the cross-asset step per bar time for ``n`` symbols."""
    symbols = universe_symbols(n)
    step = CrossAssetStep(symbols, tf_ms=TF)
    rng = np.random.default_rng(3)
    times = []
    for k in range(closes + 70):
        rets = rng.normal(0, 0.002, n).tolist()
        t0 = time.perf_counter()
        for s, r in zip(symbols, rets, strict=True):
            step.update(s, k * TF, r)
        if k >= 70:
            times.append(time.perf_counter() - t0)
    return _pcts(times)


def gat_per_close(n: int, cluster: int, closes: int) -> dict[str, tuple[float, float]]:
    """Return p50/p99 ms per bar of the GAT dense over ``n`` assets and on clusters of ``cluster``."""
    import torch

    from inference.graph import correlation_adjacency, window_adjacency
    from inference.scorer import open_session
    from training.export.torch_onnx import export_gnn
    from training.models.gnn import GnnConfig, GnnNet

    torch.manual_seed(0)
    cfg, feats, window = GnnConfig(), 25, 60
    net = GnnNet(feats, cfg.hidden, cfg.heads, 0.0).eval()
    rng = np.random.default_rng(1)
    k = -(-n // cluster)
    dense = open_session(export_gnn(net, rng.normal(size=(2, n, feats)), np.ones((2, n, n)), 1e-3).onnx)
    blocks = open_session(export_gnn(net, rng.normal(size=(2, cluster, feats)),
                                     np.ones((2, cluster, cluster)), 1e-3).onnx)
    out: dict[str, list[float]] = {"dense": [], "clusters": []}
    x = rng.normal(size=(1, n, feats)).astype(np.float32)
    xb = np.zeros((k, cluster, feats), np.float32)
    xb.reshape(-1, feats)[:n] = x[0]
    for _ in range(closes):
        rets = rng.normal(0, 0.002, (window, n))
        t0 = time.perf_counter()
        adj = window_adjacency(rets, 0.3)[None]
        dense.run(["prob"], {"x": x, "adj": adj})
        t1 = time.perf_counter()
        padded = np.zeros((window, k * cluster))
        padded[:, :n] = rets
        adjb = correlation_adjacency(padded.reshape(window, k, cluster).transpose(1, 0, 2), 0.3)
        blocks.run(["prob"], {"x": xb, "adj": adjb})
        t2 = time.perf_counter()
        out["dense"].append(t1 - t0)
        out["clusters"].append(t2 - t1)
    return {key: _pcts(v) for key, v in out.items()}


def section_close(args: argparse.Namespace) -> dict[str, Any]:
    """Run section 2; return its figures."""
    res: dict[str, Any] = {}
    closes = min(args.closes, 100)
    timed: list[tuple[str, Callable[[], Any]]] = []
    for n in (10, 200):
        timed += [(f"risk_matrix_{n}", lambda n=n: min(risk_per_close(n, closes, False) for _ in range(3))),
                  (f"risk_pairs_before_{n}", lambda n=n: min(risk_per_close(n, closes, True) for _ in range(3))),
                  (f"cross_asset_{n}", lambda n=n: cross_per_close(n, args.closes)),
                  (f"gat_{n}", lambda n=n: gat_per_close(n, min(args.cluster, n), args.closes))]
    for name, fn in timed:
        res[name] = fn()
        res[name + "_load"] = os.getloadavg()[0]
        log(f"2: {name}: {res[name]} ms (load {res[name + '_load']:.1f})")
    return res


def close_to_intent(n: int, closes: int, registry: Path, tmp: Path) -> dict[str, float]:
    """Return p50/p99 ms per stage of bar close -> order intent at ``n`` symbols of the universe.

    ``bench_decisions.section_latency`` (the batch completing a bar time through parse -> bars
    -> features -> cross-asset, the flow's close barrier with scoring, the decision step on the
    paper broker, local profile) on ``n`` symbols, timed from the first close with predictions
    (the features' warm-up: ``closes`` must exceed it, e.g. 340 for ~100 timed closes); the models of ``registry`` (bootstrapped once
    for the bench's five symbols if it holds none): the GNN scores the symbols it was trained on.
    """
    from bench_decisions import ensure_registry, section_latency

    from flows.operators.model_bank import ModelBank
    from flows.settings import load_settings

    ensure_registry(registry, SYMBOL_POOL[:5], tmp / "boot")
    settings = load_settings(env={"CRYPTOSTREAM_SYMBOLS": ",".join(universe_symbols(n)),
                                  "CRYPTOSTREAM_DATA_DIR": str(tmp / f"run{n}"), "CRYPTOSTREAM_PROFILE": "local",
                                  "CRYPTOSTREAM_SCORING__REGISTRY": str(registry),
                                  "CRYPTOSTREAM_BARS__TIMEFRAMES": "1m"})
    sc = settings.scoring
    bank = ModelBank(registry, "1m", sc.ensemble_version, sc.policy_family, sc.policy_version,
                     gnn_cluster_size=sc.gnn_cluster_size)
    rows = section_latency(argparse.Namespace(closes=closes), settings, bank)
    return {r.figure: r.value for r in rows}


def section_intent(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Section 4: bar close to order intent at 200 symbols against 10 in the same run (target p99 <= 50 ms)."""
    res: dict[str, Any] = {}
    for n in (10, 200):
        res[str(n)] = close_to_intent(n, args.closes, args.registry, tmp)
        res[f"{n}_load"] = os.getloadavg()[0]
        log(f"4: close -> intent, {n} symbols: " + ", ".join(f"{k} {v:.1f}" for k, v in res[str(n)].items())
            + f" ms (load {res[f'{n}_load']:.1f})")
    return res
