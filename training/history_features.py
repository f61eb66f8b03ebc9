"""The flow's features of stored history, computed over whole arrays: what the operators give, faster.

The live flow computes features bar by bar (:class:`flows.operators.features.FeatureEngine`
per symbol, :class:`flows.operators.cross_asset.CrossAssetStep` across symbols).  A
backtest already holds every bar of every symbol, so :func:`history_records` computes
the same features per symbol over whole numpy arrays and yields the same records in the
same order as :func:`training.backfill.operator_records`: each bar, the cross-asset rows
of a bar time after the bar that completes it, the bar's feature row.

Bit for bit, not within a tolerance (``tests/unit/training/test_history_features.py``
checks every value with ``==`` on real candles and on edge cases): element-wise
arithmetic is IEEE-rounded alike in numpy and Python; the logarithms go through
``math.log`` (numpy's differs in the last bit on ~4 % of inputs); every window sum adds
the window's elements oldest first, as Python's ``sum`` does over a deque, one vector
addition per window position; the recursive means (EMAs, Wilder means) run in one plain
loop per symbol.

The cross-asset step emits a bar time once every symbol has delivered its return
(``max_wait_bars`` off, as in the backfill and the backtest).  Over history that is the
leading run of bar times where every symbol has a return: the first bar time some
symbol lacks is never completed, and the step waits on it for the rest of the stream.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from flows.operators.cross_asset import CROSS_FEATURES, WINDOW
from flows.operators.features import (
    _A9,
    _A12,
    _A26,
    _AW,
    _DAY_MS,
    _EPOCH_WEEKDAY,
    FEATURES,
    RET_LAGS,
    RV_WINDOWS,
    WARMUP,
    _time_of_day,
    _weekday,
)
from flows.records import Bar, FeatureRow
from flows.timeframes import timeframe_ms

_CLOSE, _HIGH, _LOW, _VOLUME, _COUNT, _VWAP, _TAKER = 6, 4, 5, 7, 9, 10, 11  # Bar fields


def window_sums(x: np.ndarray, w: int) -> np.ndarray:
    """Return ``out[k] = x[k] + x[k+1] + ... + x[k+w-1]`` added in that order (Python's ``sum``), along axis 0."""
    k = len(x) - w + 1
    acc = x[0:k] + 0.0  # sum() starts from 0: 0 + (-0.0) is 0.0
    for j in range(1, w):
        acc += x[j:j + k]
    return acc


def window_mean_std(x: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Return (mean, population std, first index) over windows of ``w`` as ``features._mean_std`` computes them."""
    k = len(x) - w + 1
    m = window_sums(x, w) / w
    d = x[0:k] - m
    acc = d * d + 0.0
    for j in range(1, w):
        d = x[j:j + k] - m
        acc += d * d
    return m, np.sqrt(acc / w), w - 1


def _logs(ratios: np.ndarray) -> np.ndarray:
    return np.fromiter(map(math.log, ratios.tolist()), np.float64, len(ratios))


def _ema(xs: list[float], start: float, alpha: float) -> np.ndarray:
    """Return ``[start, e1, e2, ...]`` with ``e = e + alpha * (x - e)`` over ``xs`` (the operators' update)."""
    e = start
    return np.array([start, *[e := e + alpha * (x - e) for x in xs]], np.float64)  # a plain loop: no call per step


def _recursive(c: np.ndarray, h: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, ...]:
    """Return the EMAs of ``FeatureEngine.update`` per bar: macd, signal, Wilder gain, loss, ATR.

    The same doubles as the update's per-bar loop: the inputs of each recursion (moves, true
    range) element-wise in numpy (the same operations), each recursion by :func:`_ema`.
    """
    n = len(c)
    cl = c.tolist()
    change = c[1:] - c[:-1]
    up = np.where(change > 0, change, 0.0)
    down = np.where(change < 0, -change, 0.0)
    hl, hp, lp = h[1:] - lo[1:], np.abs(h[1:] - c[:-1]), np.abs(lo[1:] - c[:-1])
    tr = np.where(hp > hl, hp, hl)  # max(hl, hp, lp) as Python's max picks (the first of equals, NaN as it falls)
    tr = np.where(lp > tr, lp, tr)
    mac = _ema(cl[1:], cl[0], _A12) - _ema(cl[1:], cl[0], _A26)
    sg = _ema(mac[1:].tolist(), float(mac[0]), _A9)
    if n < 2:
        return mac, sg, np.zeros(n), np.zeros(n), np.zeros(n)
    gn, lss, at = (np.concatenate(([0.0], _ema(v[1:].tolist(), float(v[0]), _AW))) for v in (up, down, tr))
    return mac, sg, gn, lss, at  # the Wilder means are seeded at bar 1


def _column(bars: list[Bar], field: int, dtype: Any = np.float64) -> np.ndarray:
    """Return one field of every bar as an array (a C loop: no transposition of all the bars' tuples)."""
    return np.fromiter(map(itemgetter(field), bars), dtype, len(bars))


class _Series(NamedTuple):
    """One symbol's bars as columns, and its log returns ``r[i] = log(close[i] / close[i - 1])`` (``r[0]`` 0)."""

    ts: np.ndarray
    close: np.ndarray
    high: np.ndarray
    low: np.ndarray
    volume: np.ndarray
    vwap: np.ndarray
    taker: np.ndarray
    trades: np.ndarray
    r: np.ndarray

    @classmethod
    def of(cls, bars: list[Bar]) -> _Series:
        """Read the columns out of the bars; take the log returns once (the features and the cross step share them)."""
        c = _column(bars, _CLOSE)
        r = np.concatenate(([0.0], _logs(c[1:] / c[:-1])))[:len(c)]  # math.log of each ratio, as the operators do
        return cls(_column(bars, 2, np.int64), c, _column(bars, _HIGH), _column(bars, _LOW), _column(bars, _VOLUME),
                   _column(bars, _VWAP), _column(bars, _TAKER), _column(bars, _COUNT), r)


def bar_features(bars: list[Bar], tf_ms: int, series: _Series | None = None) -> np.ndarray:
    """Return the features (columns ``FEATURES``) of bars ``WARMUP - 1`` onwards: ``[len(bars) - WARMUP + 1, 22]``.

    ``series``: the bars' columns (:class:`_Series`) when the caller has them already.
    """
    n = len(bars)
    if n < WARMUP:
        return np.empty((0, len(FEATURES)))
    ts, c, h, lo, v, vwap, taker, trades, r = _Series.of(bars) if series is None else series
    first = WARMUP - 1
    cw = c[first:]
    f = np.empty((n - first, len(FEATURES)))
    at = {name: i for i, name in enumerate(FEATURES)}
    f[:, at["ret_1"]] = r[first:]  # log(c[i] / c[i - 1]): the same ratio, the same log
    for k in RET_LAGS[1:]:
        f[:, at[f"ret_{k}"]] = _logs(cw / c[first - k:n - k])
    sq = r * r
    for w in RV_WINDOWS:
        f[:, at[f"rv_{w}"]] = np.sqrt(window_sums(sq[1:], w)[first - w:])  # sq[1:]: bar 1 has the first return
    macd, sig, gain, loss, atr = (a[first:] for a in _recursive(c, h, lo))
    with np.errstate(divide="ignore", invalid="ignore"):
        rsi = np.where(loss == 0.0, 100.0, 100.0 - 100.0 / (1.0 + gain / loss))
        f[:, at["rsi_14"]] = np.where((gain == 0.0) & (loss == 0.0), 50.0, rsi)
        f[:, at["macd"]], f[:, at["macd_signal"]], f[:, at["macd_hist"]] = macd, sig, macd - sig
        m, s, o = window_mean_std(c, 20)
        m, s = m[first - o:], s[first - o:]
        f[:, at["bb_pctb"]] = np.where(s == 0.0, 0.5, (cw - (m - 2 * s)) / (4 * s))
        f[:, at["bb_bandwidth"]] = 4 * s / m
        f[:, at["atr_14"]] = atr / cw
        vm, vs, o = window_mean_std(v, 60)
        vm, vs, vw = vm[first - o:], vs[first - o:], v[first:]
        f[:, at["volume_z_60"]] = np.where(vs == 0.0, 0.0, (vw - vm) / vs)
        vwp = vwap[first:]
        f[:, at["vwap_dist"]] = (cw - vwp) / vwp
        tb = taker[first:]
        f[:, at["taker_imbalance"]] = np.where(vw == 0.0, 0.0, (2 * tb - vw) / vw)
    f[:, at["trade_count"]] = trades[first:]
    f[:, at["hl_range"]] = (h[first:] - lo[first:]) / cw
    close_ms = ts[first:] + tf_ms
    f[:, [at["hour_sin"], at["hour_cos"]]] = _table(close_ms % _DAY_MS, _time_of_day)
    f[:, [at["dow_sin"], at["dow_cos"]]] = _table((close_ms // _DAY_MS + _EPOCH_WEEKDAY) % 7, _weekday)
    return f


def _table(keys: np.ndarray, fn: Any) -> np.ndarray:
    """Return ``fn(key)`` (a pair) of each key, computed once per distinct key (by hash: no sort)."""
    inv, uniq = pd.factorize(keys)
    return np.array([fn(int(u)) for u in uniq], np.float64).reshape(-1, 2)[inv]


def cross_features(rets: np.ndarray, order: list[int], ref: int) -> np.ndarray:
    """Return ``[T, S, 3]`` cross-asset features of aligned returns ``[T, S]`` (NaN before the window is full).

    ``order``: the symbols' columns in arrival order (the sum of a bar time's returns is taken in it);
    ``ref``: the reference symbol's column.
    """
    t_n, s_n = rets.shape
    out = np.full((t_n, s_n, len(CROSS_FEATURES)), np.nan)
    total = rets[:, order[0]] + 0.0
    for j in order[1:]:
        total = total + rets[:, j]
    out[:, :, 2] = rets - (total / s_n)[:, None]
    if t_n < WINDOW:
        return out
    mean = window_sums(rets, WINDOW) / WINDOW  # [windows, S]
    sxy, sxx = _co_moments(rets, mean, ref)
    syy = sxx[:, ref:ref + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where((sxx == 0.0) | (syy == 0.0), 0.0, sxy / np.sqrt(sxx * syy))
        beta = np.where(syy == 0.0, 0.0, sxy / syy)
    out[WINDOW - 1:, :, 0], out[WINDOW - 1:, :, 1] = corr, beta
    return out


def _co_moments(rets: np.ndarray, mean: np.ndarray, ref: int, block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Return the windows' sums of ``dx * dy`` and ``dx * dx`` (``dx``, ``dy``: a symbol's, the reference's deviations).

    Each sum adds its window's products oldest first from 0 (the step's ``sum``); the windows go
    ``block`` at a time through buffers, so the 2 x 60 products of a window stay in cache.
    """
    k, s_n = mean.shape
    sxy, sxx = np.zeros((k, s_n)), np.zeros((k, s_n))
    dx, dy, prod = np.empty((block, s_n)), np.empty((block, 1)), np.empty((block, s_n))
    for a in range(0, k, block):
        b = min(a + block, k)
        m, my, xy, xx = mean[a:b], mean[a:b, ref:ref + 1], sxy[a:b], sxx[a:b]
        d, e, p = dx[:b - a], dy[:b - a], prod[:b - a]
        for j in range(WINDOW):
            np.subtract(rets[a + j:b + j], m, out=d)
            np.subtract(rets[a + j:b + j, ref:ref + 1], my, out=e)
            xy += np.multiply(d, e, out=p)
            xx += np.multiply(d, d, out=p)
    return sxy, sxx


class HistoryFeatures:
    """Every bar of some symbols with their features over whole arrays, in the operators' record order.

    The order is that of ``(open ts, symbol, bar index)`` sorted, as the merge of the symbol
    pipelines delivers the bars; :meth:`records` yields a stretch of it as the operators'
    records; ``feats`` (per symbol, from bar ``WARMUP - 1`` on) and ``cross_values`` (the cross-asset
    step's values of each bar time and symbol; ``cross`` maps a close time to its row) are the values.
    """

    def __init__(self, streams: dict[str, Iterable[Bar]], timeframe: str, reference: str = "BTC/USDT") -> None:
        """Read every stream and compute the features of every bar."""
        self.symbols = tuple(streams)
        self.timeframe, self.tf_ms = timeframe, timeframe_ms(timeframe)
        self.bars = {s: list(b) for s, b in streams.items()}
        series = {s: _Series.of(b) for s, b in self.bars.items()}
        self.feats = {s: bar_features(b, self.tf_ms, series[s]) for s, b in self.bars.items()}
        # close time -> row of ``cross_values`` ([bar times, symbols, CROSS_FEATURES]): the cross-asset step's rows
        self.cross, self.cross_values = _cross_rows(self.symbols, series, self.tf_ms, reference if reference in
                                                    self.symbols else self.symbols[0]) if self.symbols else ({}, None)
        self._order(series)
        self._emitted: set[int] = set()  # bar times whose cross rows were yielded (once, as the step emits them)

    def _order(self, series: dict[str, _Series]) -> None:
        """Sort the bars as the merge delivers them; find the bar times where every symbol's bar is complete.

        ``_ts``, ``_sym`` (position in :attr:`symbols`), ``_at`` (index in its stream): the sorted bars;
        ``_groups``: where each bar time's bars start (and the end); ``_complete``: per bar time, every
        symbol has exactly one bar there, its features and the cross-asset row of its close.
        """
        names = sorted(self.symbols)  # a bar time's bars come in symbol order
        ts = np.concatenate([series[s].ts for s in names]) if names else np.empty(0, np.int64)
        # each stream in time order, the streams in symbol order: a stable sort by time gives (ts, symbol, index)
        by = np.argsort(ts, kind="stable")
        self._ts = ts[by]
        self._sym = np.repeat([self.symbols.index(s) for s in names], [len(series[s].ts) for s in names])[by]
        self._at = np.concatenate([np.arange(len(series[s].ts)) for s in names] or [np.empty(0, np.int64)])[by]
        cut = np.flatnonzero(self._ts[1:] != self._ts[:-1]) + 1
        self._groups = np.concatenate(([0], cut, [len(ts)])) if len(ts) else np.zeros(1, np.int64)
        starts, sizes = self._groups[:-1], np.diff(self._groups)
        if not len(starts):
            self._complete = np.zeros(0, bool)
            return
        twice = np.zeros(len(ts), bool)  # a symbol's second bar at a bar time (the sort puts them side by side)
        twice[1:] = (self._ts[1:] == self._ts[:-1]) & (self._sym[1:] == self._sym[:-1])
        closes = self._ts[starts] + self.tf_ms
        self._complete = ((sizes == len(self.symbols)) & ~np.logical_or.reduceat(twice, starts)
                          & (np.minimum.reduceat(self._at, starts) >= WARMUP - 1)
                          & np.isin(closes, np.fromiter(self.cross, np.int64, len(self.cross))))

    def records(self, lo: int = 0, hi: int | None = None) -> Iterator[Any]:
        """Yield the records of bars ``lo:hi`` in order: each bar, a bar time's cross rows, the bar's feature row."""
        bars, feats, cross, tf_ms, timeframe = self.bars, self.feats, self.cross, self.tf_ms, self.timeframe
        last_sym = max(self.symbols)  # of a bar time's symbols, the merge delivers this one last
        names, cnames, symbols = FEATURES, CROSS_FEATURES, self.symbols
        first = WARMUP - 1
        z = slice(lo, hi)
        for ts, j, i in zip(self._ts[z].tolist(), self._sym[z].tolist(), self._at[z].tolist(), strict=True):
            sym = symbols[j]
            yield bars[sym][i]
            close = ts + tf_ms
            if sym == last_sym and close in cross and close not in self._emitted:
                self._emitted.add(close)
                assert self.cross_values is not None
                for s, values in zip(symbols, self.cross_values[cross[close]].tolist(), strict=True):
                    yield FeatureRow("cross_asset_features", s, timeframe, close,
                                     dict(zip(cnames, values, strict=True)))
            if i >= first:
                yield FeatureRow("bar_features", sym, timeframe, close,
                                 dict(zip(names, feats[sym][i - first].tolist(), strict=True)))

    def chunks(self, chunk: int) -> Iterator[HistoryChunk]:
        """Cut the bars into stretches of ``chunk`` bar times, as :func:`flows.replay.bar_time_chunks` cuts the records.

        A stretch is ``regular`` when at each of its closes every symbol has its bar, its bar
        features and its cross-asset row (not yet yielded): :meth:`matrix` can then give it.
        """
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1 bar time, got {chunk}")
        groups, complete = self._groups, self._complete
        closes = (self._ts[groups[:-1]] + self.tf_ms).tolist()
        for g in range(0, len(closes), chunk):
            h = min(g + chunk, len(closes))
            part = closes[g:h]
            regular = bool(complete[g:h].all()) and not (self._emitted and not self._emitted.isdisjoint(part))
            yield HistoryChunk(part, int(groups[g]), int(groups[h]), regular)

    def matrix(self, c: HistoryChunk, feed: Sequence[str]) -> tuple[list[tuple[Bar, ...]], np.ndarray]:
        """Return a regular chunk's bars (per close, in symbol order) and feed matrix ``[closes * symbols, feed]``.

        The matrix holds the values :meth:`records` would put in the feature rows (the same
        doubles), bar time after bar time, symbols in order: what
        :meth:`flows.operators.scoring.ScoringStep.score_matrix` takes.
        """
        if not c.regular:
            raise ValueError("matrix needs a regular chunk (every symbol's bar and features at every close)")
        bar_pos, bar_src, cross_pos, cross_src = _feed_columns(tuple(feed))
        symbols, n, n_t, first = self.symbols, len(self.symbols), len(c.closes), WARMUP - 1
        # a regular chunk has one bar per symbol and bar time: a column per symbol, in symbol-name order
        at = self._at[c.lo:c.hi].reshape(n_t, n)
        column = {s: k for k, s in enumerate(sorted(symbols))}
        x = np.empty((n_t, n, len(feed)))
        got: list[Sequence[Bar]] = []
        for j, s in enumerate(symbols):
            i, bars = at[:, column[s]], self.bars[s]
            i0 = int(i[0])
            if int(i[-1]) - i0 == n_t - 1 and (n_t < 3 or bool((np.diff(i) == 1).all())):  # consecutive (in order)
                got.append(bars[i0:i0 + n_t])
                x[:, j, bar_pos] = self.feats[s][i0 - first:i0 - first + n_t, bar_src]
            else:
                got.append([bars[k] for k in i.tolist()])
                x[:, j, bar_pos] = self.feats[s][i - first][:, bar_src]
        assert self.cross_values is not None  # a regular chunk's closes have cross rows
        k0, k1 = self.cross[c.closes[0]], self.cross[c.closes[-1]]  # consecutive bar times: consecutive rows
        rows = slice(k0, k1 + 1) if k1 - k0 == n_t - 1 else [self.cross[t] for t in c.closes]
        x[:, :, cross_pos] = self.cross_values[rows][:, :, cross_src]
        self._emitted.update(c.closes)
        return list(zip(*got, strict=True)), x.reshape(n_t * n, len(feed))


_Index = slice | np.ndarray


@lru_cache(maxsize=8)
def _feed_columns(feed: tuple[str, ...]) -> tuple[_Index, _Index, _Index, _Index]:
    """Return where a feed's features sit: (feed positions, ``FEATURES`` columns) of the bar features, of the cross.

    Each as a slice when the positions run one by one (then the matrix copies blocks, no gather).
    """
    bar_at, cross_at = {f: i for i, f in enumerate(FEATURES)}, {f: i for i, f in enumerate(CROSS_FEATURES)}
    bar_pos = [p for p, f in enumerate(feed) if f in bar_at]
    cross_pos = [p for p, f in enumerate(feed) if f in cross_at]
    if len(bar_pos) + len(cross_pos) != len(feed):
        raise ValueError(f"the feed has features history does not compute: {sorted(set(feed) - set(bar_at) - set(cross_at))}")
    return (_index(bar_pos), _index([bar_at[feed[p]] for p in bar_pos]), _index(cross_pos),
            _index([cross_at[feed[p]] for p in cross_pos]))


def _index(columns: list[int]) -> _Index:
    """Return the columns as a slice when they run one by one (or there are none), else as an index array."""
    if not columns or columns == list(range(columns[0], columns[0] + len(columns))):
        return slice(columns[0], columns[0] + len(columns)) if columns else slice(0, 0)
    return np.array(columns, np.intp)


class HistoryChunk(NamedTuple):
    """A stretch of the sorted bars (:class:`HistoryFeatures`): its bar closes, its index range, whether it is regular."""

    closes: list[int]
    lo: int
    hi: int
    regular: bool


def history_records(streams: dict[str, Iterable[Bar]], timeframe: str,
                    reference: str = "BTC/USDT") -> Iterator[Any]:
    """Yield what :func:`training.backfill.operator_records` yields for these bars, bit for bit, in its order."""
    if streams:
        yield from HistoryFeatures(streams, timeframe, reference).records()


def _cross_rows(symbols: tuple[str, ...], series: dict[str, _Series], tf_ms: int,
                reference: str) -> tuple[dict[int, int], np.ndarray | None]:
    """Return the cross-asset step's rows: (close time -> row, values ``[rows, symbols, CROSS_FEATURES]``).

    Row ``k`` holds the values of each symbol (in ``symbols`` order) at that bar time; an array rather
    than a list per close, since a regular chunk takes them as a matrix (:meth:`HistoryFeatures.matrix`).
    """
    when: dict[str, np.ndarray] = {}  # per symbol: the close times of its returns, sorted, each once
    ret: dict[str, np.ndarray] = {}  # per symbol: log(close / previous close) at those times
    for s in symbols:
        t = series[s].ts[1:] + tf_ms
        r = series[s].r[1:]  # math.log of each ratio: the step's log(cur.close / prev.close)
        order = np.argsort(t, kind="stable")
        t, r = t[order], r[order]
        last = np.ones(len(t), bool)
        last[:-1] = t[1:] != t[:-1]  # a repeated bar time: the last one counts (as a dict's update)
        when[s], ret[s] = t[last], r[last]
    union, held = np.unique(np.concatenate([when[s] for s in symbols]), return_counts=True)
    every = held == len(symbols)  # each symbol's times are distinct: a time every symbol has is there once per symbol
    # the leading bar times every symbol delivered (the step waits on the first one missing)
    times = union[:len(union) if every.all() else int(np.argmin(every))]
    if not len(times):
        return {}, None
    rets = np.column_stack([ret[s][np.searchsorted(when[s], times)] for s in symbols])
    arrival = sorted(range(len(symbols)), key=lambda j: symbols[j])
    x = cross_features(rets, arrival, symbols.index(reference))
    return {t: k for k, t in enumerate(times[WINDOW - 1:].tolist(), WINDOW - 1)}, x
