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
from itertools import compress
from operator import itemgetter
from typing import Any

import numpy as np

from flows.risk.config import LimitsConfig


def gross_of(symbols: Iterable[str], positions: Mapping[str, float], prices: Mapping[str, float]) -> float:
    """Return the sum of ``|qty| * price`` over ``symbols``."""
    return sum(abs(positions[s]) * prices[s] for s in symbols)


def cap_qty(limit_value: float, used: float, price: float) -> float:
    """Return the quantity that fits into ``limit_value - used`` (quote) at ``price``, at least 0."""
    return max(0.0, (limit_value - used) / price)


STRETCH_FROM = 96  # bars of one call of PairCorrelations.on_bars from which it looks for regular stretches
STRETCH_CLOSES = 16  # bar times of a regular stretch from which it goes at once (PairCorrelations._stretch)
_SMALL_BLOCK = 64  # pair updates of one bar time below which a Python loop beats numpy's calls


class MatrixCorrelations:
    """Exponentially weighted correlations of one-bar returns, updated on common bar times (many symbols).

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
            return _peers_among(others, index, ok)
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


class PairCorrelations:
    """Exponentially weighted correlations of one-bar returns, updated on common bar times (few symbols).

    A dictionary of pairs, updated per bar in Python: below :data:`MATRIX_FROM` symbols it is
    cheaper than :class:`MatrixCorrelations` (whose numpy calls cost more than a handful of pairs;
    5 symbols: 25 against 81 us per close), and the two hold the same values bit for bit
    (``tests/unit/flows/risk/test_correlations_matrix.py``); :func:`scaled` moves the state over.

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
        kept in the order of ``last`` (so new pairs are created in the same order).  Many closes' bars at
        once (the risk engine's queue): the regular stretches among them go through :meth:`_stretch`.
        """
        if len(bars) < max(STRETCH_FROM, STRETCH_CLOSES * len(self.last)):  # a close or a few: the loop
            self._loop(bars)
            return
        times = np.array([b[1] for b in bars], dtype=np.int64)
        edges = [0, *(np.flatnonzero(times[1:] != times[:-1]) + 1).tolist(), len(bars)]  # bar times' bounds
        i, groups = 0, len(edges) - 1
        while i < groups:
            n, j = len(self.last), i
            while j < groups and edges[j + 1] - edges[j] == n:
                j += 1
            if j - i >= STRETCH_CLOSES and self._stretch(bars[edges[i]:edges[j]]):
                i = j
                continue
            j = max(j, i + 1)  # not a stretch: these bar times (at least one) bar by bar
            self._loop(bars[edges[i]:edges[j]])
            i = j

    def _loop(self, bars: list[tuple[str, int, float]]) -> None:
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

    def _stretch(self, bars: list[tuple[str, int, float]]) -> bool:
        """Apply a regular stretch of bar times at once, bit for bit as :meth:`on_bars`; False: not one, nothing applied.

        Regular: each bar time has a finite return of every known symbol, in the same order each
        time, the times rise past every symbol's last bar, and every pair exists.  Then each pair
        gets one update per bar time from its own state and the two returns, so a pair's three
        averages are runs of the same recursion over the products (numpy multiplies as Python does)
        in a Python loop; the averages of squares that start from the same value are run once.
        """
        last, pairs = self.last, self.pairs
        n = len(last)
        if n < 2 or len(bars) % n or len(pairs) != n * (n - 1) // 2:
            return False
        syms, times, rets = zip(*bars, strict=True)
        head, t = syms[:n], len(bars) // n
        if syms != head * t or set(head) != last.keys():
            return False
        ts = np.array(times, dtype=np.int64).reshape(t, n)
        at = ts[:, 0]
        if (ts != at[:, None]).any() or (np.diff(at) <= 0).any() or times[0] <= max(v[0] for v in last.values()):
            return False
        r = np.array(rets, dtype=np.float64).reshape(t, n)
        if not np.isfinite(r).all():
            return False
        cols, a = r.T, self.alpha
        squares = (cols * cols).tolist()
        col = {s: k for k, s in enumerate(head)}
        runs: dict[tuple[int, float], float] = {}  # (column, start) -> the average of squares after the stretch

        def of_squares(k: int, start: float) -> float:
            got = runs.get((k, start))
            if got is None:
                got = runs[(k, start)] = _ewma(start, squares[k], a)
            return got

        for (x, y), st in pairs.items():
            i, j = col[x], col[y]
            st[:] = (st[0] + t, _ewma(st[1], (cols[i] * cols[j]).tolist(), a), of_squares(i, st[2]),
                     of_squares(j, st[3]))
        for k, s in enumerate(head):
            last[s] = (times[k - n], rets[k - n])
        return True

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


def _ewma(s: float, xs: list[float], a: float) -> float:
    """Return ``s`` after ``s += a * (x - s)`` for each ``x`` (the pairs' update, in order)."""
    for x in xs:
        s += a * (x - s)
    return s


def _peers_among(others: Iterable[str], index: Mapping[str, int], ok: list[bool]) -> list[str]:
    """Return the symbols of ``others`` with a slot ``j`` in ``index`` and ``ok[j]``, in their order.

    ``itemgetter`` and ``compress`` do the lookups in C: at 200 symbols the loop in Python over the
    other symbols of the caps was the largest part of a decision while ~150 positions were held.
    """
    names = others if isinstance(others, list) else list(others)
    if len(names) > 1:
        try:
            slots = itemgetter(*names)(index)
        except KeyError:  # a symbol without a bar yet: no slot, not correlated
            pass
        else:
            return list(compress(names, itemgetter(*slots)(ok)))
    return [s for s in names if (j := index.get(s)) is not None and ok[j]]


MATRIX_FROM = 24  # symbols from which the matrix form is cheaper per close (tests/bench/bench_scale_close.py)

Correlations = PairCorrelations | MatrixCorrelations


def scaled(corr: Correlations, matrix_from: int = MATRIX_FROM) -> Correlations:
    """Return ``corr``, moved into the matrix form once it holds ``matrix_from`` symbols (same values)."""
    if isinstance(corr, PairCorrelations) and len(corr.last) >= matrix_from:
        out = MatrixCorrelations(corr.cfg)
        out.restore(corr.to_state())
        return out
    return corr
