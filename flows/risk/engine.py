"""The risk engine: size a target position, then clip it to every limit, breaker and the kill switch.

:meth:`RiskEngine.decide` works in this order for one symbol at one bar close:

1. **Sizing** (:mod:`flows.risk.sizing`): ``target_fraction`` (from the strategy,
   :mod:`flows.strategies`) times the Kelly position fraction
   (recent closed trades of the portfolio, confidence, volatility target, cap)
   times equity, in base units at ``price``.  With ``sizing.method = vol_target``
   the fraction is the position as a fraction of equity (the strategy sized it),
   capped at ``sizing.max_position_fraction``; a target within 1e-9 (relative) of
   the held quantity is the held quantity, so a strategy that holds (returns the
   current exposure) trades nothing.  A halt's probation scales both.
2. **Kill switch**: engaged -> no risk-increasing change (``kill_switch``); with
   ``flatten`` (config, or the switch's own flag) the target is 0.
3. **Blocks**: a tripped breaker (``stale_data``, ``price_gap``,
   ``volatility_spike``), a halted drawdown or daily-loss rule
   (:mod:`flows.risk.halts`: reached ``max_drawdown`` from the peak or
   ``max_daily_loss`` over 24 h; released after ``halt_cooldown_bars`` into
   probation at ``probation_scale`` size), or equity at or below 0
   (``equity``): only risk-reducing changes.
4. **Caps** (:mod:`flows.risk.limits`): ``max_position``, ``max_gross_leverage``,
   ``max_correlated_exposure`` clip the target into ``[-cap, cap]``; the gross and correlated
   caps count the positions that orders approved earlier at the same close will hold
   (``pending``), so many symbols signalling at one close stay within them together.
5. **Rebalance band**: a change smaller than ``min_rebalance_fraction`` of equity
   is not traded, unless a rule cut the target, the target is flat, or the
   current position itself is over a cap (holding on never keeps a breach).
6. **Order floor**: a change worth less than ``min_order_fraction`` of equity is
   no order even when a rule cut it (then recorded as ``min_order``): a cap that
   binds on a position already at the cap leaves a change of float noise (4e-16 ETH),
   not a trade, so a position may stay over a cap by less than the floor.  Closing to
   flat always is an order.

"Risk-reducing" means the new position lies between 0 and the current one: a
flip is allowed only as far as flat.  Each rule that changes the target adds one
:class:`Rejection` (rule, reason, the quantity change asked of it and the one it
allowed).  Invalid inputs (NaN or non-positive price, NaN fraction or
confidence) trade nothing and record ``invalid_input``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from flows.risk.breakers import Breakers
from flows.risk.config import RiskConfig
from flows.risk.halts import HaltRules, Halts
from flows.risk.limits import MATRIX_FROM, Correlations, PairCorrelations, cap_qty, scaled
from flows.risk.sizing import KellyEstimate, annual_vol, kelly_estimate, position_fraction

PORTFOLIO = "*"  # the symbol of a risk event about the whole portfolio (a halt or a release)
QUEUE_BARS = 1280  # bars :meth:`RiskEngine.on_bars` holds at most before applying them unread (small: cache-resident)


class Rejection(NamedTuple):
    """A rule that cut or refused a decision at bar close ``bar_ts``.

    ``requested`` is the quantity change (base units) asked of this rule, after the
    rules before it; ``allowed`` what it let through (0 = refused).  One per rule
    and decision, matching ``risk_events``' key (symbol, ts, rule).
    """

    symbol: str
    bar_ts: int
    rule: str
    reason: str
    requested: float
    allowed: float


class RiskDecision(NamedTuple):
    """The position to hold after the decision, the change to trade now, and what was cut."""

    target_qty: float
    approved_qty_delta: float
    rejections: tuple[Rejection, ...]


_FLAT = RiskDecision(0.0, 0.0, ())  # flat, and no change


class _Fields:
    """A mapping of snapshot fields read as attributes (missing ones are None)."""

    __slots__ = ("_d",)

    def __init__(self, d: Mapping[str, Any]) -> None:
        self._d = d

    def __getattr__(self, name: str) -> Any:
        return self._d.get(name)


Reason = str | Callable[[], str]  # a callable is formatted only when the rule cuts


class _Cut:
    """The target being clipped, and the rejections recorded on the way."""

    def __init__(self, symbol: str, ts: int, held: float, target: float) -> None:
        self.symbol, self.ts, self.held, self.target = symbol, ts, held, target
        self.rejections: list[Rejection] = []

    def to(self, rule: str, reason: Reason, lo: float, hi: float) -> None:
        new = min(hi, max(lo, self.target))
        asked, allowed = self.target - self.held, new - self.held
        if asked != allowed:  # a cut below float resolution of the change is no cut
            text = reason if isinstance(reason, str) else reason()
            self.rejections.append(Rejection(self.symbol, self.ts, rule, text, asked, allowed))
        self.target = new

    def block(self, rule: str, reason: Reason) -> None:
        """Allow only positions between 0 and the current one."""
        self.to(rule, reason, min(self.held, 0.0), max(self.held, 0.0))


class _Moves:
    """How far each pending order moves the book's exposure (its position's minus the held one's), once per order.

    A close decides every symbol against one book and adds its orders to one ``pending`` mapping,
    so the moves of the orders seen so far stay valid: each later decision adds only the new ones.
    """

    __slots__ = ("book", "new", "of", "pending", "total")

    def __init__(self, pending: Mapping[str, tuple[float, float]], book: Mapping[str, float | None]) -> None:
        self.pending, self.book = pending, book
        self.of: dict[str, float] = {}  # symbol -> move, in the order the orders were approved
        self.new: list[str] = []  # pending symbols without a held position
        self.total = 0.0

    def update(self) -> None:
        book, pending, of = self.book, self.pending, self.of
        for s in itertools.islice(pending, len(of), None):
            qty, price = pending[s]
            held = book.get(s)
            of[s] = move = abs(qty) * price - (held or 0.0)
            self.total += move
            if held is None:
                self.new.append(s)


class _Sums:
    """The book's gross exposure without each of its symbols, once per book instead of a sum per decision.

    Each is ``sum()`` of the other exposures in the book's order: the same additions from left to
    right, with the symbol's own term 0.0 (adding 0.0 changes no float), row by row of one matrix
    (``np.cumsum`` adds sequentially, unlike ``np.sum``), so the caps are bit for bit those of the
    per-decision sums.  ``names``: the book's symbols in its order (``at``: each one's place);
    ``unmarked``: the symbols without a valid mark (the caps raise on them).
    """

    __slots__ = ("at", "names", "total", "unmarked", "without")

    def __init__(self, book: Mapping[str, float | None]) -> None:
        self.names = names = list(book)
        self.at = {s: k for k, s in enumerate(names)}
        self.unmarked = [s for s in names if book[s] is None]
        terms = np.array([book[s] or 0.0 for s in names], dtype=np.float64)
        rows = np.tile(terms, (len(names), 1))
        np.fill_diagonal(rows, 0.0)
        sums = np.cumsum(rows, axis=1)[:, -1].tolist() if names else []
        self.without: dict[str, float] = dict(zip(names, sums, strict=True))
        self.total: float = float(np.cumsum(terms)[-1]) if names else 0


class RiskEngine:
    """Sizing, limits, circuit breakers and the kill switch for one portfolio."""

    def __init__(self, config: RiskConfig | None = None) -> None:
        """Create the engine with empty breaker and correlation state."""
        self.config = config or RiskConfig()
        self._breakers = Breakers(self.config.breakers)
        self._correlations: Correlations = PairCorrelations(self.config.limits)
        self._queued: list[tuple[str, int, float]] = []  # bars of on_bars not applied yet (see on_bars)
        self.matrix_from = MATRIX_FROM  # symbols from which the correlations take the matrix form
        lim = self.config.limits
        self.halts = Halts(HaltRules(lim.max_drawdown, lim.max_daily_loss, lim.halt_cooldown_bars,
                                     lim.probation_bars, lim.probation_scale))
        self.kelly_halted = False
        self._events: list[Rejection] = []
        self._halts_ts: int | None = None  # the close the halts were last fed
        self._kelly: tuple[tuple[float, ...], KellyEstimate] | None = None
        self._moves: _Moves | None = None  # of the close being decided (pending orders, book)
        self._book_cache: tuple[dict[str, float], dict[str, float], dict[str, float],
                                dict[str, float | None]] | None = None
        self._sums = _Sums({})  # of the cached book

    @property
    def breakers(self) -> Breakers:
        """The circuit breakers, every bar fed so far applied."""
        if self._queued:
            self._apply()
        return self._breakers

    @property
    def correlations(self) -> Correlations:
        """The return correlations, every bar fed so far applied."""
        if self._queued:
            self._apply()
        return self._correlations

    def on_bar(self, symbol: str, ts: int, ret: float) -> None:
        """Feed a closed bar (open time ``ts``, ms) and its return to the breakers and correlations."""
        if self._queued:
            self._apply()
        self._breakers.on_bar(symbol, ts, ret)
        self._correlations.on_bar(symbol, ts, ret)
        self._correlations = scaled(self._correlations, self.matrix_from)

    def on_bars(self, bars: list[tuple[str, int, float]]) -> None:
        """Feed several closed bars, each (symbol, open time, return): the same as :meth:`on_bar` of each in order.

        They are held until the engine reads its breakers or correlations (a decision past the
        flat no-change, :meth:`to_state`), or :data:`QUEUE_BARS` are held: a replay's closes that
        decide nothing then reach the breakers and correlations as one run per symbol and pair
        (:meth:`Breakers.on_bars`, :meth:`PairCorrelations.on_bars`), far cheaper than close by
        close, with the same state at every read.
        """
        queued = self._queued
        queued += bars
        if len(queued) >= QUEUE_BARS:
            self._apply()

    def _apply(self) -> None:
        bars, self._queued = self._queued, []
        self._breakers.on_bars(bars)
        self._correlations.on_bars(bars)
        self._correlations = scaled(self._correlations, self.matrix_from)

    def decide(self, symbol: str, ts: int, target_fraction: float, confidence: float, price: float, vol: float,
               portfolio_snapshot: Any, kill: Any, correlations: Mapping[str, float] | None = None,
               pending: Mapping[str, tuple[float, float]] | None = None) -> RiskDecision:
        """Return the approved position and change for ``symbol`` at bar close ``ts`` (see the module doc).

        Args:
            symbol: the symbol decided.
            ts: the decision's bar close (ms).
            target_fraction: target position in [-1, 1] of the largest size.
            confidence: signal confidence in [0, 1].
            price: the price the quantity is computed at (the close).
            vol: the symbol's volatility over ``sizing.vol_window_bars`` bars (NaN = use the engine's).
            portfolio_snapshot: :class:`flows.portfolio.PortfolioSnapshot` (or a mapping of its fields).
            kill: whether the kill switch is engaged (a bool, or an object with ``flatten``).
            correlations: other symbol -> correlation with ``symbol``; missing ones are estimated.
            pending: other symbol -> (position, price) that an order approved earlier at the same close
                will hold: the gross and correlated caps count that position instead of the held one,
                so that many symbols signalling at one close stay within them together (the snapshot
                is the same for every symbol of a close: orders fill at the next bar).
        """
        cfg = self.config
        snap: Any = portfolio_snapshot if isinstance(portfolio_snapshot, tuple) or not isinstance(
            portfolio_snapshot, Mapping) else _Fields(portfolio_snapshot)  # a PortfolioSnapshot: no ABC check
        positions: Mapping[str, float] = snap.positions or {}
        isfinite = math.isfinite
        if target_fraction == 0.0 and symbol not in positions and isfinite(price) and price > 0 and \
                isfinite(confidence):
            return _FLAT  # flat and asked to stay flat: no rule can cut a change of 0
        held = float(positions.get(symbol, 0.0))
        bad = "" if isfinite(price) and price > 0 and isfinite(target_fraction) and isfinite(confidence) else \
            self._invalid(price, target_fraction, confidence)
        if bad:
            return RiskDecision(held, 0.0, (Rejection(symbol, ts, "invalid_input", bad, math.nan, 0.0),))
        if target_fraction == 0.0 and symbol not in positions:
            return RiskDecision(0.0, 0.0, ())  # flat and asked to stay flat: no rule can cut a change of 0
        equity = float(snap.equity)
        if self._queued:  # the rules below read the breakers and correlations
            self._apply()
        self._advance_halts(ts, snap, equity)
        sized = self._sized(symbol, ts, target_fraction, confidence, price, vol, equity, snap.trade_returns or ())
        if cfg.sizing.method == "vol_target" and abs(sized - held) <= 1e-9 * abs(held):
            sized = held  # the strategy holds: float noise of exposure * equity / price is no order
        cut = _Cut(symbol, ts, held, sized)
        if kill:
            if cfg.kill_switch.flatten or getattr(kill, "flatten", False):
                cut.to("kill_switch", "kill switch engaged: flatten", 0.0, 0.0)
            cut.block("kill_switch", "kill switch engaged: no new risk")
        self._blocks(cut, snap, equity)
        caps = self._caps(symbol, positions, snap.prices or {}, snap.avg_prices or {}, price, equity, correlations,
                          pending) if equity > 0 and cut.target != 0.0 else ()
        for rule, cap, reason in caps:
            cut.to(rule, reason, -cap, cap)
        delta = cut.target - held
        if (not cut.rejections and cut.target != 0.0
                and abs(delta) * price < cfg.sizing.min_rebalance_fraction * equity
                and all(abs(held) <= cap for _, cap, _ in caps)):  # never hold on to a breach
            return RiskDecision(held, 0.0, ())
        if cut.target != 0.0 and delta != 0.0 and abs(delta) * price < cfg.sizing.min_order_fraction * equity:
            if not cut.rejections:  # like the band: nothing to record
                return RiskDecision(held, 0.0, ())
            floor = Rejection(symbol, ts, "min_order", "change worth less than sizing.min_order_fraction of "
                              "equity: no order", delta, 0.0)
            return RiskDecision(held, 0.0, (*cut.rejections, floor))
        return RiskDecision(cut.target, delta, tuple(cut.rejections))

    @staticmethod
    def _invalid(price: float, target_fraction: float, confidence: float) -> str:
        if not (math.isfinite(price) and price > 0):
            return f"price must be a positive number, got {price!r}"
        if not math.isfinite(target_fraction):
            return f"target_fraction must be a number in [-1, 1], got {target_fraction!r}"
        if not math.isfinite(confidence):
            return f"confidence must be a number in [0, 1], got {confidence!r}"
        return ""

    def _sized(self, symbol: str, ts: int, target_fraction: float, confidence: float, price: float, vol: float,
               equity: float, trade_returns: Any) -> float:
        scfg = self.config.sizing
        if target_fraction == 0.0 or equity <= 0:
            return 0.0
        if scfg.method == "vol_target":  # the strategy's own size, as a fraction of equity
            cap = scfg.max_position_fraction
            return max(-cap, min(cap, target_fraction)) * self.halts.scale() * equity / price
        given = vol / math.sqrt(scfg.vol_window_bars) if math.isfinite(vol) and vol > 0 else None
        yearly = annual_vol(given or self._breakers.bar_vol(symbol), scfg, self._breakers.bar_ms)
        frac = position_fraction(self._kelly_of(ts, trade_returns), confidence, yearly, scfg) * self.halts.scale()
        return max(-1.0, min(1.0, target_fraction)) * frac * equity / price

    def _kelly_of(self, ts: int, trade_returns: Any) -> float:
        # One Kelly estimate per set of closed trades (the snapshots of a close share it).
        last = self._kelly
        if last is not None and (last[0] is trade_returns or last[0] == trade_returns):
            return last[1].fraction
        key = trade_returns if type(trade_returns) is tuple else tuple(trade_returns)
        est = kelly_estimate(key, self.config.sizing)
        self._kelly = (key, est)
        if est.halted != self.kelly_halted:
            self.kelly_halted = est.halted
            n = len(trade_returns)
            text = (f"Kelly of the last {n} trades shrunk toward the prior is {est.raw:+.3f}: sizing at the floor, "
                    f"{self.config.sizing.probation_fraction:.0%} of the prior's Kelly" if est.halted else
                    f"Kelly of the last {n} trades is {est.raw:+.3f} again: sizing from the record")
            self._events.append(Rejection(PORTFOLIO, ts, "kelly:" + ("halt" if est.halted else "release"), text,
                                          0.0, 0.0))
        return est.fraction

    def _advance_halts(self, ts: int, snap: Any, equity: float) -> None:
        """Feed the drawdown and daily-loss halts this close's equity; queue their transitions as risk events.

        Once per close: every symbol decided at ``ts`` sees the same portfolio snapshot.
        """
        if ts == self._halts_ts:
            return
        self._halts_ts = ts
        dd = float(getattr(snap, "drawdown", 0.0) or 0.0)
        peak = getattr(snap, "peak_equity", None) or (equity / (1.0 - dd) if dd < 1.0 else None)
        daily = float(getattr(snap, "daily_pnl", 0.0) or 0.0)
        for e in self.halts.on_close(ts, equity, daily, self._breakers.bar_ms or 60_000, peak):
            self._events.append(Rejection(PORTFOLIO, ts, f"{e.rule}:{e.kind}", e.reason, 0.0, 0.0))

    def drain_events(self) -> list[Rejection]:
        """Return and forget the halts and releases since the last call (risk events of the whole portfolio)."""
        out, self._events = self._events, []
        return out

    def halt_phases(self) -> dict[str, str]:
        """Return rule -> phase of every halt not active (``kelly`` while sizing at the floor)."""
        phases = self.halts.phases()
        if self.kelly_halted:
            phases["kelly"] = "floor"
        return phases

    def _blocks(self, cut: _Cut, snap: Any, equity: float) -> None:
        tripped = self._breakers.tripped(cut.symbol, cut.ts)
        if tripped:
            for rule, reasons in self._by_rule(tripped).items():
                cut.block(rule, "; ".join(reasons))
        if equity <= 0:
            cut.block("equity", lambda: f"equity {equity:,.2f} is not positive")
            return
        for rule, reason in self.halts.blocked().items():
            cut.block(rule, reason)

    @staticmethod
    def _by_rule(tripped: list[tuple[str, str]]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for rule, reason in tripped:
            out.setdefault(rule, []).append(reason)
        return out

    def _caps(self, sym: str, positions: Mapping[str, float], marks: Mapping[str, float],
              avg: Mapping[str, float], price: float, equity: float,
              given: Mapping[str, float] | None, pending: Mapping[str, tuple[float, float]] | None,
              ) -> tuple[tuple[str, float, Reason], ...]:
        """Return (rule, largest |position| allowed, reason) of each cap."""
        lim = self.config.limits
        book = self._book(positions, marks, avg)
        sums = self._sums
        k = sums.at.get(sym)
        others = sums.names if k is None else sums.names[:k] + sums.names[k + 1:]  # slices: no loop per symbol
        for s in sums.unmarked:
            if s != sym:
                self._mark(s, marks, avg)  # raises, naming the symbol
        gross = sums.without.get(sym, sums.total)  # the sum of the others' exposures in the book's order
        moves = self._moves_of(pending, book) if pending else None
        if moves is not None:  # this close's earlier orders: their positions replace the held ones
            of = moves.of
            gross += moves.total - of.get(sym, 0.0)
            group = self._correlations.correlated(sym, others + [s for s in moves.new if s != sym], given)
            corr = sum([book.get(s) or 0.0 for s in group]) + sum([of[s] for s in group if s in of])
        else:  # the held book alone: the same sums as before pending orders counted
            group = self._correlations.correlated(sym, others, given)
            corr = sum([book[s] for s in group])  # type: ignore[misc]
        return (
            ("max_position", cap_qty(lim.max_position_fraction * equity, 0.0, price),
             lambda: f"|position| capped at {lim.max_position_fraction:.2%} of equity {equity:,.2f}"),
            ("max_gross_leverage", cap_qty(lim.max_gross_leverage * equity, gross, price),
             lambda: f"gross exposure capped at {lim.max_gross_leverage:g}x equity; other positions hold "
                     f"{gross / equity:.2f}x"),
            ("max_correlated_exposure", cap_qty(lim.max_correlated_fraction * equity, corr, price),
             lambda: f"exposure with correlated [{', '.join(group)}] capped at {lim.max_correlated_fraction:.2%} "
                     f"of equity; they hold {corr / equity:.2%}"),
        )

    def _moves_of(self, pending: Mapping[str, tuple[float, float]], book: dict[str, float | None]) -> _Moves:
        """Return the pending orders' moves, kept while the close's ``pending`` and book are the same objects."""
        moves = self._moves
        if moves is None or moves.pending is not pending or moves.book is not book:
            moves = self._moves = _Moves(pending, book)
        moves.update()
        return moves

    def _book(self, positions: Mapping[str, float], marks: Mapping[str, float], avg: Mapping[str, float]
              ) -> dict[str, float | None]:
        """Return ``|qty| * mark`` of every open position (None: no valid mark), once per portfolio snapshot.

        A close decides every symbol against the same snapshot (it is shared until the next fill or
        mark), so the book's exposures are computed once per close instead of once per decision:
        at 200 symbols that was an O(n^2) Python loop per close (issue 21).  Each exposure is
        the same product as :func:`gross_of` takes, in the positions' order, so sums are unchanged.
        """
        cached = self._book_cache
        if cached is not None and cached[0] == positions and cached[1] == marks and cached[2] == avg:
            return cached[3]  # dict equality: a C loop, far cheaper than the Python one below
        book: dict[str, float | None] = {}
        for s, q in positions.items():
            if q != 0.0:
                px = marks.get(s) or avg.get(s)
                book[s] = abs(positions[s]) * float(px) if px is not None and math.isfinite(px) and px > 0 else None
        self._book_cache = (dict(positions), dict(marks), dict(avg), book)
        self._sums = _Sums(book)
        return book

    @staticmethod
    def _mark(symbol: str, marks: Mapping[str, float], avg: Mapping[str, float]) -> float:
        px = marks.get(symbol) or avg.get(symbol)
        if px is None or not (math.isfinite(px) and px > 0):
            raise ValueError(f"portfolio snapshot has no valid price for held symbol {symbol} ({px!r})")
        return float(px)

    def to_state(self) -> dict[str, Any]:
        """Return the engine's state (config, breakers, return windows) as plain data."""
        return {"config": self.config.model_dump(mode="json"), "breakers": self.breakers.to_state(),
                "returns": self.correlations.to_state(), "halts": self.halts.to_state(),
                "kelly_halted": self.kelly_halted}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], config: RiskConfig | None = None) -> RiskEngine:
        """Rebuild an engine from :meth:`to_state` output (``config`` overrides the saved one)."""
        out = cls(config or RiskConfig.model_validate(state["config"]))
        out._breakers.restore(state["breakers"])
        out._correlations.restore(state["returns"])
        out._correlations = scaled(out._correlations, out.matrix_from)
        if "halts" in state:  # snapshots from before the halts: rules active, as they were
            out.halts = Halts.from_state(out.halts.rules, state["halts"])
            out.kelly_halted = bool(state["kelly_halted"])
        return out
