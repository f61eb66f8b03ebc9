"""Market data for the RL environments: prices and point-in-time features as numpy arrays.

Row ``t`` of every array is bar ``t``: ``times[t]`` is its open time (ns, UTC),
``open..volume[t]`` its candle, and ``features[t]`` what the live flow knows at
the bar's close (``times[t] + timeframe``), computed by the flow's own operators
(:class:`SymbolPipeline` and :class:`CrossAssetStep`), so a policy trained here
sees in training exactly the numbers the flow feeds it.  Rows before the
operators are warm are dropped, never zero-filled.

The optional regime (:func:`with_regime`) is the classifier of :mod:`flows.operators.regime`
run over the bars' closes and the daily funding and Fear & Greed, point in time: the value
dated day D is used only at decision times after D + 1 00:00 UTC (plus a publication lag).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from flows.feature_catalog import BAR_FEATURES, CROSS_FEATURES
from flows.operators.features import WARMUP
from flows.records import Bar, FeatureRow
from flows.timeframes import timeframe_ms

log = logging.getLogger("training.rl.data")

ALL_FEATURES: tuple[str, ...] = BAR_FEATURES + CROSS_FEATURES
# Scale-free features first: the default pick of the synthetic market.
SYNTHETIC_ORDER: tuple[str, ...] = (
    "ret_1", "ret_5", "ret_15", "ret_60", "rv_15", "rv_60", "bb_pctb", "atr_14", "hl_range", "vwap_dist",
    "corr_btc_60", "beta_btc_60", "ret_rel_xs", "volume_z_60", "bb_bandwidth", "hour_sin", "hour_cos",
    "dow_sin", "dow_cos", "rsi_14", "taker_imbalance", "macd", "macd_signal", "macd_hist", "trade_count",
)


@dataclass(frozen=True, eq=False)  # identity equality: comparing arrays field by field is ambiguous
class MarketData:
    """Aligned candles and features of several assets (see the module docstring for the time convention)."""

    symbols: tuple[str, ...]
    timeframe: str
    times: np.ndarray  # int64 ns [T], bar open times
    open: np.ndarray  # float64 [T, A]
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    features: np.ndarray  # float32 [T, A, F], known at the bar's close
    feature_names: tuple[str, ...]
    feature_service: str
    regime: np.ndarray | None = None  # float32 [T, R], known at the bar's close (with_regime)
    regime_names: tuple[str, ...] = ()
    signal: np.ndarray | None = None  # float32 [T, A]: the ensemble's probability at the bar's close (rl.signal)
    signal_source: Mapping[str, Any] | None = None  # where ``signal`` came from (ensemble version, fits)

    def __post_init__(self) -> None:
        t, a, f = len(self.times), len(self.symbols), len(self.feature_names)
        if self.times.dtype != np.int64 or self.times.ndim != 1:
            raise ValueError(f"MarketData.times must be int64 [T], got {self.times.dtype} {self.times.shape}")
        if t > 1 and not (np.diff(self.times) > 0).all():
            raise ValueError("MarketData.times must be strictly increasing")
        for name in ("open", "high", "low", "close", "volume"):
            arr = getattr(self, name)
            if arr.shape != (t, a) or arr.dtype != np.float64:
                raise ValueError(f"MarketData.{name} must be float64 [{t}, {a}], got {arr.dtype} {arr.shape}")
        if self.features.shape != (t, a, f) or self.features.dtype != np.float32:
            raise ValueError(f"MarketData.features must be float32 [{t}, {a}, {f}], "
                             f"got {self.features.dtype} {self.features.shape}")
        if not np.isfinite(self.features).all():
            raise ValueError("MarketData.features holds NaN or inf")
        if (self.open <= 0).any() or (self.close <= 0).any():
            raise ValueError("MarketData.open/close must be positive")
        if self.regime is not None and (self.regime.shape != (t, len(self.regime_names))
                                        or self.regime.dtype != np.float32):
            raise ValueError(f"MarketData.regime must be float32 [{t}, {len(self.regime_names)}]")
        if self.signal is not None and (self.signal.shape != (t, a) or self.signal.dtype != np.float32
                                        or not np.isfinite(self.signal).all()):
            raise ValueError(f"MarketData.signal must be finite float32 [{t}, {a}]")

    @property
    def n_bars(self) -> int:
        """Number of bars T."""
        return len(self.times)

    @property
    def tf_ns(self) -> int:
        """Bar length in nanoseconds."""
        return timeframe_ms(self.timeframe) * 1_000_000

    @property
    def decision_times(self) -> np.ndarray:
        """Bar close times (ns): when row ``t``'s features become known and a decision is taken."""
        return self.times + self.tf_ns

    def take(self, rows: slice | np.ndarray) -> MarketData:
        """Return the rows ``rows`` (a slice or index array) as a new MarketData."""
        return replace(self, times=self.times[rows], open=self.open[rows], high=self.high[rows],
                       low=self.low[rows], close=self.close[rows], volume=self.volume[rows],
                       features=self.features[rows],
                       regime=None if self.regime is None else self.regime[rows],
                       signal=None if self.signal is None else self.signal[rows])

    def select(self, symbols: Sequence[str] | None = None, features: Sequence[str] | None = None) -> MarketData:
        """Return a subset of assets and/or features, in the order given."""
        ai = [_index(self.symbols, s, "symbol") for s in (symbols or self.symbols)]
        fi = [_index(self.feature_names, f, "feature") for f in (features or self.feature_names)]
        return replace(self, symbols=tuple(self.symbols[i] for i in ai),
                       open=self.open[:, ai], high=self.high[:, ai], low=self.low[:, ai],
                       close=self.close[:, ai], volume=self.volume[:, ai],
                       features=np.ascontiguousarray(self.features[:, ai][:, :, fi]),
                       feature_names=tuple(self.feature_names[i] for i in fi),
                       signal=None if self.signal is None else np.ascontiguousarray(self.signal[:, ai]))


