"""Portfolio accounting: cash, signed positions at average cost, P&L, drawdown and exposure.

One portfolio in the quote currency (USDT).  Quantities are in base units, a
negative quantity is a short.  Accounting rules:

- a fill moves cash by ``-(signed qty * price) - fee``;
- a fill that adds to a position (or opens one) moves the average price to the
  quantity-weighted mean of the old average and the fill price;
- a fill that reduces a position realizes ``closed qty * (price - avg)`` (sign of
  the position); a fill larger than the position closes it and opens the rest on
  the other side at the fill price (a flip);
- fees are charged to realized P&L when paid, so at every mark
  ``equity == initial_cash + realized_pnl + unrealized_pnl`` exactly (up to float
  rounding), with ``unrealized_pnl = sum(qty * (mark - avg))``;
- a round trip (flat -> position -> flat, or up to a flip) records its return,
  net P&L (fees included) over the notional opened, for Kelly sizing.

``mark`` sets prices at a time and keeps the equity history the rolling daily
P&L needs: ``daily_pnl = equity now - equity 24 h ago`` (the last mark at or before
``now - 24 h``; before 24 h of history, the starting equity).  Drawdown is from
the peak of marked equity.  :meth:`Portfolio.to_state` / :meth:`Portfolio.from_state`
round-trip exactly through JSON.

A ``portfolio_state`` row per bar carries :meth:`Portfolio.row_state`: the exact
state without the day of equity marks, which it carries as a delta (the point the
latest mark added, the first point kept and the count); :func:`state_from_rows`
rebuilds :meth:`Portfolio.to_state` exactly from a row and the rows of the day before it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

DAY_MS = 86_400_000
SIDES = {"buy": 1.0, "sell": -1.0}


class PortfolioSnapshot(NamedTuple):
    """The portfolio at ``ts`` (the latest mark or fill, ms) as plain values."""

    ts: int
    equity: float
    cash: float
    positions: dict[str, float]
    avg_prices: dict[str, float]
    prices: dict[str, float]
    realized_pnl: float
    unrealized_pnl: float
    fees: float
    daily_pnl: float
    drawdown: float
    peak_equity: float
    gross_exposure: float
    net_exposure: float
    leverage: float
    trade_returns: tuple[float, ...]


_snapshot = partial(tuple.__new__, PortfolioSnapshot)  # PortfolioSnapshot(*fields) without its Python-level __new__


class _Trade:
    """The round trip open on one symbol: P&L so far (fees included) and notional opened."""

    __slots__ = ("pnl", "opened")

    def __init__(self, pnl: float = 0.0, opened: float = 0.0) -> None:
        self.pnl, self.opened = pnl, opened


class Portfolio:
    """Cash and positions of one account, marked to market bar by bar."""

    def __init__(self, initial_cash: float, max_trade_returns: int = 200) -> None:
        """Start flat with ``initial_cash`` (quote); keep the last ``max_trade_returns`` trade returns."""
        if not (math.isfinite(initial_cash) and initial_cash > 0):
            raise ValueError(f"initial_cash must be a positive number, got {initial_cash!r}")
        if max_trade_returns < 1:
            raise ValueError(f"max_trade_returns must be >= 1, got {max_trade_returns!r}")
        self.initial_cash = float(initial_cash)
        self.cash = float(initial_cash)
        self.qty: dict[str, float] = {}
        self.avg: dict[str, float] = {}
        self.prices: dict[str, float] = {}
        self.realized = 0.0
        self.fees = 0.0
        self.ts = 0
        self.mark_ts: int | None = None
        self.peak = float(initial_cash)
        self.trades: dict[str, _Trade] = {}
        self.trade_returns: deque[float] = deque(maxlen=max_trade_returns)
        # Times and equities of marks, equal-equity runs collapsed (the 24 h lookup result is unchanged).
        self.hist_ts: deque[int] = deque()
        self.hist_eq: deque[float] = deque()
        self._added: list[int | float] | None = None  # the history point the latest mark appended
        self.closed = 0  # round trips closed so far (their returns: trade_returns)
        self.closed_at_mark = 0  # ``closed`` at the latest mark
        self._returns_changed = False  # a round trip closed since the mark before the latest
        self._snap: PortfolioSnapshot | None = None  # cached until the next fill or mark

    # -- fills ---------------------------------------------------------------------------------

    def apply_fill(self, symbol: str, side: str, qty: float, price: float, fee: float, ts: int) -> None:
        """Book a fill: ``qty`` base units bought or sold at ``price``, ``fee`` in quote."""
        sign = SIDES.get(side)
        if sign is None:
            raise ValueError(f"fill side must be 'buy' or 'sell', got {side!r} ({symbol})")
        if not (math.isfinite(qty) and qty > 0):
            raise ValueError(f"fill qty must be a positive number, got {qty!r} ({symbol})")
        if not (math.isfinite(price) and price > 0):
            raise ValueError(f"fill price must be a positive number, got {price!r} ({symbol})")
        if not math.isfinite(fee):
            raise ValueError(f"fill fee must be a finite number, got {fee!r} ({symbol})")
        dq = sign * qty
        self._snap = None
        self.cash -= dq * price + fee
        self.fees += fee
        self.realized -= fee
        self.ts = max(self.ts, int(ts))
        self.prices.setdefault(symbol, price)
        held = self.qty.get(symbol, 0.0)
        if held == 0.0 or (held > 0) == (dq > 0):
            self._add(symbol, held, dq, price, fee)
            return
        closed = min(abs(held), qty)
        close_fee = fee * closed / qty
        pnl = closed * (price - self.avg[symbol]) * (1.0 if held > 0 else -1.0)
        self.realized += pnl
        trade = self.trades.setdefault(symbol, _Trade())
        trade.pnl += pnl - close_fee
        rest = held + dq
        if abs(rest) <= 1e-12 * max(abs(held), qty) or (rest > 0) != (held > 0):
            self._close_trade(symbol)
            opened = qty - closed
            if opened > 1e-12 * qty:
                self._add(symbol, 0.0, sign * opened, price, fee - close_fee)
        else:
            self.qty[symbol] = rest

    def _add(self, symbol: str, held: float, dq: float, price: float, fee: float) -> None:
        new = held + dq
        self.avg[symbol] = (abs(held) * self.avg.get(symbol, 0.0) + abs(dq) * price) / abs(new)
        self.qty[symbol] = new
        trade = self.trades.setdefault(symbol, _Trade())
        trade.pnl -= fee
        trade.opened += abs(dq) * price

    def _close_trade(self, symbol: str) -> None:
        trade = self.trades.pop(symbol)
        if trade.opened > 0:
            self.trade_returns.append(trade.pnl / trade.opened)
            self.closed += 1
        self.qty.pop(symbol, None)
        self.avg.pop(symbol, None)

    # -- marks ---------------------------------------------------------------------------------

    def mark(self, prices: Mapping[str, float], ts: int) -> None:
        """Mark positions at ``prices`` (symbols not given keep their last price) at ``ts`` (ms)."""
        ts = int(ts)
        if self.mark_ts is not None and ts < self.mark_ts:
            raise ValueError(f"mark ts {ts} is before the previous mark {self.mark_ts}")
        own, isfinite = self.prices, math.isfinite
        for sym, px in prices.items():
            if not (isfinite(px) and px > 0):
                raise ValueError(f"mark price of {sym} must be a positive number, got {px!r}")
            own[sym] = float(px)
        self.ts, self.mark_ts, self._snap = max(self.ts, ts), ts, None
        qty = self.qty
        eq = self.cash + (sum([q * own[s] for s, q in qty.items()]) if qty else 0)  # equity(): the same sum
        self.peak = max(self.peak, eq)
        hts, heq = self.hist_ts, self.hist_eq
        self._added = None
        self._returns_changed, self.closed_at_mark = self.closed != self.closed_at_mark, self.closed
        if not heq or heq[-1] != eq:
            hts.append(ts)
            heq.append(eq)
            self._added = [ts, eq]
        cutoff = ts - DAY_MS
        while len(hts) > 1 and hts[1] <= cutoff:  # keep one point at or before the cutoff
            hts.popleft()
            heq.popleft()

    def equity(self) -> float:
        """Return cash plus positions at their latest prices."""
        return self.cash + sum(q * self.prices[s] for s, q in self.qty.items())

    def daily_pnl(self) -> float:
        """Return equity now minus equity 24 h before the latest mark (starting equity before then)."""
        return self.equity() - self._day_base()

    def _day_base(self) -> float:
        if self.mark_ts is None or self.hist_ts[0] > self.mark_ts - DAY_MS:
            return self.initial_cash
        return self.hist_eq[0]

    def snapshot(self) -> PortfolioSnapshot:
        """Return the portfolio's figures now (shared until the next fill or mark: do not mutate)."""
        if self._snap is not None:
            return self._snap
        qty, prices, avg = self.qty, self.prices, self.avg
        if qty:
            net = sum([q * prices[s] for s, q in qty.items()])
            gross = sum([abs(q) * prices[s] for s, q in qty.items()])
            unreal = sum([q * (prices[s] - avg[s]) for s, q in qty.items()])
        else:
            net = gross = unreal = 0  # sum() of nothing
        eq = self.cash + net  # equity(): the same sum in the same order
        lev = gross / eq if eq > 0 else (math.inf if gross > 0 else 0.0)
        peak = max(self.peak, eq)
        dd = (peak - eq) / peak if peak > 0 else 0.0
        self._snap = snap = _snapshot((self.ts, eq, self.cash, qty.copy(), avg.copy(), prices.copy(), self.realized,
                                       unreal, self.fees, eq - self._day_base(), dd, peak, gross, net, lev,
                                       tuple(self.trade_returns)))
        return snap

    # -- state ---------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Return the exact state as JSON-able plain data."""
        out = self.to_state_without_history()
        out["hist_ts"], out["hist_eq"] = list(self.hist_ts), list(self.hist_eq)
        return out

    def row_state(self) -> dict[str, Any]:
        """Return :meth:`to_state` with the equity history as a delta (a ``portfolio_state`` row's ``state``).

        ``hist_added`` is the point the latest mark appended (None if its equity repeated the
        last point), ``hist_first`` the oldest point kept and ``hist_len`` how many are kept;
        ``trade_returns`` is there only when a round trip closed since the mark before (else
        None): :func:`state_from_rows` puts both back together from consecutive rows.  One row
        per mark; the row depends on the state alone, so a replayed close writes the same row.
        """
        out = self.to_state_without_history(self._returns_changed)
        out["hist_added"] = self._added
        out["hist_first"] = [self.hist_ts[0], self.hist_eq[0]] if self.hist_ts else None
        out["hist_len"] = len(self.hist_ts)
        return out

    def to_state_without_history(self, returns: bool = True) -> dict[str, Any]:
        """Return :meth:`to_state` without ``hist_ts`` / ``hist_eq`` (``trade_returns`` None unless ``returns``)."""
        trades = self.trades
        return {"initial_cash": self.initial_cash, "cash": self.cash, "qty": self.qty.copy(), "avg": self.avg.copy(),
                "prices": self.prices.copy(), "realized": self.realized, "fees": self.fees, "ts": self.ts,
                "mark_ts": self.mark_ts, "peak": self.peak,
                "trades": {s: [t.pnl, t.opened] for s, t in trades.items()} if trades else {},
                "trade_returns": list(self.trade_returns) if returns else None, "max_trade_returns": self.trade_returns.maxlen,
                "closed": self.closed, "closed_at_mark": self.closed_at_mark}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Portfolio:
        """Rebuild a portfolio from :meth:`to_state` output."""
        try:
            out = cls(float(state["initial_cash"]), int(state["max_trade_returns"]))
            out.cash, out.realized, out.fees = float(state["cash"]), float(state["realized"]), float(state["fees"])
            out.qty = {s: float(q) for s, q in state["qty"].items()}
            out.avg = {s: float(a) for s, a in state["avg"].items()}
            out.prices = {s: float(p) for s, p in state["prices"].items()}
            out.ts, out.peak = int(state["ts"]), float(state["peak"])
            out.mark_ts = None if state["mark_ts"] is None else int(state["mark_ts"])
            out.trades = {s: _Trade(float(p), float(o)) for s, (p, o) in state["trades"].items()}
            out.trade_returns.extend(float(r) for r in state["trade_returns"])
            # States saved before these counters existed: their rows held every return, so none is pending.
            out.closed = int(state.get("closed", len(out.trade_returns)))
            out.closed_at_mark = int(state.get("closed_at_mark", out.closed))
            out.hist_ts.extend(int(t) for t in state["hist_ts"])
            out.hist_eq.extend(float(e) for e in state["hist_eq"])
        except KeyError as exc:
            raise ValueError(f"portfolio state lacks field {exc.args[0]!r}") from None
        return out


