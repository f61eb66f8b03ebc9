"""Decision step: predictions -> target position -> risk -> order intents -> broker -> fills -> portfolio.

A pure state machine over one portfolio (one key).  It takes the trading
timeframe's closed bars and the scoring step's predictions, in any
interleaving, and works through bar closes in time order.  At each close ``T``:

1. every symbol's bar that closed at ``T`` goes to the broker (the paper broker
   fills resting orders against it), fills go to the portfolio, the bar goes to
   the risk engine's breakers, and the portfolio is marked at the closes;
2. each prediction of ``T`` becomes a target fraction (``flows.risk.signals.combine``),
   the risk engine sizes and limits it (rejections are kept with their reasons),
   and an approved change becomes an :class:`~flows.records.OrderIntent`
   whose client order id derives from strategy, symbol, bar time and leg, so a
   replayed decision never places a second order;
3. a ``portfolio_state`` row (its ``full`` state is :meth:`flows.portfolio.Portfolio.row_state`,
   the exact state with the equity history and trade returns as deltas) and a
   one-line status are emitted.

The live flow hands over settled closes (:meth:`DecisionStep.on_closes`; the
scoring step's :class:`~flows.operators.scoring.CloseBarrier` decides from the data
alone whether a close's predictions will come, so trades never depend on timing).
Fed bars and predictions separately (:meth:`on_bar`, :meth:`on_predictions`, e.g. a
backtest that has both in order), a close ``T`` is worked once all symbols' bars of
``T`` and its predictions are in, or once bars two closes later are in.  The kill
switch is read through a callable once per close, or once for the closes one call of
:meth:`on_closes` works (settled by one input, all worked at the same moment).
Snapshots hold the portfolio, risk engine and broker snapshots plus buffers.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flows.records import Bar, Close, Decided, PortfolioRow, Prediction, Status


@dataclass
class DecisionDeps:
    """The components the step drives (built by :func:`flows.wiring.build_deps`)."""

    portfolio: Any  # flows.portfolio.Portfolio
    risk: Any  # flows.risk.engine.RiskEngine
    broker: Any  # flows.execution.orders.Broker
    combine: Callable[[Prediction], Any]  # prediction -> TargetPosition(fraction, reasons)
    intent: Callable[[Prediction, float, float], Any]  # (prediction, qty_delta, price) -> OrderIntent
    kill_active: Callable[[], Any] = field(default=lambda: False)  # truthy when engaged; may carry ``flatten``


class DecisionStep:
    """Work through bar closes in order: fills, marks, decisions, orders, portfolio rows."""

    def __init__(self, symbols: Sequence[str], tf_ms: int, deps: DecisionDeps | None = None,
                 state: Mapping[str, Any] | None = None) -> None:
        """Create the step; ``state`` is a :meth:`snapshot`; ``deps`` may be attached later."""
        self.symbols, self.tf_ms = tuple(symbols), tf_ms
        s = dict(state or {})
        self.bars: dict[int, dict[str, Bar]] = {
            int(t): {sym: Bar(*b) for sym, b in v.items()} for t, v in s.get("bars", {}).items()}
        self.preds: dict[int, list[Prediction]] = {
            int(t): [Prediction(*p) for p in v] for t, v in s.get("preds", {}).items()}
        self.done_until: int = int(s.get("done_until", -1))
        # symbol -> (p_up, rl target, target fraction) of its last decision (the status line shows it)
        self.last_signal: dict[str, tuple[float, float, float]] = {
            k: tuple(v) for k, v in s.get("last_signal", {}).items()}  # type: ignore[misc]
        self.prices: dict[str, float] = dict(s.get("prices", {}))
        self.fills: int = int(s.get("fills", 0))
        self._saved: dict[str, Any] = {k: s[k] for k in ("portfolio", "risk", "broker") if k in s}
        self._order = {sym: i for i, sym in enumerate(self.symbols)}
        self.deps: DecisionDeps = None  # type: ignore[assignment]  # set by attach()
        if deps is not None:
            self.attach(deps)

    def attach(self, deps: DecisionDeps) -> None:
        """Drive these components, restoring the portfolio, risk and broker state of the snapshot."""
        if self._saved:
            deps.portfolio = type(deps.portfolio).from_state(self._saved["portfolio"])
            deps.risk = type(deps.risk).from_state(self._saved["risk"], deps.risk.config)  # today's limits
            deps.broker.restore(self._saved["broker"])
            self._saved = {}
        for note in deps.broker.reconcile():  # the live broker: orders, fills, balances vs the exchange
            print(f"reconcile: {note}", file=sys.stderr, flush=True)
        self.deps = deps

    def on_closes(self, closes: Sequence[Close]) -> list[Any]:
        """Work closes the barrier settled together, oldest first; the kill switch is read once for them.

        Live, one trade settles one close; a replay or a catch-up settles many at once, all
        worked at the same moment, so one read of the switch stands for each of them.
        """
        todo = [c for c in closes if c.ts > self.done_until]  # older ones: replayed closes
        kill = self.deps.kill_active() if any(c.predictions for c in todo) else False
        out: list[Any] = []
        for c in todo:
            out += self.work(c.ts, c.bars, c.predictions, kill)
            self.done_until = c.ts
        return out

    def on_bar(self, bar: Bar) -> list[Any]:
        """Take a closed bar of the trading timeframe; return what the closes it completes produced."""
        close = bar.ts + self.tf_ms
        if close <= self.done_until:
            return []
        self.bars.setdefault(close, {})[bar.symbol] = bar
        return self._drain()

    def on_predictions(self, preds: Iterable[Prediction]) -> list[Any]:
        """Take predictions (of one or more bar closes); return what the closes they complete produced."""
        for p in preds:
            if p.ts > self.done_until:
                self.preds.setdefault(p.ts, []).append(p)
        return self._drain()

    def _ready(self, t: int) -> bool:
        if len(self.bars.get(t, {})) < len(self.symbols):
            return False
        if t in self.preds:
            return True
        later = t + 2 * self.tf_ms
        return any(u >= later and len(b) == len(self.symbols) for u, b in self.bars.items())

    def _drain(self) -> list[Any]:
        out: list[Any] = []
        while self.bars:
            t = min(self.bars)
            if not self._ready(t):
                break
            out += self.work(t, list(self.bars.pop(t).values()), self.preds.pop(t, []))
            self.done_until = t
        return out

    def work(self, t: int, bars: Sequence[Bar], preds: Sequence[Prediction], kill: Any = None) -> list[Any]:
        """Process one bar close: bars to broker, risk and portfolio; then predictions to orders.

        ``kill`` is the kill switch's status read for this close (None: read it now).
        """
        d = self.deps
        out: list[Any] = []
        prices, portfolio, broker, risk = self.prices, d.portfolio, d.broker, d.risk
        for bar in bars:
            for fill in broker.on_bar(bar):
                portfolio.apply_fill(fill.symbol, fill.side, fill.qty, fill.price, fill.fee, fill.ts)
                self.fills += 1
                out.append(fill)
            prev = prices.get(bar.symbol)
            risk.on_bar(bar.symbol, bar.ts, (bar.close / prev - 1.0) if prev else 0.0)
            prices[bar.symbol] = bar.close
        portfolio.mark(prices, t)
        if preds:
            if kill is None:
                kill = d.kill_active()  # read once per close (a KillStatus carries ``flatten``)
            order = self._order
            for p in sorted(preds, key=lambda p: order[p.symbol]) if len(preds) > 1 else preds:
                out += self._decide(p, kill)
        out += broker.drain_updates()  # every order change (placement, fill, cancel, protective legs)
        snap = portfolio.snapshot()
        state = snap._asdict()
        state["full"] = portfolio.row_state()
        out.append(PortfolioRow(t, state))
        out.append(Status(t, snap.equity, snap.drawdown, self.fills,
                          tuple((s, snap.positions.get(s, 0.0)) for s in self.symbols),
                          tuple((s, self.last_signal.get(s)) for s in self.symbols)))
        return out

    def _decide(self, p: Prediction, kill: Any) -> list[Any]:
        d = self.deps
        price = self.prices[p.symbol]
        target = d.combine(p)
        dec = d.risk.decide(p.symbol, p.ts, target.fraction, p.confidence, price, p.volatility,
                            d.portfolio.snapshot(), kill, None)
        out: list[Any] = list(dec.rejections)
        out.append(Decided(p, float(target.fraction), float(dec.target_qty), float(dec.approved_qty_delta),
                           tuple(target.reasons)))
        self.last_signal[p.symbol] = (p.probability, p.rl_target, target.fraction)
        if dec.approved_qty_delta != 0.0:
            d.broker.submit(d.intent(p, float(dec.approved_qty_delta), price))
        return out

    def snapshot(self) -> dict[str, Any]:
        """Return the state as plain data (portfolio, risk and broker snapshots, buffers)."""
        saved: dict[str, Any] = self._saved or {"portfolio": self.deps.portfolio.to_state(), "risk": self.deps.risk.to_state(),
                                "broker": self.deps.broker.snapshot()}
        return {"symbols": list(self.symbols), "tf_ms": self.tf_ms, **saved, "bars": {str(t): {s: tuple(b) for s, b in v.items()} for t, v in self.bars.items()},
                "preds": {str(t): [tuple(p) for p in v] for t, v in self.preds.items()},
                "done_until": self.done_until, "last_signal": dict(self.last_signal), "prices": dict(self.prices),
                "fills": self.fills}

    def __getstate__(self) -> dict[str, Any]:
        # Bytewax pickles operator state: plain data only; the broker's connection stays with the worker.
        return self.snapshot()

    def __setstate__(self, snap: dict[str, Any]) -> None:
        self.__init__(tuple(snap["symbols"]), int(snap["tf_ms"]), None, snap)  # type: ignore[misc]
