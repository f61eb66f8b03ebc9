"""Circuit breakers per symbol: stale data, price gaps, volatility spikes.

Fed one bar at a time (:meth:`Breakers.on_bar`), asked at decision time
(:meth:`Breakers.tripped`).  A symbol's breaker is tripped when

- **stale_data**: no bar for ``stale_bars`` bar lengths before the decision, or
  the last ``stale_bars`` bars did not move (returns exactly 0: bars filled for
  minutes without trades);
- **price_gap**: a bar's ``|return|`` exceeded ``gap_sigma`` times the slow
  volatility before it (after ``warmup_bars``), for ``cooldown_bars`` bars after;
- **volatility_spike**: the fast volatility (EWMA of r^2, ``fast_halflife_bars``)
  is more than ``spike_ratio`` times the slow one (``slow_halflife_bars``), after
  ``warmup_bars``, and for ``cooldown_bars`` bars after.

The bar length is the smallest gap seen between a symbol's bars.  State is plain
data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from operator import itemgetter, lt, sub
from typing import Any

import numpy as np

from flows.risk.config import BreakersConfig

SERIES_FROM = 48  # bars of one symbol in one call of Breakers.on_bars from which its numpy form is cheaper


@dataclass(slots=True)
class SymbolState:
    """One symbol's breaker inputs."""

    last_ts: int | None = None  # open time of the latest bar
    bars: int = 0
    flat_run: int = 0
    fast_var: float = 0.0
    slow_var: float = 0.0
    gap_until: int = -1  # bar count until which the gap breaker stays tripped
    spike_until: int = -1
    last_gap: str = ""
    last_spike: str = ""


