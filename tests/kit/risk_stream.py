"""A seeded market for decision-step tests: each close's bars and predictions."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np

from flows.records import Bar, Prediction

TF = 60_000


def closes(symbols: tuple[str, ...], n: int, signal: Callable[[int, int], int], seed: int = 11,
           ) -> Iterator[tuple[int, list[Bar], list[Prediction]]]:
    """Yield (close index, bars closing there, predictions at that close); ``signal(close, i)`` is -1, 0 or 1."""
    rng = np.random.default_rng(seed)
    px = {s: 100.0 * (i + 1) * np.exp(np.cumsum(rng.normal(0, 0.002, n + 1))) for i, s in enumerate(symbols)}
    for c in range(1, n + 1):
        bars = []
        for s in symbols:
            o, cl = float(px[s][c - 1]), float(px[s][c])
            bars.append(Bar(s, "1m", (c - 1) * TF, o, max(o, cl) * 1.001, min(o, cl) * 0.999, cl,
                            1_000.0, 1_000.0 * cl, 50, cl, 500.0))
        preds = []
        for i, s in enumerate(symbols):
            sig = signal(c, i)
            prob = {1: 0.9, 0: 0.1}.get(sig, 0.5)
            preds.append(Prediction(s, "1m", c * TF, {}, prob, abs(prob - 0.5) * 2, sig, math.nan, {}, 0.0, 0.01))
        yield c, bars, preds
