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
from typing import Any

from flows.risk.config import BreakersConfig


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

        One call per bar close of a portfolio (the decision step's); the loop of :meth:`on_bar` inlined.
        """
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