class Breakers:
    """Stale-data, price-gap and volatility-spike breakers for every symbol."""

    def __init__(self, cfg: BreakersConfig) -> None:
        """Create empty breakers."""
        self.cfg = cfg
        self.fast_a = 1.0 - 0.5 ** (1.0 / cfg.fast_halflife_bars)
        self.slow_a = 1.0 - 0.5 ** (1.0 / cfg.slow_halflife_bars)
        self.symbols: dict[str, SymbolState] = {}
        self.bar_ms: int | None = None

    def on_bar(self, symbol: str, ts: int, ret: float) -> None:
        """Take a symbol's bar (open time ``ts``) and its return over the previous close."""
        s = self.symbols.get(symbol)
        if s is None:
            s = self.symbols[symbol] = SymbolState()
        if s.last_ts is not None:
            if ts <= s.last_ts:
                return  # a repeated or late bar changes nothing
            gap = ts - s.last_ts
            self.bar_ms = gap if self.bar_ms is None else min(self.bar_ms, gap)
        first = s.last_ts is None
        s.last_ts = ts
        if first or not math.isfinite(ret):
            return
        cfg, r2 = self.cfg, ret * ret
        s.flat_run = s.flat_run + 1 if ret == 0.0 else 0
        s.bars += 1
        if s.bars > cfg.warmup_bars:
            slow = math.sqrt(s.slow_var)
            if slow > 0 and abs(ret) > cfg.gap_sigma * slow:
                s.gap_until = s.bars + cfg.cooldown_bars
                s.last_gap = f"return {ret:+.4%} is {abs(ret) / slow:.1f} sigma (limit {cfg.gap_sigma:g})"
        s.fast_var += self.fast_a * (r2 - s.fast_var) if s.bars > 1 else r2
        s.slow_var += self.slow_a * (r2 - s.slow_var) if s.bars > 1 else r2
        if s.bars > cfg.warmup_bars and s.slow_var > 0:
            ratio = math.sqrt(s.fast_var / s.slow_var)
            if ratio > cfg.spike_ratio:
                s.spike_until = s.bars + cfg.cooldown_bars
                s.last_spike = f"fast/slow volatility {ratio:.1f} (limit {cfg.spike_ratio:g})"

    def on_bars(self, bars: list[tuple[str, int, float]]) -> None:
        """Take several bars, each (symbol, open time, return): the same as :meth:`on_bar` of each in order.

        A close's bars (the decision step's call): the loop of :meth:`on_bar` inlined.  Many closes'
        bars at once (the risk engine's queue, :meth:`flows.risk.engine.RiskEngine.on_bars`): symbol
        by symbol (a symbol's state depends on its own bars alone, and ``bar_ms`` is a minimum, which
        no order changes), each symbol's run of bars through :meth:`_series`.
        """
        syms = self.symbols
        if len(bars) < SERIES_FROM * max(1, len(syms)):  # a close or a few: the loop
            self._loop(bars)
            return
        names = list(map(itemgetter(0), bars))
        n = len(dict.fromkeys(names))
        by: dict[str, list[tuple[str, int, float]]] = {}  # symbol -> its bars, in first-seen order
        if not len(bars) % n and names == names[:n] * (len(bars) // n):  # closes of the same symbols in one order
            by = {symbol: bars[i::n] for i, symbol in enumerate(names[:n])}
        else:
            for bar in bars:
                rows = by.get(bar[0])
                if rows is None:
                    rows = by[bar[0]] = []
                rows.append(bar)
        for symbol in by:  # new symbols' states in the order the loop would create them
            if symbol not in syms:
                syms[symbol] = SymbolState()
        rest: list[tuple[str, int, float]] = []  # the symbols' bars that are no run (few, or not rising)
        for symbol, rows in by.items():
            if len(rows) < SERIES_FROM or not self._series(symbol, rows):
                rest += rows
        if rest:
            self._loop(rest)

    def _loop(self, bars: list[tuple[str, int, float]]) -> None:
        cfg, syms, fast_a, slow_a = self.cfg, self.symbols, self.fast_a, self.slow_a
        warm, sigma, cool, spike, bar_ms = cfg.warmup_bars, cfg.gap_sigma, cfg.cooldown_bars, cfg.spike_ratio, self.bar_ms
        sqrt, isfinite = math.sqrt, math.isfinite
        for symbol, ts, ret in bars:
            s = syms.get(symbol)
            if s is None:
                s = syms[symbol] = SymbolState()
            last = s.last_ts
            if last is not None:
                if ts <= last:
                    continue
                gap = ts - last
                bar_ms = gap if bar_ms is None else min(bar_ms, gap)
            s.last_ts = ts
            if last is None or not isfinite(ret):
                continue
            r2 = ret * ret
            s.flat_run = s.flat_run + 1 if ret == 0.0 else 0
            n = s.bars = s.bars + 1
            if n > warm:
                slow = sqrt(s.slow_var)
                if slow > 0 and abs(ret) > sigma * slow:
                    s.gap_until = n + cool
                    s.last_gap = f"return {ret:+.4%} is {abs(ret) / slow:.1f} sigma (limit {sigma:g})"
            if n > 1:
                s.fast_var += fast_a * (r2 - s.fast_var)
                s.slow_var += slow_a * (r2 - s.slow_var)
            else:  # the first return (as on_bar: added to the zero state)
                s.fast_var += r2
                s.slow_var += r2
            if n > warm and s.slow_var > 0:
                ratio = sqrt(s.fast_var / s.slow_var)
                if ratio > spike:
                    s.spike_until = n + cool
                    s.last_spike = f"fast/slow volatility {ratio:.1f} (limit {spike:g})"
        self.bar_ms = bar_ms

    def _series(self, symbol: str, rows: list[tuple[str, int, float]]) -> bool:
        """Apply one symbol's bars (open times rising, after its last one) as :meth:`_loop` does, bit for bit.

        The variances' recursions run in a Python loop (each update the same float operations in
        the same order); the trips are found in numpy from them (``np.sqrt`` rounds as ``math.sqrt``),
        and only the last one of each kind sets the state.  Return False, applying nothing, when
        the open times do not rise past the symbol's last bar (a repeated or late bar: the loop).
        """
        s = self.symbols.get(symbol)
        if s is None:
            s = self.symbols[symbol] = SymbolState()
        _, times, rets = zip(*rows, strict=True)
        last = s.last_ts
        if not all(map(lt, times, times[1:])) or (last is not None and times[0] <= last):
            return False
        small = min(map(sub, times[1:], times)) if len(times) > 1 else None
        if last is not None:
            small = times[0] - last if small is None else min(small, times[0] - last)
        if small is not None:
            self.bar_ms = small if self.bar_ms is None else min(self.bar_ms, small)
        s.last_ts = times[-1]
        r = np.array(rets[1:] if last is None else rets, dtype=np.float64)  # the first bar: no return
        if not math.isfinite(sum(r.tolist())):  # a finite sum: every return finite
            r = r[np.isfinite(r)]  # a NaN return moves the last bar time, nothing else
        m = len(r)
        if not m:
            return True
        cfg, n0 = self.cfg, s.bars
        if r[-1] != 0.0:
            s.flat_run = 0
        else:
            moved = np.flatnonzero(r != 0.0)
            s.flat_run = s.flat_run + m if not len(moved) else m - 1 - int(moved[-1])
        r2 = (r * r).tolist()
        fv, sv = s.fast_var, s.slow_var
        fast, slow = [fv], [sv]  # the variances before the first bar, then after each
        fast_a, slow_a = self.fast_a, self.slow_a
        first = 0
        if n0 == 0:  # the first return (as on_bar: added to the zero state)
            fv += r2[0]
            sv += r2[0]
            fast.append(fv)
            slow.append(sv)
            first = 1
        for x in r2[first:] if first else r2:
            fv += fast_a * (x - fv)
            sv += slow_a * (x - sv)
            fast.append(fv)
            slow.append(sv)
        s.bars, s.fast_var, s.slow_var = n0 + m, fv, sv
        k0 = max(0, cfg.warmup_bars - n0)  # bar k (from 0) is past the warm-up when n0 + k + 1 > warmup_bars
        if k0 >= m:
            return True
        sd = np.sqrt(np.array(slow))
        before = sd[k0:m]
        gap = np.flatnonzero((before > 0) & (np.abs(r[k0:]) > cfg.gap_sigma * before))
        if len(gap):
            k = k0 + int(gap[-1])
            ret, sd_k = float(r[k]), float(sd[k])
            s.gap_until = n0 + k + 1 + cfg.cooldown_bars
            s.last_gap = f"return {ret:+.4%} is {abs(ret) / sd_k:.1f} sigma (limit {cfg.gap_sigma:g})"
        after_f, after_s = np.array(fast[k0 + 1:]), np.array(slow[k0 + 1:])
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.sqrt(after_f / after_s)
        spikes = np.flatnonzero((after_s > 0) & (ratios > cfg.spike_ratio))
        if len(spikes):
            k = k0 + int(spikes[-1])
            s.spike_until = n0 + k + 1 + cfg.cooldown_bars
            s.last_spike = f"fast/slow volatility {float(ratios[k - k0]):.1f} (limit {cfg.spike_ratio:g})"
        return True

    def tripped(self, symbol: str, ts: int) -> list[tuple[str, str]]:
        """Return the (rule, reason) of every breaker tripped for a decision at close ``ts``."""
        cfg, s = self.cfg, self.symbols.get(symbol)
        if s is None or s.last_ts is None:
            return [("stale_data", "no bar seen yet")]
        out = []
        if self.bar_ms:
            missing = (ts - s.last_ts) // self.bar_ms - 1
            if missing >= cfg.stale_bars:
                out.append(("stale_data", f"no bar for {missing} bars (limit {cfg.stale_bars})"))
        if s.flat_run >= cfg.stale_bars:
            out.append(("stale_data", f"price unchanged for {s.flat_run} bars (limit {cfg.stale_bars})"))
        if s.bars <= s.gap_until:
            out.append(("price_gap", s.last_gap))
        if s.bars <= s.spike_until:
            out.append(("volatility_spike", s.last_spike))
        return out

    def bar_vol(self, symbol: str) -> float | None:
        """Return the slow per-bar volatility of a symbol, or None before ``warmup_bars``."""
        s = self.symbols.get(symbol)
        return math.sqrt(s.slow_var) if s is not None and s.bars > self.cfg.warmup_bars else None

    def to_state(self) -> dict[str, Any]:
        """Return the state as plain data."""
        return {"bar_ms": self.bar_ms, "symbols": {k: asdict(v) for k, v in self.symbols.items()}}

    def restore(self, state: dict[str, Any]) -> None:
        """Take back :meth:`to_state` output."""
        self.bar_ms = state["bar_ms"]
        self.symbols = {k: SymbolState(**v) for k, v in state["symbols"].items()}
