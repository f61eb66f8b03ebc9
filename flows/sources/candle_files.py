"""Candle files on the project side: names and contents, for the backfill, the report and the RL jobs.

Files are named the freqtrade way, ``BASE_QUOTE-TF.ext`` (``BTC_USDT-1h.parquet``),
and hold parquet (``ts`` timestamp[ms, UTC] open time), CSV or freqtrade feather
(``date``) candles with ``open high low close volume``.

The replay exchange reads the same files with a reader of its own
(``infra/replay_exchange/candles.py``): the exchange double and the system it
tests share no code, so a reader bug cannot hide on both sides of a parity test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from flows.timeframes import TIMEFRAME_RE

CANDLE_EXTS = (".parquet", ".csv", ".feather")
OHLCV = ("open", "high", "low", "close", "volume")
_NAME_RE = re.compile(r"^(?P<base>[A-Za-z0-9]+)_(?P<quote>[A-Za-z0-9]+)-(?P<tf>\d+[smhdw])(?:-[a-z]+)?\.(parquet|csv|feather)$")
_TIME_COLUMNS = ("ts", "date", "timestamp", "open_time", "time")
_EPOCH_S_BELOW = 100_000_000_000  # a time column below this counts epoch seconds, not ms


@dataclass(frozen=True)
class CandleFile:
    """A candle file and what its name says: market and timeframe."""

    path: Path
    base: str
    quote: str
    interval: str

    @property
    def symbol(self) -> str:
        """Return the ccxt symbol, ``BASE/QUOTE``."""
        return f"{self.base}/{self.quote}"

    @classmethod
    def from_path(cls, path: Path) -> CandleFile:
        """Parse ``BASE_QUOTE-TF.ext``.

        Raises:
            ValueError: If the name does not follow that pattern or TF is no timeframe
                the flow's operators handle (``<n><s|m|h|d>``).
        """
        m = _NAME_RE.match(path.name)
        if m is None or not TIMEFRAME_RE.match(m["tf"]):
            raise ValueError(f"{path.name}: candle files must be named BASE_QUOTE-TF.ext (e.g. BTC_USDT-1h.parquet) "
                             "with TF a timeframe <n><s|m|h|d> such as 1m, 5m, 1h, 1d")
        return cls(path, m["base"].upper(), m["quote"].upper(), m["tf"])


def read_candles(path: Path, start_ms: int | None = None, end_ms: int | None = None) -> pd.DataFrame:
    """Read a candle file into columns ``ts`` (int64 ms, open time) and float ``open high low close volume``.

    Args:
        path: A ``.parquet``, ``.feather`` or ``.csv`` file.
        start_ms: Keep candles opening at or after this time.
        end_ms: Keep candles opening before this time.

    Raises:
        ValueError: naming the file: when it is missing or unreadable (truncated), on missing
            columns, unsorted or duplicate times, or candles whose high/low do not bound open and close.
    """
    readers = {".parquet": pd.read_parquet, ".feather": pd.read_feather}
    try:
        df = readers.get(path.suffix, pd.read_csv)(path)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid and pandas' parser errors are ValueErrors
        raise ValueError(f"{path}: cannot read it as a {path.suffix.lstrip('.') or 'CSV'} candle file "
                         f"(truncated or not that format?): {exc}") from None
    tcol = next((c for c in _TIME_COLUMNS if c in df.columns), None)
    missing = [c for c in OHLCV if c not in df.columns]
    if tcol is None or missing:
        raise ValueError(f"{path}: needs a time column ({'/'.join(_TIME_COLUMNS)}) and open high low close volume; "
                         f"missing {missing}")
    times = df[tcol]
    if pd.api.types.is_numeric_dtype(times):
        ms = times.to_numpy(dtype=np.int64)
        ms = ms * 1000 if len(ms) and ms.max() < _EPOCH_S_BELOW else ms
    elif isinstance(times.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(times):
        # already datetimes: to_datetime would first probe them one Timestamp at a time (a third of a read)
        idx = pd.DatetimeIndex(times)
        ms = (idx.tz_convert("UTC") if idx.tz is not None else idx.tz_localize("UTC")).as_unit("ms").asi8
    else:
        ms = pd.DatetimeIndex(pd.to_datetime(times, utc=True)).as_unit("ms").asi8
    keep = np.ones(len(ms), dtype=bool)
    if start_ms is not None:
        keep &= ms >= start_ms
    if end_ms is not None:
        keep &= ms < end_ms
    out = pd.DataFrame({"ts": ms[keep], **{c: df[c].to_numpy(dtype=np.float64)[keep] for c in OHLCV}})
    o, h, lo, c, v = (out[k].to_numpy() for k in OHLCV)
    bad = np.isnan(out[list(OHLCV)].to_numpy()).any(axis=1) | (h < np.maximum(o, c)) | (lo > np.minimum(o, c)) | (v < 0)
    if bad.any():
        raise ValueError(f"{path}: row {int(np.flatnonzero(bad)[0])} is not a valid candle (NaN, high/low or volume)")
    if (np.diff(out.ts.to_numpy()) <= 0).any():
        raise ValueError(f"{path}: candle times must be strictly increasing")
    return out
