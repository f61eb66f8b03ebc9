"""Data mode (b): candle files expanded into trades, deterministically.

Files are named the freqtrade way, ``BASE_QUOTE-TF.ext`` (``BTC_USDT-1h.parquet``),
and hold parquet (``ts`` timestamp[ms, UTC] open time), CSV or freqtrade
feather (``date``) candles with ``open high low close volume``.

Each candle of interval I opening at t0 becomes n trades (n >= 4, Poisson
around ``trades_per_candle``), all vectorised over the whole file:

* times: strictly increasing integers in ``(t0, t0 + I)``;
* prices: open -> first extreme -> second extreme -> close (high or low first,
  a seeded coin biased by the candle's direction), piecewise linear plus a
  noise that vanishes at the anchors, clipped to ``[low, high]`` and rounded to
  the file's tick, so first = open, max = high, min = low, last = close exactly;
* sizes: positive integer lots of the file's volume grid summing to the
  volume exactly (the last trade takes the remainder).

Randomness comes from ``default_rng([seed, crc32("BTC/USDT 1h")])`` drawn over the
selected candles, so the same file, window and seed give the same trades.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from infra.replay_exchange.tape import CandleTable, Market, TradeTape
from infra.replay_exchange.wire import KLINE_INTERVALS_MS

CANDLE_EXTS = (".parquet", ".csv", ".feather")
_NAME_RE = re.compile(r"^(?P<base>[A-Za-z0-9]+)_(?P<quote>[A-Za-z0-9]+)-(?P<tf>\d+[smhdw])(?:-[a-z]+)?\.(parquet|csv|feather)$")
_TIME_COLUMNS = ("ts", "date", "timestamp", "open_time", "time")


@dataclass(frozen=True)
class CandleFile:
    """A candle file and what its name says: market and interval."""

    path: Path
    base: str
    quote: str
    interval: str

    @classmethod
    def from_path(cls, path: Path) -> CandleFile:
        """Parse ``BASE_QUOTE-TF.ext``.

        Raises:
            ValueError: If the name does not follow that pattern or TF is unknown.
        """
        m = _NAME_RE.match(path.name)
        if m is None or m["tf"] not in KLINE_INTERVALS_MS:
            raise ValueError(
                f"{path.name}: candle files must be named BASE_QUOTE-TF.ext (e.g. BTC_USDT-1h.parquet) "
                f"with TF one of {', '.join(KLINE_INTERVALS_MS)}"
            )
        return cls(path, m["base"].upper(), m["quote"].upper(), m["tf"])


def read_candles(path: Path, start_ms: int | None = None, end_ms: int | None = None) -> pd.DataFrame:
    """Read a candle file into columns ``ts`` (int64 ms) and float ``open high low close volume``.

    Raises:
        ValueError: On missing columns, unsorted or duplicate times, or
            candles whose high/low do not bound open and close.
    """
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
    elif path.suffix == ".feather":
        df = pd.read_feather(path)
    else:
        df = pd.read_csv(path)
    tcol = next((c for c in _TIME_COLUMNS if c in df.columns), None)
    missing = [c for c in ("open", "high", "low", "close", "volume") if c not in df.columns]
    if tcol is None or missing:
        raise ValueError(f"{path}: needs a time column ({'/'.join(_TIME_COLUMNS)}) and open high low close volume; missing {missing}")
    t = df[tcol]
    if pd.api.types.is_numeric_dtype(t):
        ms = t.to_numpy(dtype=np.int64)
        if len(ms) and ms.max() < 100_000_000_000:  # epoch seconds
            ms = ms * 1000
    else:
        ms = pd.DatetimeIndex(pd.to_datetime(t, utc=True)).as_unit("ms").asi8
    out = pd.DataFrame({"ts": ms, **{c: df[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close", "volume")}})
    if start_ms is not None:
        out = out[out.ts >= start_ms]
    if end_ms is not None:
        out = out[out.ts < end_ms]
    out = out.reset_index(drop=True)
    bad = (
        out[["open", "high", "low", "close", "volume"]].isna().any(axis=1)
        | (out.high < out[["open", "close"]].max(axis=1))
        | (out.low > out[["open", "close"]].min(axis=1))
        | (out.volume < 0)
    )
    if bad.any():
        raise ValueError(f"{path}: row {int(np.flatnonzero(bad.to_numpy())[0])} is not a valid candle (NaN, high/low or volume)")
    if (np.diff(out.ts.to_numpy()) <= 0).any():
        raise ValueError(f"{path}: candle times must be strictly increasing")
    return out


def grid_decimals(values: np.ndarray, most: int = 8) -> int | None:
    """Return the fewest decimals d with every value exactly ``round(v * 10**d) / 10**d``, else None."""
    for d in range(most + 1):
        scale = 10.0**d
        if np.array_equal(np.round(values * scale) / scale, values):
            return d
    return None


def expand_candles(cf: CandleFile, df: pd.DataFrame, seed: int, trades_per_candle: float, first_id: int = 1) -> TradeTape:
    """Expand candles into a trade tape (see the module docstring for the rules).

    Args:
        cf: The file's market and interval.
        df: Candles from :func:`read_candles`.
        seed: Seed; the same seed and candles give the same trades.
        trades_per_candle: Mean trades per candle (at least 4).
        first_id: Id of the first trade.
    """
    if trades_per_candle < 4:
        raise ValueError("trades_per_candle must be >= 4 (open, high, low and close each need a trade)")
    interval_ms = KLINE_INTERVALS_MS[cf.interval]
    t0, o, h, lo, c, v = (df[k].to_numpy() for k in ("ts", "open", "high", "low", "close", "volume"))
    k_count = len(t0)
    rng = np.random.default_rng([seed, zlib.crc32(f"{cf.base}/{cf.quote} {cf.interval}".encode())])
    dp = grid_decimals(np.concatenate([o, h, lo, c]))
    dq, lots_total = _lot_grid(v)

    n = 4 + rng.poisson(trades_per_candle - 4, k_count)
    n = np.where(v > 0, np.minimum(np.minimum(n, interval_ms - 1), np.maximum(lots_total, 1)), 0).astype(np.int64)
    ends = np.cumsum(n)
    starts = ends - n
    cand = np.repeat(np.arange(k_count), n)
    j = np.arange(ends[-1] if k_count else 0) - starts[cand]
    nn = n[cand]

    # Price path: anchors at 0, k1, k2, n-1 (k1 < k2 for n >= 4).
    k1 = 1 + np.floor(rng.random(k_count) * np.maximum(n - 3, 0)).astype(np.int64)
    k2 = k1 + 1 + np.floor(rng.random(k_count) * np.maximum(n - 2 - k1, 0)).astype(np.int64)
    k1, k2 = np.minimum(k1, np.maximum(n - 1, 0)), np.minimum(k2, np.maximum(n - 1, 0))
    high_first = rng.random(k_count) < np.where(c >= o, 0.35, 0.65)
    e1, e2 = np.where(high_first, h, lo), np.where(high_first, lo, h)
    k1r, k2r = k1[cand], k2[cand]
    seg = (j > k1r).astype(np.int8) + (j > k2r)
    a = np.choose(seg, [o[cand], e1[cand], e2[cand]])
    b = np.choose(seg, [e1[cand], e2[cand], c[cand]])
    seg_start = np.choose(seg, [np.zeros_like(j), k1r, k2r])
    seg_len = np.maximum(np.choose(seg, [k1r, k2r - k1r, nn - 1 - k2r]), 1)
    frac = (j - seg_start) / seg_len
    noise = (h - lo)[cand] * 0.2 * np.sqrt(frac * (1.0 - frac)) * rng.standard_normal(len(j))
    price = np.clip(a + (b - a) * frac + noise, lo[cand], h[cand])
    if dp is not None:
        price = np.round(price * 10.0**dp) / 10.0**dp
    has = n > 0
    s = starts[has]
    price[s + k1[has]] = e1[has]
    price[s + k2[has]] = e2[has]
    price[s] = o[has]
    price[s + n[has] - 1] = c[has]

    # Times: sorted uniforms per candle, spread so they strictly increase inside (t0, t0 + I).
    u = rng.random(len(j)) + cand
    u.sort()
    ut = np.clip(u - cand, 0.0, np.nextafter(1.0, 0.0))
    ts = t0[cand] + np.floor(ut * (interval_ms - nn)).astype(np.int64) + j + 1

    qty = _sizes(rng, v, lots_total, dq, n, starts, cand)
    step = np.diff(price, prepend=np.nan)
    coin = rng.random(len(j)) < 0.5
    buyer_maker = np.where((j == 0) | (step == 0), coin, step < 0)

    taker = ~buyer_maker
    notional = price * qty
    candles = CandleTable(
        interval=cf.interval, interval_ms=interval_ms, ts=t0, open=o, high=h, low=lo, close=c, volume=v,
        trade_end=ends,
        quote_volume=np.bincount(cand, notional, k_count),
        trades=n,
        taker_base=np.bincount(cand, np.where(taker, qty, 0.0), k_count),
        taker_quote=np.bincount(cand, np.where(taker, notional, 0.0), k_count),
    )
    market = Market(cf.base, cf.quote, dp, dq)
    return TradeTape(market, first_id + np.arange(len(j), dtype=np.int64), ts, price, qty, buyer_maker, candles=candles)


def _lot_grid(volume: np.ndarray) -> tuple[int | None, np.ndarray]:
    """Return the lot decimals (None if off-grid) and each candle's volume in lots.

    Decimals grow past the file's grid until every traded candle has >= 4 lots.
    """
    positive = volume[volume > 0]
    dq = grid_decimals(volume)
    if dq is not None:
        while dq < 8 and len(positive) and np.round(positive.min() * 10.0**dq) < 4:
            dq += 1
        lots = np.round(volume * 10.0**dq).astype(np.int64)
        if not len(positive) or lots[volume > 0].min() >= 4:
            return dq, lots
    return None, np.round(volume * 1e8).astype(np.int64)


def _sizes(
    rng: np.random.Generator, volume: np.ndarray, lots_total: np.ndarray, dq: int | None,
    n: np.ndarray, starts: np.ndarray, cand: np.ndarray,
) -> np.ndarray:
    """Split each candle's volume into n positive sizes that sum to it."""
    w = rng.lognormal(0.0, 1.0, len(cand))
    total_w = np.bincount(cand, w, len(n))
    extra = np.maximum(lots_total - n, 0)
    lots = np.floor(w / total_w[cand] * extra[cand]).astype(np.int64) + 1
    has = n > 0
    last = starts[has] + n[has] - 1
    lots[last] = 0
    if dq is not None:
        lots[last] = lots_total[has] - np.add.reduceat(lots, starts[has])
        return lots / 10.0**dq
    qty = lots / 1e8  # off-grid volumes: float sizes, the last one takes the exact remainder
    qty[last] = volume[has] - np.add.reduceat(qty, starts[has])
    return qty
