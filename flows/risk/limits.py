"""Hard limits as position caps, and the rolling correlations the correlated-exposure limit uses.

Each cap is the largest ``|position|`` (base units) a symbol may hold given the
rest of the book; the engine clips its target into ``[-cap, cap]``:

- ``max_position``: ``max_position_fraction * equity / price``;
- ``max_gross_leverage``: ``(max_gross_leverage * equity - gross of the other symbols) / price``;
- ``max_correlated_exposure``: ``(max_correlated_fraction * equity - gross of the
  correlated symbols) / price``, where a symbol is correlated when it shares a
  group (``groups``) or ``|correlation| >= correlation_threshold`` (the caller's
  correlations, else the engine's over the last ``correlation_window`` bars).

Drawdown and the rolling daily loss do not cap a size: past them only
risk-reducing orders go through (see :mod:`flows.risk.engine`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from flows.risk.config import LimitsConfig


def gross_of(symbols: Iterable[str], positions: Mapping[str, float], prices: Mapping[str, float]) -> float:
    """Return the sum of ``|qty| * price`` over ``symbols``."""
    return sum(abs(positions[s]) * prices[s] for s in symbols)


def cap_qty(limit_value: float, used: float, price: float) -> float:
    """Return the quantity that fits into ``limit_value - used`` (quote) at ``price``, at least 0."""
    return max(0.0, (limit_value - used) / price)


class Correlations:
    """Rolling one-bar returns per symbol and their pairwise correlations on common bar times."""

    def __init__(self, cfg: LimitsConfig) -> None:
        """Keep ``correlation_window`` returns per symbol."""
        self.cfg = cfg
        self.returns: dict[str, deque[tuple[int, float]]] = {}
        self._cache: dict[tuple[str, str], tuple[tuple[int, int], float | None]] = {}

    def on_bar(self, symbol: str, ts: int, ret: float) -> None:
        """Add a symbol's return of the bar opening at ``ts``."""
        if not math.isfinite(ret):
            return
        q = self.returns.setdefault(symbol, deque(maxlen=self.cfg.correlation_window))
        if q and ts <= q[-1][0]:
            return
        q.append((ts, ret))

    def corr(self, a: str, b: str) -> float | None:
        """Return the correlation of two symbols' returns, or None with too few common bars."""
        key = (a, b) if a < b else (b, a)
        q0, q1 = self.returns.get(key[0]), self.returns.get(key[1])
        if not q0 or not q1:
            return None
        stamp = (q0[-1][0], q1[-1][0])
        hit = self._cache.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        other = dict(q1)
        pairs = [(x, other[t]) for t, x in q0 if t in other]
        value = _pearson(pairs) if len(pairs) >= self.cfg.correlation_min_bars else None
        self._cache[key] = (stamp, value)
        return value

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
        """Return the return windows as plain data."""
        return {s: [list(p) for p in q] for s, q in self.returns.items()}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back :meth:`to_state` output."""
        n = self.cfg.correlation_window
        self.returns = {s: deque(((int(t), float(r)) for t, r in v), maxlen=n) for s, v in state.items()}
        self._cache = {}


def _pearson(pairs: list[tuple[float, float]]) -> float | None:
    n = len(pairs)
    mx = sum(x for x, _ in pairs) / n
    my = sum(y for _, y in pairs) / n
    sxy = sum((x - mx) * (y - my) for x, y in pairs)
    sxx = sum((x - mx) ** 2 for x, _ in pairs)
    syy = sum((y - my) ** 2 for _, y in pairs)
    if sxx <= 0 or syy <= 0:
        return None
    return sxy / math.sqrt(sxx * syy)
