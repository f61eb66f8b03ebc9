"""Observations of the RL policies, shared by the training environments and the live flow.

Numpy only: the live flow imports this module and must not pull in gymnasium,
torch or stable-baselines3.  Every rescaling of the state happens in here, so an
environment and the flow build the same vector from the same state.
"""

from __future__ import annotations

import math

import numpy as np

TACTICAL_STATE: tuple[str, ...] = ("position", "unrealized_pnl", "equity_change", "log1p_bars_held", "drawdown")
EXECUTION_STATE: tuple[str, ...] = ("remaining", "time_left", "drift_pct", "bar_return_pct", "range_pct",
                                    "log_volume_ratio", "filled_vs_arrival_pct")


def tactical_observation(features: np.ndarray, position: float, unrealized_pnl: float, equity_change: float,
                         bars_held: int, drawdown: float) -> np.ndarray:
    """Return the tactical policy's observation, float32 ``[F + 5]``.

    Args:
        features: the asset's market features at the bar's close, ``[F]``.
        position: current exposure, signed, as a fraction of equity (units * close / equity).
        unrealized_pnl: open position's unrealized P&L as a fraction of equity.
        equity_change: equity's return over the last bar (``E_t / E_{t-1} - 1``).
        bars_held: bars since the position was opened or flipped (0 when flat).
        drawdown: ``1 - E_t / max(E)``, in [0, 1].
    """
    n = features.shape[0]
    out = np.empty(n + 5, np.float32)
    out[:n] = features
    out[n:] = (position, unrealized_pnl, equity_change, math.log1p(bars_held), drawdown)
    return out


class TacticalBook:
    """One asset's position state as the tactical environment keeps it, for the env and the live flow alike.

    Per bar: :meth:`execute` the target decided at the last close at this bar's open,
    then :meth:`mark` the bar's close, then :meth:`observation`.  All state is ratios,
    so any price scale gives the same observation: a flow that knows only one-bar
    returns can use the price index ``exp(cumsum(ret_1))`` with the open taken as the
    last close.  ``bars_held`` counts bar closes since the position was opened or
    flipped (resizing keeps counting; flat is 0).
    """

    __slots__ = ("cash", "units", "entry_price", "bars_held", "equity", "peak", "last_change")

    def __init__(self, equity: float = 1.0) -> None:
        self.cash, self.units, self.entry_price, self.bars_held = equity, 0.0, 0.0, 0
        self.equity = self.peak = equity
        self.last_change = 0.0

    def snapshot(self) -> dict[str, float]:
        """Return the state as plain data."""
        return {k: getattr(self, k) for k in self.__slots__}

    @classmethod
    def restore(cls, snap: dict[str, float]) -> TacticalBook:
        """Rebuild a book from :meth:`snapshot`."""
        book = cls()
        for k in cls.__slots__:
            setattr(book, k, snap[k])
        book.bars_held = int(book.bars_held)
        return book

    def execute(self, target: float, price: float, fee_rate: float = 0.0, slippage: float = 0.0,
                min_trade: float = 0.0) -> tuple[float, float, float]:
        """Trade to exposure ``target`` (fraction of equity) at ``price``; return (fee, traded notional, equity there).

        The fill is ``price * (1 + slippage)`` for a buy, ``(1 - slippage)`` for a sell, and
        ``fee_rate`` is charged on its notional; no trade when the exposure would move by
        ``min_trade`` or less.
        """
        units, cash = self.units, self.cash
        eq_open = cash + units * price
        delta = target * eq_open / price - units
        if delta == 0.0 or abs(delta * price / eq_open) <= min_trade:
            return 0.0, 0.0, eq_open
        fill = price * (1.0 + slippage) if delta > 0.0 else price * (1.0 - slippage)
        traded = abs(delta) * fill
        fee = fee_rate * traded
        self.cash = cash - delta * fill - fee
        new = units + delta
        if units == 0.0 or (units > 0.0) != (new > 0.0):  # opened or flipped: a new position
            self.entry_price, self.bars_held = (fill, 0) if new != 0.0 else (0.0, 0)
        elif abs(new) > abs(units):  # added: average entry
            self.entry_price = (units * self.entry_price + delta * fill) / new
        if abs(new) < 1e-12 * abs(units):
            new, self.entry_price, self.bars_held = 0.0, 0.0, 0
        self.units = new
        return fee, traded, eq_open

    def step(self, target: float, price: float, close: float, fee_rate: float = 0.0, slippage: float = 0.0,
             min_trade: float = 0.0) -> tuple[float, float, float, float, float]:
        """:meth:`execute` ``target`` at ``price``, :meth:`mark` ``close``, return :meth:`state` at ``close``.

        One call per bar for a caller that only needs the observation's state terms (the live
        flow's policy books): the same arithmetic in the same order as the three calls.
        """
        units, cash = self.units, self.cash
        eq_open = cash + units * price
        delta = target * eq_open / price - units
        if not (delta == 0.0 or abs(delta * price / eq_open) <= min_trade):  # execute
            fill = price * (1.0 + slippage) if delta > 0.0 else price * (1.0 - slippage)
            self.cash = cash = cash - delta * fill - fee_rate * (abs(delta) * fill)
            new = units + delta
            if units == 0.0 or (units > 0.0) != (new > 0.0):
                self.entry_price, self.bars_held = (fill, 0) if new != 0.0 else (0.0, 0)
            elif abs(new) > abs(units):
                self.entry_price = (units * self.entry_price + delta * fill) / new
            if abs(new) < 1e-12 * abs(units):
                new, self.entry_price, self.bars_held = 0.0, 0.0, 0
            self.units = units = new
        if units != 0.0:  # mark
            self.bars_held += 1
        prev = self.equity
        eq = self.equity = cash + units * close
        if eq > self.peak:
            self.peak = eq
        change = self.last_change = eq / prev - 1.0
        pos, upnl = (units * close / eq, units * (close - self.entry_price) / eq) if eq > 0.0 else (0.0, 0.0)
        return pos, upnl, change, math.log1p(self.bars_held), 1.0 - eq / self.peak

    def mark(self, close: float) -> float:
        """Hold through the bar to ``close``: count the bar if a position is open, move equity; return it."""
        if self.units != 0.0:
            self.bars_held += 1
        prev = self.equity
        eq = self.cash + self.units * close
        self.equity = eq
        if eq > self.peak:
            self.peak = eq
        self.last_change = eq / prev - 1.0
        return eq

    def observation(self, features: np.ndarray, close: float) -> np.ndarray:
        """Return :func:`tactical_observation` of ``features`` and this book at ``close``."""
        n = features.shape[0]
        out = np.empty(n + 5, np.float32)
        out[:n] = features
        out[n:] = self.state(close)
        return out

    def state(self, close: float) -> tuple[float, float, float, float, float]:
        """Return the observation's state terms at ``close`` (:data:`TACTICAL_STATE`, ``bars_held`` as log1p).

        A caller stacking several books' observations writes these rows next to the features
        (float32 the same way :func:`tactical_observation` rounds them).
        """
        eq, units = self.equity, self.units
        pos, upnl = (units * close / eq, units * (close - self.entry_price) / eq) if eq > 0.0 else (0.0, 0.0)
        return pos, upnl, self.last_change, math.log1p(self.bars_held), 1.0 - eq / self.peak


