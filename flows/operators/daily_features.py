"""Daily feature groups: the on-chain, funding and sentiment features and their point in time.

A group's raw daily values (``flows.sources.daily``) become features with the formulas below.
Each row describes day D and uses days up to D only; it is known at
``ts = D + 1 day + publication lag`` (the group's lag, ``flows/feature_groups.py``, overridable
per deployment), and ``ts`` is its Feast event timestamp.  Days missing from a provider are
carried forward from the last day before them (at most :data:`MAX_CARRY` days), which uses no
later information.  Rows before warm-up (or not finite) are absent, never zero-filled.

Definitions (``F`` Fear & Greed, ``H`` hash rate, ``D`` difficulty, ``f`` funding rates of a day;
``mean_n``/``std_n`` over the last n days including the current one, population std):

================  ======================================================  =======
feature           formula                                                 warm-up
================  ======================================================  =======
fng               F_t (0-100)                                             1 day
fng_chg_1         F_t - F_{t-1}                                           2 days
fng_z_30          (F_t - mean_30(F)) / std_30(F); 0 when std is 0         30 days
hr_ribbon         mean_30(H) / mean_60(H) - 1 (the hash ribbon spread)    60 days
hr_capitulation   1 when mean_30(H) < mean_60(H) (miner capitulation),    60 days
                  else 0
hr_mom_30         ln(mean_30(H)_t / mean_30(H)_{t-30})                    60 days
diff_chg_14       ln(D_t / D_{t-14})                                      15 days
diff_chg_56       ln(D_t / D_{t-56})                                      57 days
fund_mean         mean(f) of the day (BTC perpetual, Binance USD-M)       1 day
fund_z_30         (m_t - mean_30(m)) / std_30(m), m = fund_mean;          30 days
                  0 when std is 0
fund_abs          mean(abs(f)) of the day                                 1 day
================  ======================================================  =======
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from flows.feature_groups import DAILY_TIMEFRAME, FeatureGroup, daily_groups, group
from flows.records import FeatureRow
from flows.sources.daily import DailyFeed

MAX_CARRY = 3  # days a missing provider day is carried forward
WARMUP_DAYS: dict[str, int] = {"fear_greed": 30, "hash_rate": 60, "difficulty": 57, "funding": 30}


def _z(x: pd.Series, n: int) -> pd.Series:
    m, s = x.rolling(n, min_periods=n).mean(), x.rolling(n, min_periods=n).std(ddof=0)
    return ((x - m) / s.where(s > 0)).where(s > 0, 0.0).where(s.notna())


def _fear_greed(r: pd.DataFrame) -> pd.DataFrame:
    f = r["fng"]
    return pd.DataFrame({"fng": f, "fng_chg_1": f.diff(), "fng_z_30": _z(f, 30)})


def _hash_rate(r: pd.DataFrame) -> pd.DataFrame:
    h = r["hashrate"].where(r["hashrate"] > 0)
    m30, m60 = h.rolling(30, min_periods=30).mean(), h.rolling(60, min_periods=60).mean()
    return pd.DataFrame({"hr_ribbon": m30 / m60 - 1.0, "hr_capitulation": (m30 < m60).astype(float).where(m60.notna()),
                         "hr_mom_30": np.log(m30 / m30.shift(30))})


def _difficulty(r: pd.DataFrame) -> pd.DataFrame:
    d = r["difficulty"].where(r["difficulty"] > 0)
    return pd.DataFrame({"diff_chg_14": np.log(d / d.shift(14)), "diff_chg_56": np.log(d / d.shift(56))})


def _funding(r: pd.DataFrame) -> pd.DataFrame:
    m = r["funding_mean"]
    return pd.DataFrame({"fund_mean": m, "fund_z_30": _z(m, 30), "fund_abs": r["funding_abs"]})


COMPUTE: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    "fear_greed": _fear_greed, "hash_rate": _hash_rate, "difficulty": _difficulty, "funding": _funding}


def compute(g: FeatureGroup, raw: pd.DataFrame, lag: Any) -> pd.DataFrame:
    """Return ``date``, ``ts`` (known-at) and the group's features from its raw daily rows (warm rows only)."""
    if raw.empty:
        return pd.DataFrame(columns=["date", "ts", *g.features])
    days = pd.date_range(raw["date"].min(), raw["date"].max(), freq="D")
    r = raw.set_index("date")[list(g.raw)].reindex(days).ffill(limit=MAX_CARRY)
    out = COMPUTE[g.name](r)[list(g.features)]
    out = out.replace([np.inf, -np.inf], np.nan).dropna()
    out.insert(0, "ts", out.index + pd.Timedelta(days=1) + pd.Timedelta(lag))
    return out.rename_axis("date").reset_index()