def state_from_rows(states: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Return the :meth:`Portfolio.to_state` of the last of consecutive :meth:`Portfolio.row_state` rows.

    ``states`` are the rows in mark order, ending with the one to rebuild; they must
    reach back far enough to hold the last row's ``hist_len - 1`` added points (the
    marks of the day before it: a row per bar close of the last 24 h is enough) and the
    latest row with ``trade_returns`` (the close of the last round trip), if any closed.
    """
    if not states:
        raise ValueError("state_from_rows needs at least one portfolio_state row")
    last = states[-1]
    try:
        n, first = int(last["hist_len"]), last["hist_first"]
        added = [r["hist_added"] for r in states if r["hist_added"] is not None][-(n - 1):] if n > 1 else []
    except KeyError as exc:
        raise ValueError(f"portfolio_state row lacks field {exc.args[0]!r}") from None
    if len(added) != max(n - 1, 0):
        raise ValueError(f"the rows hold {len(added)} of the {n - 1} equity marks the last row keeps: "
                         "pass the rows of the 24 h before it")
    points = ([first] if first is not None else []) + added
    out = {k: v for k, v in last.items() if k not in ("hist_added", "hist_first", "hist_len")}
    returns = next((r["trade_returns"] for r in reversed(states) if r["trade_returns"] is not None), None)
    if returns is None and int(last["closed"]) > 0:
        raise ValueError("no row holds the trade returns: pass the rows back to the last closed round trip")
    out["trade_returns"] = returns or []
    out["hist_ts"], out["hist_eq"] = [int(p[0]) for p in points], [float(p[1]) for p in points]
    return out