def _index(names: tuple[str, ...], name: str, what: str) -> int:
    if name not in names:
        raise ValueError(f"unknown {what} {name!r}; have {list(names)}")
    return names.index(name)


def market_data_from_bars(streams: Mapping[str, Iterable[Bar]], timeframe: str,
                          features: Sequence[str] | None = None, feature_service: str | None = None) -> MarketData:
    """Run bars through the live operators and collect prices and features into arrays.

    Args:
        streams: per symbol, its bars in time order (one timeframe).
        timeframe: the bars' timeframe.
        features: names to keep, in order (default: every bar and cross-asset feature).
        feature_service: Feast service the features belong to (default ``lightgbm_<tf>_v1``,
            the service of bar + cross-asset features).

    Returns:
        Rows where every symbol has a bar and every requested feature.
    """
    from training.backfill import operator_records

    names = tuple(features or ALL_FEATURES)
    bad = [n for n in names if n not in ALL_FEATURES]
    if bad:
        raise ValueError(f"unknown features {bad}; known: {list(ALL_FEATURES)}")
    symbols = tuple(streams)
    if not symbols:
        raise ValueError("no symbols: streams is empty")
    tf_ms = timeframe_ms(timeframe)
    col = {n: j for j, n in enumerate(names)}
    cols = {"bar_features": [(n, col[n]) for n in BAR_FEATURES if n in col],
            "cross_asset_features": [(n, col[n]) for n in CROSS_FEATURES if n in col]}
    # compact rows (a float32 vector per bar) keep memory near the arrays' own size on years of bars
    prices: dict[str, dict[int, tuple[float, ...]]] = {s: {} for s in symbols}
    rows: dict[str, dict[int, np.ndarray]] = {s: {} for s in symbols}
    for rec in operator_records(dict(streams), timeframe):
        if isinstance(rec, Bar):
            prices[rec.symbol][rec.ts + tf_ms] = (rec.open, rec.high, rec.low, rec.close, rec.volume)
        elif isinstance(rec, FeatureRow) and cols[rec.table]:
            row = rows[rec.symbol].get(rec.ts)
            if row is None:
                row = rows[rec.symbol][rec.ts] = np.full(len(names), np.nan, np.float32)
            for n, j in cols[rec.table]:
                row[j] = rec.values[n]
    complete = [{ts for ts, v in rows[s].items() if not np.isnan(v).any()} for s in symbols]
    common_set: set[int] = set.intersection(*(set(prices[s]) for s in symbols))
    keep = sorted(set.intersection(*complete) & common_set)
    if not keep:
        raise ValueError(f"no bar of {list(symbols)} {timeframe} has every feature (too few bars to warm up?)")
    kept = set(keep)
    interior = sum(1 for ts in common_set if ts > keep[0] and ts not in kept)
    if interior:
        log.warning("%d bars after warm-up lack a feature row for some symbol and are left out", interior)
    t_ms = np.asarray(keep, np.int64) - tf_ms
    px = np.array([[prices[s][ts] for s in symbols] for ts in keep], np.float64)  # [T, A, 5]
    feats = np.stack([np.stack([rows[s][ts] for ts in keep]) for s in symbols], axis=1)
    ohlcv = {k: np.ascontiguousarray(px[:, :, i]) for i, k in enumerate(("open", "high", "low", "close", "volume"))}
    return MarketData(symbols, timeframe, t_ms * 1_000_000, ohlcv["open"], ohlcv["high"], ohlcv["low"],
                      ohlcv["close"], ohlcv["volume"], feats, names,
                      feature_service or f"lightgbm_{timeframe}_v1")


