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

import numpy as np

from flows.risk.config import LimitsConfig


def gross_of(symbols: Iterable[str], positions: Mapping[str, float], prices: Mapping[str, float]) -> float:
    """Return the sum of ``|qty| * price`` over ``symbols``."""
    return sum(abs(positions[s]) * prices[s] for s in symbols)


def cap_qty(limit_value: float, used: float, price: float) -> float:
    """Return the quantity that fits into ``limit_value - used`` (quote) at ``price``, at least 0."""
    return max(0.0, (limit_value - used) / price)


_SMALL_BLOCK = 64  # pair updates of one bar time below which a Python loop beats numpy's calls


class Correlations:
    """Exponentially weighted correlations of one-bar returns, updated on common bar times.

    RiskMetrics style: zero-mean EWMA of ``r_a * r_b``, ``r_a^2`` and ``r_b^2`` over
    the bars both symbols have (half-life ``correlation_halflife_bars``), so each
    bar costs one update per pair and a lookup costs nothing.

    The pairs live in ``[n, n]`` numpy matrices (count, product, and each side's
    square, which differs per pair because a pair only counts its common bars), so a
    bar updates its row in one vectorised step and :meth:`correlated` reads one row:
    at 200 symbols the per-symbol Python loops over pairs cost 400 ms per close
    (``tests/bench/bench_scale.py``, issue 21).  Every element goes through the same
    float operations, in the same order, as the per-pair form did, so the values are
    bit for bit those of the dictionary of pairs it replaces
    (``tests/unit/flows/risk/test_correlations_matrix.py``).
    """

    def __init__(self, cfg: LimitsConfig) -> None:
        """Start with no history."""
        self.cfg = cfg
        self.alpha = 1.0 - 0.5 ** (1.0 / cfg.correlation_halflife_bars)
        self.index: dict[str, int] = {}
        self.names: list[str] = []
        self._pending: list[int] = []  # slots with a bar at _pending_ts whose pairs are not updated yet
        self._pending_ts = np.iinfo(np.int64).min
        self._peers: np.ndarray | None = None  # correlated pairs as of the last update, computed when read
        self.last_ts: np.ndarray = np.zeros(0, np.int64)
        self.last_ret: np.ndarray = np.zeros(0)
        self.count: np.ndarray = np.zeros((0, 0))
        self.prod: np.ndarray = np.zeros((0, 0))
        self.sq: np.ndarray = np.zeros((0, 0))
        self._grow(8)

    def _grow(self, cap: int) -> None:
        old = len(self.index)
        ts = np.full(cap, np.iinfo(np.int64).min, np.int64)
        ret = np.zeros(cap)
        mats = [np.zeros((cap, cap)) for _ in range(3)]
        if old:
            ts[:old], ret[:old] = self.last_ts[:old], self.last_ret[:old]
            for new, cur in zip(mats, (self.count, self.prod, self.sq), strict=True):
                new[:old, :old] = cur[:old, :old]
        self.last_ts, self.last_ret = ts, ret
        self.count, self.prod, self.sq = mats  # sq[i, j]: EWMA of r_i ** 2 over the bars i shares with j

    def _slot(self, symbol: str) -> int:
        i = self.index.get(symbol)
        if i is None:
            i = len(self.names)
            if i >= len(self.last_ts):
                self._grow(2 * len(self.last_ts))
            self.index[symbol] = i
            self.names.append(symbol)
        return i

    @property
    def last(self) -> dict[str, tuple[int, float]]:
        """Return each symbol's last bar (open time, return)."""
        self._flush()
        return {s: (int(self.last_ts[i]), float(self.last_ret[i])) for s, i in self.index.items()}

    def on_bar(self, symbol: str, ts: int, ret: float) -> None:
        """Add a symbol's return of the bar opening at ``ts``; update its pairs with symbols that have that bar.

        The pair updates of one bar time are held until a bar of another time arrives or
        the correlations are read, then applied as one block (:meth:`_flush`): each pair
        still gets exactly one update per common bar, from its own state and the two
        returns, so the result does not depend on the grouping.
        """
        if not math.isfinite(ret):
            return
        i = self.index.get(symbol)
        if i is not None and ts <= self.last_ts[i]:
            return
        if ts != self._pending_ts:
            self._flush()
            self._pending_ts = ts
        i = self._slot(symbol)
        self.last_ts[i], self.last_ret[i] = ts, ret
        self._pending.append(i)

    def _flush(self) -> None:
        """Apply the held bar time's pair updates: new bars with each other and with that time's earlier bars."""
        if not self._pending:
            return
        new = np.array(self._pending, np.intp)
        self._pending = []
        n = len(self.names)
        self._peers = None
        at = self.last_ts[:n] == self._pending_ts
        at[new] = False
        earlier = np.flatnonzero(at)
        cols = np.concatenate([new, earlier])
        self._update(new, cols)  # rows: the new bars against every bar of that time (the diagonal left out)
        if len(earlier):
            self._update(earlier, new)  # the earlier bars' side of those pairs

    def _update(self, rows: np.ndarray, cols: np.ndarray) -> None:
        a, r = self.alpha, self.last_ret
        if len(rows) * len(cols) <= _SMALL_BLOCK:  # a few symbols: numpy's per-call overhead would dominate
            ret, js = r.tolist(), cols.tolist()
            for i in rows.tolist():
                x, cnt, prod, sq = ret[i], self.count[i], self.prod[i], self.sq[i]  # row views: 1-D indexing
                for j in js:
                    if i == j:
                        continue
                    y = ret[j]
                    if cnt[j] == 0.0:
                        prod[j], sq[j] = x * y, x * x
                    else:
                        p, q = float(prod[j]), float(sq[j])
                        prod[j], sq[j] = p + a * (x * y - p), q + a * (x * x - q)
                    cnt[j] += 1.0
            return
        block = np.ix_(rows, cols)
        x, y = r[rows][:, None], r[cols][None, :]
        cnt, prod, sq = self.count[block], self.prod[block], self.sq[block]
        first = cnt == 0.0
        xy, xx = x * y, x * x
        keep = rows[:, None] != cols[None, :]
        self.prod[block] = np.where(keep, np.where(first, xy, prod + a * (xy - prod)), prod)
        self.sq[block] = np.where(keep, np.where(first, xx, sq + a * (xx - sq)), sq)
        self.count[block] = np.where(keep, cnt + 1.0, cnt)

    def on_bars(self, bars: list[tuple[str, int, float]]) -> None:
        """Take several bars, each (symbol, open time, return): the same as :meth:`on_bar` of each in order.

        The matrices already apply a bar time's pair updates as one block, so this is the loop.
        """
        for symbol, ts, ret in bars:
            self.on_bar(symbol, ts, ret)

    def corr(self, a: str, b: str) -> float | None:
        """Return the correlation of two symbols' returns, or None with too few common bars."""
        self._flush()
        i, j = self.index.get(a), self.index.get(b)
        if i is None or j is None or i == j:
            return None
        n, p, sa, sb = self.count[i, j], self.prod[i, j], self.sq[i, j], self.sq[j, i]
        if n < self.cfg.correlation_min_bars or sa <= 0.0 or sb <= 0.0:
            return None
        return float(p) / math.sqrt(float(sa) * float(sb))

    def correlated(self, symbol: str, others: Iterable[str], given: Mapping[str, float] | None) -> list[str]:
        """Return the symbols among ``others`` correlated with ``symbol`` (group or correlation)."""
        self._flush()
        cfg, group = self.cfg, self.cfg.groups.get(symbol)
        i = self.index.get(symbol)
        ok: list[bool] = self._row(i).tolist() if i is not None else []
        index = self.index
        if group is None and given is None:  # the common case: one row of the matrix decides
            if i is None:
                return []
            return [s for s in others if (j := index.get(s)) is not None and ok[j]]
        out = []
        for s in others:
            if group is not None and cfg.groups.get(s) == group:
                out.append(s)
                continue
            if given is not None and s in given:
                c = given[s]
                if math.isfinite(c) and abs(c) >= cfg.correlation_threshold:
                    out.append(s)
            elif (j := index.get(s)) is not None and ok and ok[j]:
                out.append(s)
        return out

    def _row(self, i: int) -> np.ndarray:
        """Return whether each symbol's estimated correlation with symbol ``i`` reaches the threshold.

        All rows are computed at once after the pairs change (a close decides every symbol
        against the same pairs), one vectorised pass instead of one per decision.
        """
        if self._peers is None:
            n = len(self.names)
            cnt, p, sq = self.count[:n, :n], self.prod[:n, :n], self.sq[:n, :n]
            ok = (cnt >= self.cfg.correlation_min_bars) & (sq > 0.0) & (sq.T > 0.0)
            with np.errstate(invalid="ignore", divide="ignore"):
                c = p / np.sqrt(sq * sq.T)
            peers: np.ndarray = ok & np.isfinite(c) & (np.abs(c) >= self.cfg.correlation_threshold)
            np.fill_diagonal(peers, False)  # a symbol is not its own peer
            self._peers = peers
        return self._peers[i]

    def to_state(self) -> dict[str, Any]:
        """Return the state as plain data: each symbol's last bar, and every pair (sorted names) seen together."""
        self._flush()
        pairs = []
        for a, i in sorted(self.index.items()):
            for b, j in sorted(self.index.items()):
                if a < b and self.count[i, j] > 0.0:
                    pairs.append([a, b, float(self.count[i, j]), float(self.prod[i, j]), float(self.sq[i, j]),
                                  float(self.sq[j, i])])
        return {"last": {s: [t, r] for s, (t, r) in self.last.items()}, "pairs": pairs}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back :meth:`to_state` output."""
        self.index, self.names, self._pending, self._peers = {}, [], [], None
        self._grow(8)
        for s, (t, r) in state["last"].items():
            i = self._slot(s)
            self.last_ts[i], self.last_ret[i] = int(t), float(r)
        for a, b, n, p, sa, sb in state["pairs"]:
            i, j = self._slot(a), self._slot(b)
            self.count[i, j] = self.count[j, i] = float(n)
            self.prod[i, j] = self.prod[j, i] = float(p)
            self.sq[i, j], self.sq[j, i] = float(sa), float(sb)
