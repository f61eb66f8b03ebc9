"""Decision step: predictions -> target position -> risk -> order intents -> broker -> fills -> portfolio.

A pure state machine over one portfolio (one key).  It takes the trading
timeframe's closed bars and the scoring step's predictions, in any
interleaving, and works through bar closes in time order.  At each close ``T``:

1. every symbol's bar that closed at ``T`` goes to the broker (the paper broker
   fills resting orders against it), fills go to the portfolio, the bar goes to
   the risk engine's breakers, and the portfolio is marked at the closes;
2. each prediction of ``T`` becomes a target fraction (``flows.risk.signals.combine``),
   the risk engine sizes and limits it (rejections are kept with their reasons),
   and an approved change becomes an :class:`~flows.execution.orders.OrderIntent`
   whose client order id derives from strategy, symbol, bar time and leg, so a
   replayed decision never places a second order;
3. a ``portfolio_state`` row and a one-line status are emitted.

The live flow hands over settled closes (:meth:`DecisionStep.on_close`; the
scoring step's :class:`~flows.operators.scoring.CloseBarrier` decides from the data
alone whether a close's predictions will come, so trades never depend on timing).
Fed bars and predictions separately (:meth:`on_bar`, :meth:`on_predictions`, e.g. a
backtest that has both in order), a close ``T`` is worked once all symbols' bars of
``T`` and its predictions are in, or once bars two closes later are in.  The kill
switch is read through a callable once per close.
Snapshots hold the portfolio, risk engine and broker snapshots plus buffers.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from flows.operators.scoring import Prediction
from flows.records import Bar


class PortfolioRow(NamedTuple):
    """The portfolio after close ``ts`` (ms) as plain data (``Portfolio.snapshot()`` fields)."""

    ts: int
    state: dict[str, Any]


class Status(NamedTuple):
    """One status line per close."""

    ts: int
    text: str


class Decided(NamedTuple):
    """One prediction's decision: the target fraction, the risk decision, the order intent if any."""

    prediction: Prediction
    target_fraction: float
    target_qty: float
    qty_delta: float
    reasons: tuple[str, ...]


@dataclass
class DecisionDeps:
    """The components the step drives (built by :func:`flows.operators.decisions_wiring.build_deps`)."""

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
        self.last_signal: dict[str, str] = dict(s.get("last_signal", {}))
        self.prices: dict[str, float] = dict(s.get("prices", {}))
        self.fills: int = int(s.get("fills", 0))
        self._saved: dict[str, Any] = {k: s[k] for k in ("portfolio", "risk", "broker") if k in s}
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

    def on_close(self, ts: int, bars: Sequence[Bar], preds: Sequence[Prediction]) -> list[Any]:
        """Work one settled close (the live flow: :class:`flows.operators.scoring.CloseBarrier` settles them)."""
        if ts <= self.done_until:
            return []  # a replayed close
        out = self.work(ts, bars, preds)
        self.done_until = ts
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

    def work(self, t: int, bars: Sequence[Bar], preds: Sequence[Prediction]) -> list[Any]:
        """Process one bar close: bars to broker, risk and portfolio; then predictions to orders."""
        d = self.deps
        out: list[Any] = []
        for bar in bars:
            for fill in d.broker.on_bar(bar):
                d.portfolio.apply_fill(fill.symbol, fill.side, fill.qty, fill.price, fill.fee, fill.ts)
                self.fills += 1
                out.append(fill)
            prev = self.prices.get(bar.symbol)
            ret = (bar.close / prev - 1.0) if prev else 0.0
            d.risk.on_bar(bar.symbol, bar.ts, ret)
            self.prices[bar.symbol] = bar.close
        d.portfolio.mark(self.prices, t)
        kill = d.kill_active() if preds else False  # read once per close (a KillStatus carries ``flatten``)
        for p in sorted(preds, key=lambda p: self.symbols.index(p.symbol)):
            out += self._decide(p, kill)
        out += d.broker.drain_updates()  # every order change (placement, fill, cancel, protective legs)
        snap = d.portfolio.snapshot()
        state = dict(snap._asdict())
        state["full"] = d.portfolio.to_state()
        out.append(PortfolioRow(t, state))
        out.append(Status(t, self._status(t, state)))
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
        rl = "" if p.rl_target != p.rl_target else f" rl{p.rl_target:+.2f}"  # NaN: no policy
        self.last_signal[p.symbol] = f"p{p.probability:.2f}{rl}>{target.fraction:+.2f}"
        if dec.approved_qty_delta != 0.0:
            d.broker.submit(d.intent(p, float(dec.approved_qty_delta), price))
        return out

    def _status(self, t: int, state: Mapping[str, Any]) -> str:
        from flows.records import utc

        pos = state.get("positions", {})
        shown = " ".join(f"{s.split('/')[0]}={pos.get(s, 0.0):.4g}" for s in self.symbols)
        sig = " ".join(f"{s.split('/')[0]}:{self.last_signal.get(s, '-')}" for s in self.symbols)
        return (f"{utc(t):%Y-%m-%d %H:%M} equity={state.get('equity', 0.0):,.2f} dd={state.get('drawdown', 0.0):.2%} "
                f"fills={self.fills} pos[{shown}] signal(p_up rl>target)[{sig}]")

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
