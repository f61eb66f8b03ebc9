"""The tactical policy over a stretch of bar times: its books stepped and its session run, bar time by bar time.

The scoring step's hot loop in a backtest or a catch-up (``ScoringStep._policy_run``).
Each bar time's observations need the books the previous bar time's actions moved, so
the policy runs once per bar time; everything around that run is kept to plain Python
floats: the books' state sits in local tuples for the stretch, each symbol's step is
:meth:`inference.rl_observation.TacticalBook.step` written out (the same IEEE operations
in the same order, so the same doubles), and the observations are written straight into
the policy's bound input buffer (float32 by the same C cast numpy uses).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

Binding = tuple[np.ndarray, Callable[[], object], np.ndarray]  # (x [n, d] float32, run(), y [n, k])


class Book(Protocol):
    """What the loop reads and writes of ``flows.operators.scoring.PolicyBook``."""

    book: Any  # inference.rl_observation.TacticalBook
    close: float
    target: float


def act_binding(policy: Any, n: int, d: int) -> Binding:
    """Return the policy's :meth:`inference.policy.PolicyRunner.bound` buffers, or ones around its ``act``.

    A policy with only ``act`` (a test's stand-in) gets an input buffer passed to ``act`` and
    the first action of each row copied into a float64 ``y`` (``[n, 1]``).
    """
    like = np.zeros((n, d), np.float32)
    bound = getattr(policy, "bound", None)
    if bound is not None:
        return bound(like)  # type: ignore[no-any-return]
    y = np.empty((n, 1))

    def run() -> None:
        a = policy.act(like)
        y[:, 0] = a[:, 0] if a.ndim == 2 else a.reshape(n, -1)[:, 0]

    return like, run, y


def run_stretch(books: Sequence[Book], exps: Sequence[float], obs: np.ndarray, binding: Binding, tail: int,
                costs: tuple[float, float, float], missing: Sequence[bool] | None = None) -> list[float]:
    """Step ``books`` and act bar time after bar time over a stretch; return every row's target.

    Args:
        books: the policy books of the stretch's symbols, in row order within a bar time.
        exps: ``exp(ret_1)`` of every row (bar time after bar time, ``len(books)`` rows each).
        obs: float32 ``[rows, d]``: each row's observation up to column ``tail`` (features, and
            the ensemble's probability for a policy observing it); the state terms go after.
        binding: :func:`act_binding` for ``len(books)`` rows of width ``d``.
        tail: the column of the first state term.
        costs: (fee_rate, slippage, min_trade) of the policy's environment.
        missing: per row, whether the ensemble gave no probability (that row: NaN target, its
            book keeps the last one); None for a policy that does not observe it.

    Equal, bit for bit, to :meth:`flows.operators.scoring.PolicyBook.step` of each book, the
    state terms written into the rows, ``policy.act`` on them and the first action clipped to
    [-1, 1] (NaN stays NaN) becoming the book's next target.
    """
    x, run, y = binding
    n, (rows, d) = len(books), obs.shape
    if x.shape != (n, d) or not x.flags.c_contiguous or obs.dtype != np.float32 or rows % max(n, 1) or len(exps) != rows:
        raise ValueError(f"run_stretch: obs {obs.shape} {obs.dtype}, input {x.shape}, {n} books, {len(exps)} returns")
    fee_rate, _, min_trade = costs
    up, down = 1.0 + costs[1], 1.0 - costs[1]  # the fill factors TacticalBook.step computes per trade
    first = y[:, 0] if y.ndim == 2 else y.reshape(n, -1)[:, 0]  # a view: the first action of each row
    mx = x.reshape(-1).data.cast("B").cast("f")  # x's memory as float32 items (x is C-contiguous)
    mo = np.ascontiguousarray(obs).reshape(-1).data.cast("B").cast("f")
    state = [(b.book.cash, b.book.units, b.book.entry_price, b.book.bars_held, b.book.equity, b.book.peak,
              b.book.last_change, b.close) for b in books]
    targets = [b.target for b in books]
    log1p, nd, out = math.log1p, n * d, []
    for base in range(0, rows, n):  # the first row of each bar time
        mx[:nd] = mo[base * d:base * d + nd]
        j = tail
        for i in range(n):
            cash, units, entry, held, equity, peak, change, price = state[i]
            close = price * exps[base + i]
            # TacticalBook.step(targets[i], price, close, *costs), written out on locals
            eq_open = cash + units * price
            delta = targets[i] * eq_open / price - units
            if not (delta == 0.0 or abs(delta * price / eq_open) <= min_trade):  # execute
                fill = price * up if delta > 0.0 else price * down
                cash = cash - delta * fill - fee_rate * (abs(delta) * fill)
                new = units + delta
                if units == 0.0 or (units > 0.0) != (new > 0.0):
                    entry, held = (fill, 0) if new != 0.0 else (0.0, 0)
                elif abs(new) > abs(units):
                    entry = (units * entry + delta * fill) / new
                if abs(new) < 1e-12 * abs(units):
                    new, entry, held = 0.0, 0.0, 0
                units = new
            if units != 0.0:  # mark
                held += 1
            prev, equity = equity, cash + units * close
            if equity > peak:
                peak = equity
            change = equity / prev - 1.0
            if equity > 0.0:
                mx[j], mx[j + 1] = units * close / equity, units * (close - entry) / equity
            else:
                mx[j], mx[j + 1] = 0.0, 0.0
            mx[j + 2], mx[j + 3], mx[j + 4] = change, log1p(held), 1.0 - equity / peak
            state[i] = (cash, units, entry, held, equity, peak, change, close)
            j += d
        run()
        for i, a in enumerate(first.tolist()):
            v = -1.0 if a < -1.0 else 1.0 if a > 1.0 else a  # min(max(a, -1.0), 1.0): NaN stays NaN
            if missing is not None and missing[base + i]:
                out.append(math.nan)  # no probability yet: no target, the book keeps the last one
            else:
                out.append(v)
                targets[i] = v
    for b, (cash, units, entry, held, equity, peak, change, close), target in zip(books, state, targets, strict=True):
        book = b.book
        book.cash, book.units, book.entry_price, book.bars_held = cash, units, entry, held
        book.equity, book.peak, book.last_change = equity, peak, change
        b.close, b.target = close, target
    return out
