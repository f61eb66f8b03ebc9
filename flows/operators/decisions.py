"""Decision step: predictions -> target position -> risk -> order intents -> broker -> fills -> portfolio.

A pure state machine over one portfolio (one key).  It takes the trading
timeframe's closed bars and the scoring step's predictions, in any
interleaving, and works through bar closes in time order.  At each close ``T``:

1. every symbol's bar that closed at ``T`` goes to the broker (the paper broker
   fills resting orders against it), fills go to the portfolio, the bar goes to
   the risk engine's breakers, and the portfolio is marked at the closes;
2. each prediction of ``T`` becomes a target fraction: the configured strategy
   (:mod:`flows.strategies`) gets a :class:`~flows.strategies.base.Context` (features,
   predictions, regime, portfolio, position, price) and returns a target; the risk
   engine sizes and limits it (rejections are kept with their reasons; the gross and
   correlated caps count the positions the close's earlier orders will hold),
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
Snapshots (:mod:`flows.snapshots`) hold the portfolio, risk engine, broker and strategy states plus
buffers; a snapshot of another strategy (by class) restores everything but the strategy's own state.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Protocol

from flows.execution.orders import Broker
from flows.records import Bar, Close, Decided, OrderIntent, PortfolioRow, Prediction, Status
from flows.snapshots import check_snapshot
from flows.strategies.base import Context, Strategy

if TYPE_CHECKING:
    from typing import Self

    from flows.operators.regime import RegimeFeed, RegimeState
    from flows.portfolio import PortfolioSnapshot
    from flows.risk.config import RiskConfig
    from flows.risk.engine import RiskDecision
    from flows.stores.base import KillStatus


class Portfolio(Protocol):
    """What the decision step needs from the portfolio (:class:`flows.portfolio.Portfolio`)."""

    def apply_fill(self, symbol: str, side: str, qty: float, price: float, fee: float, ts: int) -> None:
        """Book a fill."""
        ...

    def mark(self, prices: Mapping[str, float], ts: int) -> None:
        """Mark the positions at the closes of bar close ``ts``."""
        ...

    def snapshot(self) -> PortfolioSnapshot:
        """Return the current figures (equity, positions, drawdown, ...)."""
        ...

    def row_state(self) -> dict[str, Any]:
        """Return the state of a ``portfolio_state`` row."""
        ...

    def to_state(self) -> dict[str, Any]:
        """Return the exact state as plain data."""
        ...

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Self:
        """Rebuild a portfolio from :meth:`to_state`."""
        ...


class RiskEngine(Protocol):
    """What the decision step needs from the risk engine (:class:`flows.risk.engine.RiskEngine`)."""

    config: RiskConfig

    def on_bar(self, symbol: str, ts: int, ret: float) -> None:
        """Feed a closed bar's return to the breakers and correlations."""
        ...

    def on_bars(self, bars: list[tuple[str, int, float]]) -> None:
        """Feed several closed bars' (symbol, open time, return), as :meth:`on_bar` of each in order."""
        ...

    def decide(self, symbol: str, ts: int, target_fraction: float, confidence: float, price: float, vol: float,
               portfolio_snapshot: Any, kill: Any, correlations: Mapping[str, float] | None = None,
               pending: Mapping[str, tuple[float, float]] | None = None) -> RiskDecision:
        """Return the approved position and change of ``symbol``, with the rejections.

        ``pending``: symbol -> (position, price) of the orders approved earlier at the same close.
        """
        ...

    def drain_events(self) -> list[Any]:
        """Return and forget the portfolio's halts and releases since the last call."""
        ...

    def halt_phases(self) -> dict[str, str]:
        """Return rule -> phase of every halt not active."""
        ...

    def to_state(self) -> dict[str, Any]:
        """Return the state as plain data."""
        ...

    @classmethod
    def from_state(cls, state: Mapping[str, Any], config: RiskConfig | None = None) -> Self:
        """Rebuild an engine from :meth:`to_state` (``config`` overrides the saved one)."""
        ...


def strategy_id(strategy: Strategy) -> str:
    """Return ``module:Class`` of a strategy (a snapshot's strategy state belongs to that class)."""
    cls = type(strategy)
    return f"{cls.__module__}:{cls.__qualname__}"


# Context(*fields) and Decided(*fields) without the namedtuples' Python-level __new__ (once per decision)
_context = partial(tuple.__new__, Context)
_decided = partial(tuple.__new__, Decided)
_status = partial(tuple.__new__, Status)  # Status(*fields) and PortfolioRow(*fields), once per close
_row = partial(tuple.__new__, PortfolioRow)
_symbol_of = attrgetter("symbol")

