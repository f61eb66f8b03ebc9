"""Per-symbol pipeline: dedupe -> bars for every timeframe -> features.

One stateful step per symbol keeps per-item overhead low: a batch of trades goes
in, and out come closed bars, feature rows, one-bar returns for the cross-asset
step, and dead letters for duplicates and late trades (counted and kept, never
silently dropped).  The same class runs in the live flow, the backfill and the
backtest, so they cannot disagree.
"""

from __future__ import annotations

import math
from typing import Any

from flows.operators.bars import BarBuilder
from flows.operators.dedupe import Deduper
from flows.operators.features import FeatureEngine
from flows.records import Bar, BarReturn, DeadLetter, FeatureRow, Trade
from flows.snapshots import check_snapshot

Output = Bar | FeatureRow | BarReturn | DeadLetter


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
    ) -> None:
        s = state or {}
        self.symbol = symbol
        self.timeframes = timeframes
        self.allowed_lateness_ms, self.fill_empty = allowed_lateness_ms, fill_empty
        self.deduper = Deduper(state=s.get("dedupe"))
        self.bars = {tf: BarBuilder(symbol, tf, allowed_lateness_ms, fill_empty, s.get("bars", {}).get(tf))
                     for tf in timeframes}
        self.features = {tf: FeatureEngine(tf, s.get("features", {}).get(tf)) for tf in timeframes}
        self.prev_close: dict[str, float] = dict(s.get("prev_close", {}))

    @classmethod
    def from_snapshot(cls, snap: Any) -> SymbolPipeline:
        """Rebuild a pipeline from :meth:`snapshot` (see :mod:`flows.snapshots`)."""
        s = check_snapshot(snap, "symbol_pipeline", cls.VERSION)
        return cls(s["symbol"], tuple(s["timeframes"]), int(s["allowed_lateness_ms"]), bool(s["fill_empty"]),
                   dict(s))

    def snapshot(self) -> dict[str, Any]:
        """Return the state as plain data (its configuration included: a resumed run goes on with it)."""
        return {
            "kind": "symbol_pipeline", "version": self.VERSION, "symbol": self.symbol,
            "timeframes": list(self.timeframes),
            "allowed_lateness_ms": self.allowed_lateness_ms, "fill_empty": self.fill_empty,
            "dedupe": self.deduper.snapshot(),
            "bars": {tf: b.snapshot() for tf, b in self.bars.items()},
            "features": {tf: f.snapshot() for tf, f in self.features.items()},
            "prev_close": dict(self.prev_close),
        }

    def on_trades(self, trades: list[Trade]) -> list[Output]:
        """Process a batch of this symbol's trades."""
        fresh, dups = self.deduper.update(trades)
        out: list[Output] = [DeadLetter("dedupe", t.symbol, t.ts, "duplicate trade id", repr(tuple(t)))
                             for t in dups]
        for i, tf in enumerate(self.timeframes):
            closed, late = self.bars[tf].update(fresh)
            if i == 0:  # a late trade is late for the finest timeframe first; report it once
                out.extend(DeadLetter("bars", t.symbol, t.ts, f"late trade: its {tf} bar had closed",
                                      repr(tuple(t))) for t in late)
            for bar in closed:
                out.extend(self.on_bar(bar))
        return out

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

    def advance(self, watermark_ms: int) -> list[Output]:
        """Close bars of a quiet symbol up to an external watermark."""
        out: list[Output] = []
        for tf in self.timeframes:
            for bar in self.bars[tf].advance(watermark_ms):
                out.extend(self.on_bar(bar))
        return out
