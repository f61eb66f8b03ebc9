"""Per-symbol bar features, computed incrementally from closed bars only.

One :class:`FeatureEngine` per (symbol, timeframe); ``update(bar)`` returns the
features known at the bar's close, or ``None`` until every feature has warmed up
(features are absent before warm-up, never zero-filled).  The state is plain data
(``snapshot``) so Bytewax recovery restores it exactly.

Definitions (``c`` close, ``h`` high, ``l`` low, ``v`` volume, ``r_t = ln(c_t / c_{t-1})``):

=================  ==========================================================  =======
feature            formula                                                     warm-up
=================  ==========================================================  =======
ret_k (1,5,15,60)  ln(c_t / c_{t-k})                                           k + 1
rv_n (15, 60)      sqrt(sum of r^2 over the last n bars)                        n + 1
rsi_14             100 - 100 / (1 + G / L), G, L = Wilder means (alpha 1/14,    313
                   seeded with the first change) of gains and losses; 100 if
                   L = 0, 50 if both are 0
macd               EMA12(c) - EMA26(c) (EMA: alpha 2/(span+1), seeded with c_0)  301
macd_signal        EMA9(macd)                                                  301
macd_hist          macd - macd_signal                                          301
bb_pctb            (c - (m - 2s)) / (4s), m, s = mean and population std of     20
                   the last 20 closes; 0.5 when s = 0
bb_bandwidth       4s / m                                                      20
atr_14             Wilder mean (alpha 1/14, seeded with TR_1) of true range     313
                   max(h - l, |h - c_{t-1}|, |l - c_{t-1}|), divided by c
volume_z_60        (v - mean60(v)) / std60(v) (population); 0 when std is 0     60
vwap_dist          (c - vwap) / vwap of the bar                                1
taker_imbalance    (2 taker_buy_v - v) / v; 0 when v = 0                       1
trade_count        trades in the bar                                           1
hl_range           (h - l) / c                                                 1
hour_sin/cos       sin/cos(2 pi hour / 24) of the bar's close time             1
dow_sin/cos        sin/cos(2 pi weekday / 7) of the bar's close time           1
=================  ==========================================================  =======

The engine is warm after ``WARMUP`` bars (313): every feature is then finite, and
every recursive mean (EMA, Wilder mean) has *converged*: the weight its seed still
carries, ``(1 - alpha)^k`` after ``k`` updates, is below ``SEED_WEIGHT`` (1e-10).
A recursion seeded with its first value makes a fresh start's features differ from
a long history's (MACD signal by up to 10 %, RSI by ~2 points for ~240 bars after a
61-bar warm-up); after ``WARMUP`` bars features of the same bars agree to ~1e-10
relative whatever bar the history started at, so the flow started afresh, the
backfill and training see the same values (issue 17, defect 10).  A fresh live
start warms up from the exchange's klines (``exchange.warmup_klines``).
"""

from __future__ import annotations

import math
from collections import deque
from itertools import islice, repeat
from operator import mul, sub
from typing import Any

from flows.records import Bar
from flows.timeframes import timeframe_ms

RET_LAGS = (1, 5, 15, 60)
RV_WINDOWS = (15, 60)
SEED_WEIGHT = 1e-10  # a recursive mean has converged once its seed weighs less than this
FEATURES: tuple[str, ...] = (
    "ret_1", "ret_5", "ret_15", "ret_60", "rv_15", "rv_60", "rsi_14",
    "macd", "macd_signal", "macd_hist", "bb_pctb", "bb_bandwidth", "atr_14",
    "volume_z_60", "vwap_dist", "taker_imbalance", "trade_count", "hl_range",
    "hour_sin", "hour_cos", "dow_sin", "dow_cos",
)
_A12, _A26, _A9, _AW = 2 / 13, 2 / 27, 2 / 10, 1 / 14


def converged_after(alpha: float, seed_bar: int) -> int:
    """Return the bars after which a recursive mean seeded at bar ``seed_bar`` (0-based) has converged.

    The seed's weight after ``k`` further updates is ``(1 - alpha)^k``; the mean has
    converged once that is below :data:`SEED_WEIGHT`.
    """
    return seed_bar + 1 + math.ceil(math.log(SEED_WEIGHT) / math.log(1 - alpha))


# Bars before a feature row: ret_60 needs 61 closes; the EMAs are seeded with the first
# close (bar 0), the Wilder means with the first change (bar 1).  The MACD signal (EMA9
# of EMA12 - EMA26) inherits EMA26's seed, decaying at EMA26's rate (its weight there is
# ~1.5 x (25/27)^k, ~5e-11 at WARMUP).  313, shared by the flow and training.history_features.
WARMUP = max(RET_LAGS[-1] + 1, converged_after(_A12, 0), converged_after(_A26, 0), converged_after(_A9, 0),
             converged_after(_AW, 1))
_DAY_MS, _EPOCH_WEEKDAY = 86_400_000, 3  # 1970-01-01 was a Thursday (Monday = 0)
_RET_NAMES = tuple((k, f"ret_{k}") for k in RET_LAGS)
_RV_NAMES = tuple((n, f"rv_{n}") for n in RV_WINDOWS)
# sin/cos of the time of day and of the weekday: a bar timeframe has few distinct
# values (1440 for 1m), so each is computed once; the values are the same floats.
_CLOCK: dict[int, tuple[float, float]] = {}
_WEEK: dict[int, tuple[float, float]] = {}