def strategic_observation(features: np.ndarray, weights: np.ndarray, regime: np.ndarray | None) -> np.ndarray:
    """Return the strategic policy's observation, float32 ``[A * F + A + R]``.

    Args:
        features: every asset's market features at the bar's close, ``[A, F]``.
        weights: current portfolio weights (signed fractions of equity), ``[A]``.
        regime: regime inputs ``[R]`` known at the bar's close, or None.
    """
    parts = [features.reshape(-1), weights.reshape(-1)]
    if regime is not None:
        parts.append(regime.reshape(-1))
    return np.concatenate(parts).astype(np.float32, copy=False)


def execution_observation(features: np.ndarray, remaining: float, time_left: float, drift: float,
                          bar_return: float, bar_range: float, volume_ratio: float,
                          filled_vs_arrival: float) -> np.ndarray:
    """Return the execution policy's observation, float32 ``[F + 7]``.

    Price terms are signed by the order's side (positive = the price moved against
    the order: up for a buy) and go in as fractions, out in percent.

    Args:
        features: the asset's market features at the last closed bar, ``[F]``.
        remaining: quantity still to work, fraction of the parent order.
        time_left: bars left to the deadline, fraction of the horizon.
        drift: last close / arrival price - 1, signed by side.
        bar_return: last bar's close / open - 1, signed by side.
        bar_range: last bar's (high - low) / close.
        volume_ratio: last bar's volume over its trailing mean (> 0).
        filled_vs_arrival: average fill price so far / arrival - 1, signed by side (0 if none).
    """
    n = features.shape[0]
    out = np.empty(n + 7, np.float32)
    out[:n] = features
    out[n:] = (remaining, time_left, 100.0 * drift, 100.0 * bar_return, 100.0 * bar_range,
               math.log(volume_ratio), 100.0 * filled_vs_arrival)
    return out


def strategic_weights(action: np.ndarray, n_assets: int, long_only: bool = True, gross_cap: float = 1.0,
                      logit_scale: float = 5.0) -> np.ndarray:
    """Map a strategic action to portfolio weights (fractions of equity), float64 ``[A]``.

    Long-only: ``action`` has ``A + 1`` entries in [-1, 1] (the last is cash); the
    weights are ``softmax(logit_scale * action)`` without the cash entry, so they are
    non-negative and sum to at most 1.  Long-short: ``action`` has ``A`` entries in
    [-1, 1], scaled down so that ``sum |w| <= gross_cap``.
    """
    a = np.clip(np.asarray(action, np.float64).reshape(-1), -1.0, 1.0)
    if long_only:
        if a.shape[0] != n_assets + 1:
            raise ValueError(f"long-only action needs {n_assets + 1} entries (assets + cash), got {a.shape[0]}")
        z = logit_scale * a
        e = np.exp(z - z.max())
        return (e / e.sum())[:n_assets]
    if a.shape[0] != n_assets:
        raise ValueError(f"long-short action needs {n_assets} entries, got {a.shape[0]}")
    gross = float(np.abs(a).sum())
    return a * (gross_cap / gross) if gross > gross_cap else a
