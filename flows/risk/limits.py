"""Hard limits as position caps, and the rolling correlations the correlated-exposure limit uses.

Each cap is the largest ``|position|`` (base units) a symbol may hold given the
rest of the book; the engine clips its target into ``[-cap, cap]``:

- ``max_position``: ``max_position_fraction * equity / price``;
- ``max_gross_leverage``: ``(max_gross_leverage * equity - gross of the other symbols) / price``;
- ``max_correlated_exposure``: ``(max_correlated_fraction * equity - gross of the
  correlated symbols) / price``, where a symbol is correlated when it shares a
  group (``groups``) or ``|correlation| >= correlation_threshold`` (the caller's
  correlations, else the engine's exponentially weighted ones).

Drawdown and the rolling daily loss do not cap a size: past them only
risk-reducing orders go through (see :mod:`flows.risk.engine`).
"""

from __future__ import annotations

import math
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
        self._refs: dict[str, dict[str, list[float]]] = {}  # on_bars' lookups of ``pairs`` (the same lists)

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

    def on_bars(self, bars: list[tuple[str, int, float]]) -> None:
        """Take several bars, each (symbol, open time, return): the same as :meth:`on_bar` of each in order.

        :meth:`on_bar` looks for the symbols with the bar's time by scanning every symbol's last
        bar; here one scan per bar time finds them and the arrivals after it extend the list,
        kept in the order of ``last`` (so new pairs are created in the same order).
        """
        last, pairs, a, isfinite = self.last, self.pairs, self.alpha, math.isfinite
        refs = self._refs  # symbol -> other -> their pair's state list (the one in ``pairs``)
        pos: dict[str, int] | None = None  # symbol -> position in ``last`` (its iteration order)
        cur: int | None = None
        peers: list[tuple[str, float, float]] = []  # (symbol, return, its square) of the symbols whose last bar opened at ``cur``
        for symbol, ts, ret in bars:
            if not isfinite(ret):
                continue
            prev = last.get(symbol)
            if prev is not None and ts <= prev[0]:
                continue
            last[symbol] = (ts, ret)
            if prev is None:
                pos = None  # a new key: positions change
            if ts != cur:
                cur = ts
                peers = [(o, r, r * r) for o, (t, r) in last.items() if t == ts and o != symbol]
            sq = ret * ret
            mine = refs.get(symbol)
            if mine is None:
                mine = refs[symbol] = {}
            for other, r, r2 in peers:
                st = mine.get(other)
                if st is None:  # not seen from this side yet: by key (created here if new)
                    key = (symbol, other) if symbol < other else (other, symbol)
                    st = pairs.get(key)
                    if st is None:
                        xy, xx, yy = (ret * r, sq, r2) if symbol < other else (r * ret, r2, sq)
                        pairs[key] = [1.0, xy, xx, yy]
                        continue
                    mine[other] = st
                if symbol < other:
                    n, s_xy, s_xx, s_yy = st
                    st[:] = (n + 1.0, s_xy + a * (ret * r - s_xy), s_xx + a * (sq - s_xx), s_yy + a * (r2 - s_yy))
                else:
                    n, s_xy, s_xx, s_yy = st
                    st[:] = (n + 1.0, s_xy + a * (r * ret - s_xy), s_xx + a * (r2 - s_xx), s_yy + a * (sq - s_yy))
            peers.append((symbol, ret, sq))
            if len(peers) > 1:
                if pos is None:
                    pos = {s: i for i, s in enumerate(last)}
                if pos[peers[-2][0]] > pos[symbol]:
                    peers.sort(key=lambda p: pos[p[0]])  # type: ignore[index]

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
        self._refs = {}