def _ema(prev: float | None, x: float, alpha: float) -> float:
    return x if prev is None else prev + alpha * (x - prev)


def _mean_std(values: list[float] | deque[float]) -> tuple[float, float]:
    # Two passes: a running sum of squares would lose ~1e-9 on prices near 1e5.
    # (map over operator functions: the same arithmetic as a comprehension, in C.)
    n = len(values)
    m = sum(values) / n
    d = list(map(sub, values, repeat(m, n)))
    return m, math.sqrt(sum(map(mul, d, d)) / n)


def _time_of_day(ms_of_day: int) -> tuple[float, float]:
    hour = ms_of_day / 3_600_000
    return math.sin(2 * math.pi * hour / 24), math.cos(2 * math.pi * hour / 24)


def _weekday(dow: int) -> tuple[float, float]:
    return math.sin(2 * math.pi * dow / 7), math.cos(2 * math.pi * dow / 7)


class FeatureEngine:
    """Incremental features of one symbol and timeframe."""

    def __init__(self, timeframe: str, state: dict[str, Any] | None = None) -> None:
        self.timeframe = timeframe
        self.tf_ms = timeframe_ms(timeframe)
        s = state or {}
        self.n: int = s.get("n", 0)
        self.closes: deque[float] = deque(s.get("closes", ()), maxlen=61)
        self.sq_rets: deque[float] = deque(s.get("sq_rets", ()), maxlen=60)
        self.volumes: deque[float] = deque(s.get("volumes", ()), maxlen=60)
        self.ema: dict[str, float | None] = dict(s.get("ema", {"e12": None, "e26": None, "sig": None,
                                                             "gain": None, "loss": None, "atr": None}))

    def snapshot(self) -> dict[str, Any]:
        """Return the state as plain data."""
        return {"n": self.n, "closes": list(self.closes), "sq_rets": list(self.sq_rets),
                "volumes": list(self.volumes), "ema": dict(self.ema)}

    def update(self, bar: Bar) -> dict[str, float] | None:
        """Add a closed bar; return its features once warm, else ``None``."""
        c, e = bar.close, self.ema
        prev = self.closes[-1] if self.closes else None
        if prev is not None:
            r = math.log(c / prev)
            self.sq_rets.append(r * r)
            change = c - prev
            e["gain"] = _ema(e["gain"], change if change > 0 else 0.0, _AW)
            e["loss"] = _ema(e["loss"], -change if change < 0 else 0.0, _AW)
            tr = max(bar.high - bar.low, abs(bar.high - prev), abs(bar.low - prev))
            e["atr"] = _ema(e["atr"], tr, _AW)
        e["e12"] = _ema(e["e12"], c, _A12)
        e["e26"] = _ema(e["e26"], c, _A26)
        macd = e["e12"] - e["e26"]  # type: ignore[operator]
        e["sig"] = _ema(e["sig"], macd, _A9)
        self.closes.append(c)
        self.volumes.append(bar.volume)
        self.n += 1
        if self.n < WARMUP:
            return None
        return self._features(bar, macd)

    def _features(self, bar: Bar, macd: float) -> dict[str, float]:
        c, e, closes = bar.close, self.ema, self.closes
        f: dict[str, float] = {}
        for k, name in _RET_NAMES:
            f[name] = math.log(c / closes[-1 - k])
        sq = self.sq_rets
        for n, name in _RV_NAMES:
            f[name] = math.sqrt(sum(islice(sq, max(len(sq) - n, 0), None)))
        gain, loss = e["gain"] or 0.0, e["loss"] or 0.0
        f["rsi_14"] = 50.0 if gain == 0.0 and loss == 0.0 else (100.0 if loss == 0.0 else 100.0 - 100.0 / (1.0 + gain / loss))
        sig = e["sig"]
        assert sig is not None and e["atr"] is not None
        f["macd"], f["macd_signal"], f["macd_hist"] = macd, sig, macd - sig
        m, s = _mean_std(list(islice(closes, max(len(closes) - 20, 0), None)))
        f["bb_pctb"] = 0.5 if s == 0.0 else (c - (m - 2 * s)) / (4 * s)
        f["bb_bandwidth"] = 4 * s / m
        f["atr_14"] = e["atr"] / c
        vm, vs = _mean_std(self.volumes)
        f["volume_z_60"] = 0.0 if vs == 0.0 else (bar.volume - vm) / vs
        f["vwap_dist"] = (c - bar.vwap) / bar.vwap
        f["taker_imbalance"] = 0.0 if bar.volume == 0.0 else (2 * bar.taker_buy_volume - bar.volume) / bar.volume
        f["trade_count"] = float(bar.trade_count)
        f["hl_range"] = (bar.high - bar.low) / c
        close_ms = bar.ts + self.tf_ms
        ms_of_day, dow = close_ms % _DAY_MS, (close_ms // _DAY_MS + _EPOCH_WEEKDAY) % 7
        clock = _CLOCK.get(ms_of_day)
        if clock is None:
            clock = _CLOCK[ms_of_day] = _time_of_day(ms_of_day)
        week = _WEEK.get(dow)
        if week is None:
            week = _WEEK[dow] = _weekday(dow)
        f["hour_sin"], f["hour_cos"] = clock
        f["dow_sin"], f["dow_cos"] = week
        return f
