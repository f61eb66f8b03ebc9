"""The risk engine's correlations as they were before issue 21: a dictionary of pairs, updated per bar.

Kept as the reference the matrix form (:class:`flows.risk.limits.Correlations`) must equal bit for bit,
and as the same-run baseline of ``tests/bench/bench_scale.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from flows.risk.config import LimitsConfig


class PairCorrelations:
    """Exponentially weighted correlations of one-bar returns, updated on common bar times.

    RiskMetrics style: zero-mean EWMA of ``r_a * r_b``, ``r_a^2`` and ``r_b^2`` over
    the bars both symbols have (half-life ``correlation_halflife_bars``), so each
    bar costs one update per pair and a lookup costs nothing.
    """

    def __init__(self, cfg: LimitsConfig) -> None:
        """Start with no history."""
        self.cfg = cfg
        self.alpha = 1.0 - 0.5 ** (1.0 / cfg.correlation_halflife_bars)
        self.last: dict[str, tuple[int, float]] = {}
        self.pairs: dict[tuple[str, str], list[float]] = {}  # (a, b) sorted -> [n, s_ab, s_aa, s_bb]

    def on_bar(self, symbol: str, ts: int, ret: float) -> None:
        """Add a symbol's return of the bar opening at ``ts``; update its pairs with symbols that have that bar."""
        if not math.isfinite(ret):
            return
        prev = self.last.get(symbol)
        if prev is not None and ts <= prev[0]:
            return
        self.last[symbol] = (ts, ret)
        a = self.alpha
        for other, (t, r) in self.last.items():
            if t != ts or other == symbol:
                continue
            key, x, y = ((symbol, other), ret, r) if symbol < other else ((other, symbol), r, ret)
            st = self.pairs.get(key)
            if st is None:
                self.pairs[key] = [1.0, x * y, x * x, y * y]
            else:
                st[0] += 1.0
                st[1] += a * (x * y - st[1])
                st[2] += a * (x * x - st[2])
                st[3] += a * (y * y - st[3])

    def corr(self, a: str, b: str) -> float | None:
        """Return the correlation of two symbols' returns, or None with too few common bars."""
        st = self.pairs.get((a, b) if a < b else (b, a))
        if st is None or st[0] < self.cfg.correlation_min_bars or st[2] <= 0.0 or st[3] <= 0.0:
            return None
        return st[1] / math.sqrt(st[2] * st[3])

    def correlated(self, symbol: str, others: Iterable[str], given: Mapping[str, float] | None) -> list[str]:
        """Return the symbols among ``others`` correlated with ``symbol`` (group or correlation)."""
        cfg, group = self.cfg, self.cfg.groups.get(symbol)
        out = []
        for s in others:
            if group is not None and cfg.groups.get(s) == group:
                out.append(s)
                continue
            c = given.get(s) if given is not None and s in given else self.corr(symbol, s)
            if c is not None and math.isfinite(c) and abs(c) >= cfg.correlation_threshold:
                out.append(s)
        return out

    def to_state(self) -> dict[str, Any]:
        """Return the state as plain data."""
        return {"last": {s: list(v) for s, v in self.last.items()},
                "pairs": [[a, b, *v] for (a, b), v in self.pairs.items()]}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back :meth:`to_state` output."""
        self.last = {s: (int(t), float(r)) for s, (t, r) in state["last"].items()}
        self.pairs = {(p[0], p[1]): [float(x) for x in p[2:]] for p in state["pairs"]}
