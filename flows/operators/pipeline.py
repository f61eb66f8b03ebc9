"""Per-symbol pipeline: trade-time guard -> dedupe -> bars for every timeframe -> features.

One stateful step per symbol keeps per-item overhead low: a batch of trades goes
in, and out come closed bars, feature rows, one-bar returns for the cross-asset
step, and dead letters for duplicates and late trades (counted and kept, never
silently dropped).  The same class runs in the live flow, the backfill and the
backtest, so they cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from flows.operators.bars import MAX_EMPTY_BARS, BarBuilder
from flows.operators.dedupe import Deduper
from flows.operators.features import FeatureEngine
from flows.operators.trade_time import DEFAULT_TRADE_TIME, TradeTimeGuard
from flows.records import Bar, BarReturn, DeadLetter, FeatureRow, Trade, WarmupBar, utc
from flows.snapshots import check_snapshot

Output = Bar | FeatureRow | BarReturn | DeadLetter | WarmupBar


class SymbolPipeline:
    """Everything the flow computes for one symbol."""

    VERSION = 1  # of the snapshot's layout

    def __init__(
        self,
        symbol: str,
        timeframes: tuple[str, ...],
        allowed_lateness_ms: int = 0,
        fill_empty: bool = True,
        state: dict[str, Any] | None = None,
        *,
        max_empty_bars: int = MAX_EMPTY_BARS,
        max_jump_ms: int = DEFAULT_TRADE_TIME.max_jump_ms,
        confirm_trades: int = DEFAULT_TRADE_TIME.confirm_trades,
    ) -> None:
        """Build a fresh pipeline, or rebuild one from ``state`` (see :meth:`snapshot`).

        ``max_empty_bars`` caps the empty bars one trade may close (``bars.max_empty_bars``);
        ``max_jump_ms`` and ``confirm_trades`` configure the :class:`TradeTimeGuard` (``trade_time.*``).
        """
        s = state or {}
        self.symbol = symbol
        self.timeframes = timeframes
        self.allowed_lateness_ms, self.fill_empty = allowed_lateness_ms, fill_empty
        self.max_empty_bars = max_empty_bars
        self.guard = TradeTimeGuard(max_jump_ms, confirm_trades, s.get("trade_time"))
        self.deduper = Deduper(state=s.get("dedupe"))
        self.bars = {tf: BarBuilder(symbol, tf, allowed_lateness_ms, fill_empty, s.get("bars", {}).get(tf),
                                    max_empty_bars) for tf in timeframes}
        self.features = {tf: FeatureEngine(tf, s.get("features", {}).get(tf)) for tf in timeframes}
        self.prev_close: dict[str, float] = dict(s.get("prev_close", {}))

    @classmethod
    def from_snapshot(cls, snap: Any) -> SymbolPipeline:
        """Rebuild a pipeline from :meth:`snapshot` (see :mod:`flows.snapshots`)."""
        s = check_snapshot(snap, "symbol_pipeline", cls.VERSION)
        guard = s.get("trade_time_config", {})  # absent in snapshots taken before the guard: the defaults
        return cls(s["symbol"], tuple(s["timeframes"]), int(s["allowed_lateness_ms"]), bool(s["fill_empty"]),
                   dict(s), max_empty_bars=int(s.get("max_empty_bars", MAX_EMPTY_BARS)),
                   max_jump_ms=int(guard.get("max_jump_ms", DEFAULT_TRADE_TIME.max_jump_ms)),
                   confirm_trades=int(guard.get("confirm_trades", DEFAULT_TRADE_TIME.confirm_trades)))

    def snapshot(self) -> dict[str, Any]:
        """Return the state as plain data (its configuration included: a resumed run goes on with it)."""
        return {
            "kind": "symbol_pipeline", "version": self.VERSION, "symbol": self.symbol,
            "timeframes": list(self.timeframes),
            "allowed_lateness_ms": self.allowed_lateness_ms, "fill_empty": self.fill_empty,
            "max_empty_bars": self.max_empty_bars,
            "trade_time_config": {"max_jump_ms": self.guard.max_jump_ms, "confirm_trades": self.guard.confirm_trades},
            "trade_time": self.guard.snapshot(),
            "dedupe": self.deduper.snapshot(),
            "bars": {tf: b.snapshot() for tf, b in self.bars.items()},
            "features": {tf: f.snapshot() for tf, f in self.features.items()},
            "prev_close": dict(self.prev_close),
        }

    def on_trades(self, trades: list[Trade]) -> list[Output]:
        """Process a batch of this symbol's trades."""
        plausible, implausible = self.guard.check(trades)
        fresh, dups = self.deduper.update(plausible)
        out: list[Output] = [*implausible]
        out.extend(DeadLetter("dedupe", t.symbol, t.ts, "duplicate trade id", repr(tuple(t))) for t in dups)
        for i, tf in enumerate(self.timeframes):
            builder = self.bars[tf]
            closed, late = builder.update(fresh)
            if i == 0:  # a late trade is late for the finest timeframe first; report it once
                out.extend(DeadLetter("bars", t.symbol, t.ts, f"late trade: its {tf} bar had closed",
                                      repr(tuple(t))) for t in late)
            for bar in closed:
                out.extend(self.on_bar(bar))
            if builder.unfilled:
                out.extend(self._unfilled(builder))
        return out

    def _unfilled(self, builder: BarBuilder) -> list[DeadLetter]:
        """Report the gaps a bar builder left open (more empty bars than ``bars.max_empty_bars``)."""
        tf, gaps, builder.unfilled = builder.timeframe, builder.unfilled, []
        return [DeadLetter("bars", self.symbol, start,
                           f"unfilled gap: {(end - start) // builder.tf_ms} {tf} bars from {utc(start):%Y-%m-%dT%H:%MZ} "
                           f"to {utc(end):%Y-%m-%dT%H:%MZ} left without bars (bars.max_empty_bars="
                           f"{self.max_empty_bars})", f'{{"start":{start},"end":{end}}}')
                for start, end in gaps]

    def on_bar(self, bar: Bar) -> list[Output]:
        """Process one closed bar (from trades, or straight from history)."""
        tf = bar.timeframe
        out: list[Output] = [bar]
        close_ts = bar.ts + self.bars[tf].tf_ms
        prev = self.prev_close.get(tf)
        self.prev_close[tf] = bar.close
        if prev is not None:
            out.append(BarReturn(bar.symbol, tf, close_ts, math.log(bar.close / prev)))
        feats = self.features[tf].update(bar)
        if feats is not None:
            out.append(FeatureRow("bar_features", bar.symbol, tf, close_ts, feats))
        return out

    def warm_up(self, bars: Iterable[Bar]) -> list[WarmupBar]:
        """Feed bars the flow did not build (klines before its first trade) to the features; return them as warm-up.

        Each bar updates its timeframe's feature engine and last close as a built bar
        would, but no Bar, feature row or return comes out: a :class:`WarmupBar` per bar
        (with its one-bar return) lets the cross-asset step and the close barrier warm up.
        """
        out: list[WarmupBar] = []
        for bar in bars:
            tf = bar.timeframe
            prev = self.prev_close.get(tf)
            self.prev_close[tf] = bar.close
            self.features[tf].update(bar)
            out.append(WarmupBar(bar.symbol, tf, bar.ts + self.bars[tf].tf_ms,
                                 None if prev is None else math.log(bar.close / prev)))
        return out

    def advance(self, watermark_ms: int) -> list[Output]:
        """Close bars of a quiet symbol up to an external watermark."""
        out: list[Output] = []
        for tf in self.timeframes:
            builder = self.bars[tf]
            for bar in builder.advance(watermark_ms):
                out.extend(self.on_bar(bar))
            if builder.unfilled:
                out.extend(self._unfilled(builder))
        return out