STOP_RULE = "shutdown"  # the risk event of an order not placed because the flow is stopping


def _never_killed() -> bool:
    return False


@dataclass
class DecisionDeps:
    """The components the step drives (built by :func:`flows.wiring.build_deps`).

    The network is behind these: the broker places orders (the paper broker in memory, the
    live broker through ccxt) and ``kill_active`` reads the kill switch (a file, a Redis key,
    or :class:`flows.stores.memory.MemoryKillSwitch`), so the logic tests without I/O.
    """

    portfolio: Portfolio
    risk: RiskEngine
    broker: Broker
    strategy: Strategy  # context -> target fraction with its reasons (flows.strategies)
    intent: Callable[[Prediction, float, float], OrderIntent]  # (prediction, qty_delta, price) -> intent
    kill_active: Callable[[], KillStatus | bool] = field(default=_never_killed)  # truthy when engaged
    stopping: Callable[[], bool] = field(default=_never_killed)  # a clean stop is under way: no new orders
    regime: RegimeFeed | None = None  # the market regime each context carries (None: ``regime`` stays None)


class DecisionStep:
    """Work through bar closes in order: fills, marks, decisions, orders, portfolio rows."""

    VERSION = 2  # of the snapshot's layout (2: the strategy's state)

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
        self._saved: dict[str, Any] = {k: s[k] for k in ("portfolio", "risk", "broker", "strategy", "regime")
                                       if k in s}
        self.regime: RegimeState | None = None  # the regime known at the last close worked
        self._order = {sym: i for i, sym in enumerate(self.symbols)}
        self._flat = tuple((sym, 0.0) for sym in self.symbols)  # a status line's positions while nothing is held
        self.deps: DecisionDeps = None  # type: ignore[assignment]  # set by attach()
        if deps is not None:
            self.attach(deps)

    def attach(self, deps: DecisionDeps) -> None:
        """Drive these components, restoring the portfolio, risk and broker state of the snapshot."""
        if self._saved:
            deps.portfolio = type(deps.portfolio).from_state(self._saved["portfolio"])
            deps.risk = type(deps.risk).from_state(self._saved["risk"], deps.risk.config)  # today's limits
            deps.broker.restore(self._saved["broker"])
            if deps.regime is not None and self._saved.get("regime") is not None:
                deps.regime.restore(self._saved["regime"])  # a snapshot from before the regime: it starts fresh
                self.regime = deps.regime.tracker.last
            saved, name = self._saved["strategy"], strategy_id(deps.strategy)
            if saved["class"] == name:
                deps.strategy.from_state(saved["state"])
            else:
                print(f"decisions: the snapshot's strategy {saved['class']} is not {name}: its state starts fresh",
                      file=sys.stderr, flush=True)
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

    def warm(self, closes: Sequence[Close]) -> None:
        """Feed closes that are not traded (a backtest's warm-up before its start) to the regime only."""
        feed = self.deps.regime
        if feed is None:
            return
        for c in closes:
            if c.ts > self.done_until:
                self.regime = feed.on_close(c.ts, {b.symbol: b.close for b in c.bars})

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
        fills = broker.on_bars(bars)  # the broker reads no portfolio: its fills are booked after the close's bars
        for fill in fills:
            portfolio.apply_fill(fill.symbol, fill.side, fill.qty, fill.price, fill.fee, fill.ts)
            self.fills += 1
            out.append(fill)
        rets: list[tuple[str, int, float]] = []
        for bar in bars:
            sym, close = bar.symbol, bar.close
            prev = prices.get(sym)
            rets.append((sym, bar.ts, (close / prev - 1.0) if prev else 0.0))
            prices[sym] = close
        risk.on_bars(rets)  # the breakers and correlations see the close's bars in the same order
        portfolio.mark(prices, t)
        if d.regime is not None:
            self.regime = d.regime.on_close(t, prices)
        if preds:
            if kill is None:
                kill = d.kill_active()  # read once per close (a KillStatus carries ``flatten``)
            self._decide(self._in_order(preds), kill, out)
            out += risk.drain_events()  # halts and releases of the whole portfolio (risk events)
        out += broker.drain_updates()  # every order change (placement, fill, cancel, protective legs)
        snap = portfolio.snapshot()
        state = dict(zip(snap._fields, snap, strict=True))  # snap._asdict()
        state["full"] = portfolio.row_state()
        regime = self.regime
        if d.regime is not None:  # the regime as a per-close feature of the stored portfolio rows
            state["regime"] = None if regime is None else regime.label
            state["regime_score"] = None if regime is None else regime.score
        out.append(_row((t, state)))
        held, symbols = snap.positions, self.symbols
        phases = risk.halt_phases()
        out.append(_status((t, snap.equity, snap.drawdown, self.fills,
                            tuple(zip(symbols, [held.get(s, 0.0) for s in symbols], strict=True)) if held else self._flat,
                            tuple(zip(symbols, map(self.last_signal.get, symbols), strict=True)),
                            tuple(sorted(phases.items())) if phases else (),
                            None if regime is None else regime.label)))
        return out

    def _in_order(self, preds: Sequence[Prediction]) -> Sequence[Prediction]:
        """Return a close's predictions in the configured symbol order (as they mostly come: as they are)."""
        if len(preds) < 2 or tuple(map(_symbol_of, preds)) == self.symbols:
            return preds
        order = self._order
        return sorted(preds, key=lambda p: order[p.symbol])

    def _decide(self, preds: Sequence[Prediction], kill: Any, out: list[Any]) -> None:
        """Decide each prediction of one close in order, appending its records to ``out``.

        Every decision of a close sees the same portfolio snapshot (orders fill at the next bar);
        ``pending`` holds the position each approved order will hold, so the close's next
        symbols' gross and correlated caps count it.
        """
        d = self.deps
        prices, last_signal, strategy, risk = self.prices, self.last_signal, d.strategy, d.risk
        decide, risk_decide, scaled = strategy.decide, risk.decide, strategy.sizing is None  # None: scale by conf
        snap = d.portfolio.snapshot()
        positions, equity = snap.positions, snap.equity
        regime = None if self.regime is None else self.regime.score
        pending: dict[str, tuple[float, float]] = {}  # symbol -> position its order will hold, price
        for p in preds:
            sym, _, ts, _, prob, conf, signal, rl, _, ret_1, vol, *rest = p
            price = prices[sym]
            target = decide(_context((sym, ts, price, positions.get(sym, 0.0), equity,
                                      {"ret_1": ret_1, "rv_15": vol},  # features_of(p)
                                      prob, conf, signal, None if rl != rl else rl, regime,
                                      rest[0] if rest else None, snap, p)))
            fraction = target.fraction
            dec = risk_decide(sym, ts, fraction, conf if scaled else 1.0,  # sizes itself: no scaling
                              price, vol, snap, kill, None, pending)
            at = len(out)  # where this decision's records start
            if dec.rejections:
                out += dec.rejections
            delta = dec.approved_qty_delta
            out.append(_decided((p, float(fraction), float(dec.target_qty), float(delta), tuple(target.reasons))))
            last_signal[sym] = (prob, rl, fraction)
            if delta != 0.0:
                if d.stopping():  # flows.lifecycle: the run is stopping; the decision is recorded, not placed
                    from flows.risk.engine import Rejection
                    out.insert(at, Rejection(sym, ts, STOP_RULE, "the flow is stopping: no new orders",
                                             float(delta), 0.0))
                else:
                    d.broker.submit(d.intent(p, float(delta), price))
                    pending[sym] = (float(dec.target_qty), price)  # the close's next symbols' caps count it

    @classmethod
    def from_snapshot(cls, snap: Any, deps: DecisionDeps | None = None) -> DecisionStep:
        """Rebuild a step from :meth:`snapshot`; its components are attached per worker (``deps`` or :meth:`attach`)."""
        s = check_snapshot(snap, "decisions", cls.VERSION)
        return cls(tuple(s["symbols"]), int(s["tf_ms"]), deps, s)

    def snapshot(self) -> dict[str, Any]:
        """Return the state as plain data (portfolio, risk and broker snapshots, buffers); no connection."""
        d = self.deps
        saved: dict[str, Any] = self._saved or {
            "portfolio": d.portfolio.to_state(), "risk": d.risk.to_state(), "broker": d.broker.snapshot(),
            "strategy": {"class": strategy_id(d.strategy), "state": d.strategy.to_state()},
            "regime": None if d.regime is None else d.regime.tracker.snapshot()}
        return {"kind": "decisions", "version": self.VERSION, "symbols": list(self.symbols), "tf_ms": self.tf_ms,
                **saved, "bars": {str(t): {s: tuple(b) for s, b in v.items()} for t, v in self.bars.items()},
                "preds": {str(t): [tuple(p) for p in v] for t, v in self.preds.items()},
                "done_until": self.done_until, "last_signal": dict(self.last_signal), "prices": dict(self.prices),
                "fills": self.fills}