def _ns(ts: pd.Series) -> np.ndarray:
    """Return UTC timestamps as int64 nanoseconds."""
    return ts.dt.as_unit("ns").astype("int64").to_numpy()


@dataclass
class DailyFeatures:
    """The daily groups' features of a :class:`DailyFeed`, computed once per group and looked up as of a time.

    ``features_as_of(group, t)`` is what the flow's side input and the parity tests call: the
    latest row with ``ts <= t`` and ``t - ts < ttl`` (as Feast serves it), else ``None``.
    """

    feed: DailyFeed
    groups: tuple[str, ...] = field(default_factory=lambda: tuple(g.name for g in daily_groups()))
    _frames: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    def frame(self, name: str) -> pd.DataFrame:
        """Return the group's feature rows (``date``, ``ts``, features), ascending in ``ts``."""
        g = group(name)
        if g.name not in self._frames:
            self._frames[g.name] = compute(g, self.feed.history(g.name), self.feed.lag(g.name))
        return self._frames[g.name]

    def refresh(self, name: str | None = None) -> None:
        """Drop computed rows and the feed's cache of one group (all: None); the next lookup asks again."""
        for n in [group(name).name] if name else list(self.groups):
            self._frames.pop(n, None)
            self.feed.refresh(n)

    def features_as_of(self, name: str, t: pd.Timestamp | int) -> dict[str, float] | None:
        """Return the group's features known at ``t`` (UTC timestamp or ms), ``None`` when none is within TTL."""
        g = group(name)
        ts = pd.Timestamp(t, unit="ms", tz="UTC") if isinstance(t, int | np.integer) else pd.Timestamp(t)
        f = self.frame(g.name)
        i = int(np.searchsorted(_ns(f["ts"]), ts.value, side="right")) - 1
        if i < 0 or ts - f["ts"].iloc[i] >= pd.Timedelta(g.ttl):
            return None
        row = f.iloc[i]
        return {c: float(row[c]) for c in g.features}

    def vector_as_of(self, names: Iterable[str], t: pd.Timestamp | int) -> dict[str, float]:
        """Return every feature of the groups known at ``t`` (NaN for a group without a value)."""
        out: dict[str, float] = {}
        for n in names:
            got = self.features_as_of(n, t)
            out.update(got if got is not None else dict.fromkeys(group(n).features, float("nan")))
        return out

    def rows(self, symbols: Iterable[str], start: pd.Timestamp | None = None,
             end: pd.Timestamp | None = None) -> list[FeatureRow]:
        """Return the feature rows with ``ts`` in [start, end) of every group, once per symbol (the Feast entity)."""
        out: list[FeatureRow] = []
        syms = tuple(symbols)
        for name in self.groups:
            g = group(name)
            f = self.frame(name)
            if start is not None:
                f = f[f["ts"] >= start]
            if end is not None:
                f = f[f["ts"] < end]
            ms = _ns(f["ts"]) // 1_000_000
            vals = f[list(g.features)].to_numpy(float)
            for ts, v in zip(ms, vals, strict=True):
                values = dict(zip(g.features, map(float, v), strict=True))
                out += [FeatureRow(g.table, s, DAILY_TIMEFRAME, int(ts), values) for s in syms]
        return out