def load_market_data(paths_or_dir: str | Path | Sequence[str | Path], symbols: Sequence[str], timeframe: str,
                     start: str | None = None, end: str | None = None, *,
                     features: Sequence[str] | None = None, regime_dir: str | Path | None = None) -> MarketData:
    """Read candle files and compute features with the live flow's operators.

    Args:
        paths_or_dir: a directory holding ``BASE_QUOTE-TF.ext`` candle files, or the files.
        symbols: symbols to load (``BTC/USDT``), in the order of the asset axis.
        timeframe: candle interval, e.g. ``1h``.
        start: first bar time, ISO 8601 UTC (warm-up bars are taken from after it).
        end: end (exclusive), ISO 8601 UTC.
        features: feature names to keep (default all of BAR_FEATURES + CROSS_FEATURES).
        regime_dir: directory of the daily regime CSVs (``fear_greed.csv`` ...); absent -> no regime
            (:func:`with_regime` with its defaults: the rules on the bars' closes and these files).
    """
    from training.backfill import _files, _ms

    if isinstance(paths_or_dir, (str, Path)) and Path(paths_or_dir).is_dir():
        d = Path(paths_or_dir)
        paths = []
        for s in symbols:
            found = sorted(d.glob(f"{s.replace('/', '_')}-{timeframe}.*"))
            if not found:
                raise FileNotFoundError(f"no candle file {s.replace('/', '_')}-{timeframe}.* in {d}")
            paths.append(found[0])
    else:
        paths = [Path(p) for p in ([paths_or_dir] if isinstance(paths_or_dir, (str, Path)) else paths_or_dir)]
    streams, tf = _files(paths, _ms(start), _ms(end))
    if tf != timeframe:
        raise ValueError(f"files hold {tf} candles, timeframe asks for {timeframe}")
    missing = [s for s in symbols if s not in streams]
    if missing:
        raise ValueError(f"symbols {missing} have no file among {[p.name for p in paths]}")
    md = market_data_from_bars({s: streams[s] for s in symbols}, timeframe, features)
    return with_regime(md, regime_dir) if regime_dir is not None else md


REGIME_NAMES: tuple[str, ...] = ("regime_score", "p_bull", "p_sideways", "p_bear", "p_high_vol")


def with_regime(md: MarketData, regime_dir: str | Path | None, model: Any = None, symbol: str | None = None,
                publication_lag_hours: float = 0.0) -> MarketData:
    """Attach the regime classifier's output at each bar's close, point in time, as ``md.regime``.

    The classifier (:mod:`flows.operators.regime`; ``model`` None = the rules) reads
    ``symbol``'s closes (default BTC/USDT when present, else the first asset) and the
    daily funding and Fear & Greed of ``regime_dir``
    (:func:`flows.operators.regime.load_daily_inputs`: a value dated day D is used only
    after D + 1 00:00 UTC + the publication lag; None or no file: prices alone).  Columns
    (:data:`REGIME_NAMES`): the score P(bull) - P(bear), then P(bull), P(sideways), P(bear)
    and P(high vol), the filtered probabilities known at the close.  Bars before the
    classifier's first label (its trend window, 30 days of the bars' own closes) are
    dropped, never filled.
    """
    from flows.operators.regime import RuleRegime, classify, load_daily_inputs

    ref = symbol or ("BTC/USDT" if "BTC/USDT" in md.symbols else md.symbols[0])
    a = _index(md.symbols, ref, "symbol")
    states = classify(md.decision_times // 1_000_000, md.close[:, a], model or RuleRegime(),
                      load_daily_inputs(regime_dir, publication_lag_hours))
    first = next((i for i, st in enumerate(states) if st is not None), None)
    if first is None:
        raise ValueError(f"no regime is known on any bar of {md.symbols} {md.timeframe} "
                         f"({md.n_bars} bars: the classifier needs its trend window of closes first)")
    out = np.array([[st.score, st.probs[0] + st.probs[1], st.probs[2] + st.probs[3], st.probs[4] + st.probs[5],
                     st.probs[0] + st.probs[2] + st.probs[4]] for st in states[first:] if st is not None])
    return replace(md.take(slice(first, None)), regime=out.astype(np.float32), regime_names=REGIME_NAMES)