@dataclass
class PollingDaily:
    """The live side input: :class:`DailyFeatures` that asks its providers again when a value is due.

    The clock is the bar close asked about (never the wall clock): once ``t`` passes the moment
    a group's next day becomes known (last ``ts`` + 1 day), the group is fetched again, at most
    once per ``poll`` of bar time, so a late provider is retried until its value arrives.
    """

    daily: DailyFeatures
    poll: Any  # timedelta
    _polled: dict[str, pd.Timestamp] = field(default_factory=dict, repr=False)
    polls: int = 0

    @property
    def groups(self) -> tuple[str, ...]:
        """Return the groups served."""
        return self.daily.groups

    def _due(self, name: str, t: pd.Timestamp) -> bool:
        f = self.daily.frame(name)
        if len(f) and t < f["ts"].iloc[-1] + pd.Timedelta(days=1):
            return False
        last = self._polled.get(name)
        return last is None or t - last >= pd.Timedelta(self.poll)

    def vector_as_of(self, names: Iterable[str], t: pd.Timestamp | int) -> dict[str, float]:
        """Return the groups' features known at ``t``, polling a group whose next value is due."""
        ts = pd.Timestamp(t, unit="ms", tz="UTC") if isinstance(t, int | np.integer) else pd.Timestamp(t)
        names = tuple(names)
        for n in names:
            if self._due(n, ts):
                self._polled[n] = ts
                self.polls += 1
                self.daily.refresh(n)
        return self.daily.vector_as_of(names, ts)

    def features_as_of(self, name: str, t: pd.Timestamp | int) -> dict[str, float] | None:
        """Return one group's features known at ``t`` (polling as :meth:`vector_as_of`)."""
        self.vector_as_of((name,), t)
        return self.daily.features_as_of(name, t)


class DailyRowEmitter:
    """Live: at each bar close, the daily rows that became known since the last close, once per symbol.

    Their ``ts`` is the moment they became known (as offline), so the history and Feast online
    sinks store exactly what the backfill stores.  The first close emits each group's latest
    known row (the online store starts current); a restart emits it again (idempotent upserts).
    """

    def __init__(self, daily: PollingDaily | DailyFeatures, symbols: Iterable[str]) -> None:
        self.daily, self.symbols = daily, tuple(symbols)
        self.last: dict[str, pd.Timestamp] = {}

    def on_close(self, close_ms: int) -> list[FeatureRow]:
        """Return the rows known at ``close_ms`` and not emitted yet (polling the providers when one is due)."""
        t = pd.Timestamp(close_ms, unit="ms", tz="UTC")
        feats = self.daily.daily if isinstance(self.daily, PollingDaily) else self.daily
        out: list[FeatureRow] = []
        for name in feats.groups:
            self.daily.vector_as_of((name,), t)  # the polling side input refreshes a due group here
            f = feats.frame(name)
            known = f[f["ts"] <= t]
            last = self.last.get(name)
            new = known.tail(1) if last is None else known[known["ts"] > last]
            if new.empty:
                continue
            self.last[name] = new["ts"].iloc[-1]
            g = group(name)
            for ts, vals in zip(_ns(new["ts"]) // 1_000_000, new[list(g.features)].to_numpy(float), strict=True):
                values = dict(zip(g.features, map(float, vals), strict=True))
                out += [FeatureRow(g.table, s, DAILY_TIMEFRAME, int(ts), values) for s in self.symbols]
        return out


def lags_from_minutes(minutes: Mapping[str, float]) -> dict[str, Any]:
    """Return publication-lag overrides as timedeltas from ``daily.lag_minutes``."""
    return {group(k).name: pd.Timedelta(minutes=float(v)).to_pytimedelta() for k, v in minutes.items()}