def synthetic_market_data(seed: int, n_bars: int, n_assets: int, n_features: int = 8,
                          timeframe: str = "1h") -> MarketData:
    """Return a deterministic GBM market of ``n_bars`` bars (after warm-up) with the live features.

    Prices follow correlated geometric Brownian motions; candles carry the path's
    open, extremes and close; features come from the live operators, the first
    ``n_features`` of :data:`SYNTHETIC_ORDER` (scale-free ones first).
    """
    if n_bars < 2 or n_assets < 1:
        raise ValueError(f"n_bars must be >= 2 and n_assets >= 1, got {n_bars}, {n_assets}")
    if not 1 <= n_features <= len(SYNTHETIC_ORDER):
        raise ValueError(f"n_features must be in 1..{len(SYNTHETIC_ORDER)}, got {n_features}")
    rng = np.random.default_rng(seed)
    warm = WARMUP + 1  # the features' warm-up and the first return
    n = n_bars + warm
    tf = timeframe_ms(timeframe)
    vol = 0.01 * np.sqrt(tf / 3_600_000)
    corr = 0.5 * np.ones((n_assets, n_assets)) + 0.5 * np.eye(n_assets)
    z = rng.standard_normal((n, 4, n_assets)) @ np.linalg.cholesky(corr).T
    sub = vol / 2 * z  # four sub-steps per bar: open -> a -> b -> close
    path = np.log(100.0 * (1 + np.arange(n_assets))) + np.cumsum(sub.reshape(n * 4, n_assets), axis=0)
    px = np.exp(path).reshape(n, 4, n_assets)
    o = np.concatenate([np.exp(path[:1]), px[:-1, 3]])
    h = np.maximum(px.max(axis=1), o)
    lo = np.minimum(px.min(axis=1), o)
    c = px[:, 3]
    v = rng.lognormal(3.0, 0.5, (n, n_assets))
    t0 = 1_700_000_000_000 // tf * tf
    syms = ("BTC/USDT", *(f"A{i}/USDT" for i in range(1, n_assets)))
    streams: dict[str, list[Bar]] = {}
    for a, s in enumerate(syms):
        vw = (h[:, a] + lo[:, a] + c[:, a]) / 3
        streams[s] = [Bar(s, timeframe, t0 + i * tf, float(o[i, a]), float(h[i, a]), float(lo[i, a]),
                          float(c[i, a]), float(v[i, a]), float(v[i, a] * vw[i]), 0, float(vw[i]),
                          float(v[i, a] / 2)) for i in range(n)]
    md = market_data_from_bars(dict(streams), timeframe, SYNTHETIC_ORDER[:n_features], "synthetic")
    return md.take(slice(len(md.times) - n_bars, None))


def split_by_time(md: MarketData, *cuts: float | int | str | Any) -> tuple[MarketData, ...]:
    """Split ``md`` into consecutive out-of-sample pieces at the given cut points.

    Each cut is a fraction of the bars in (0, 1) or a time (ISO string, ``datetime``,
    ``pd.Timestamp`` or int ns) of the first bar of the next piece.  ``split_by_time(md, 0.7, 0.85)``
    returns three pieces (70 %, 15 %, 15 %).
    """
    import pandas as pd

    idx = []
    for c in cuts:
        if isinstance(c, float):
            if not 0.0 < c < 1.0:
                raise ValueError(f"split fraction {c} must be in (0, 1)")
            idx.append(int(round(c * md.n_bars)))
        else:
            ns = c if isinstance(c, (int, np.integer)) else pd.Timestamp(c).tz_localize("UTC").value \
                if pd.Timestamp(c).tzinfo is None else pd.Timestamp(c).value
            idx.append(int(np.searchsorted(md.times, int(ns), side="left")))
    bounds = [0, *idx, md.n_bars]
    if any(b1 <= b0 for b0, b1 in pairwise(bounds)):
        raise ValueError(f"split points {cuts} must be increasing and leave every piece non-empty "
                         f"(bar indices {bounds})")
    return tuple(md.take(slice(b0, b1)) for b0, b1 in pairwise(bounds))
