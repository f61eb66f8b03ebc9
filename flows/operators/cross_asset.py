"""Cross-asset step: all symbols of one bar time, as a pure state machine.

Per-symbol rows arrive in any interleaving; a bar time is complete when every
symbol has delivered it, so the output never depends on arrival order (worker
count, batch boundaries).  A quiet symbol still delivers bars: the flow closes
them on a wall-clock watermark (empty bars at the last close).  ``max_wait_bars``
optionally gives up on a bar time once some symbol is that many bars past it;
rows given up on are absent, never invented, and this bound does make the
output depend on arrival order, so it is off by default.  For each complete
bar time it emits one row per present symbol with:

================  ==================================================  =======
feature           formula                                             warm-up
================  ==================================================  =======
corr_btc_60       Pearson correlation of the last 60 one-bar log       60
                  returns with the reference symbol's (BTC/USDT);
                  0 when either series is constant
beta_btc_60       cov(r, r_ref) / var(r_ref) over the same 60 bars;    60
                  0 when var(r_ref) is 0
ret_rel_xs        r - mean of r over the symbols of that bar time      60
================  ==================================================  =======

The reference symbol itself gets correlation and beta 1.  Returns only enter
the rolling windows at bar times where the reference symbol is present, so
every pair of series stays aligned in time.

Cost per bar time (issue 21).  Every feature pairs a symbol with the reference
only, so the work is O(N) in the universe, never O(N^2): no neighbourhood bound
is needed.  The windows of all symbols live in one ``[2 * WINDOW, N]`` array
(each bar written at slots ``k`` and ``k + WINDOW``, so the window is one
contiguous slice) and the sums run over all symbols at once: ``np.add.reduce``
along axis 0 adds the rows oldest first from 0, the order Python's ``sum`` took
over each symbol's deque, so the rows are the per-symbol loop's bit for bit
(``tests/unit/flows/test_cross_asset.py`` against ``tests/kit/cross_asset_reference.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flows.snapshots import check_snapshot

CROSS_FEATURES: tuple[str, ...] = ("corr_btc_60", "beta_btc_60", "ret_rel_xs")
WINDOW = 60


class CrossAssetStep:
    """Join per-symbol one-bar returns by bar time and add cross-asset features."""

    VERSION = 1  # of the snapshot's layout

    def __init__(
        self,
        symbols: tuple[str, ...],
        reference: str = "BTC/USDT",
        tf_ms: int = 60_000,
        max_wait_bars: int | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.symbols = symbols
        self.reference = reference if reference in symbols else symbols[0]
        self.tf_ms = tf_ms
        self.max_wait_bars = max_wait_bars
        self.max_wait_ms = None if max_wait_bars is None else max_wait_bars * tf_ms
        self._ordered = sorted(symbols)
        self._ref = symbols.index(self.reference)
        s = state or {}
        self.pending: dict[int, dict[str, float]] = {int(k): dict(v) for k, v in s.get("pending", {}).items()}
        n = len(symbols)
        self._ring = np.zeros((2 * WINDOW, n))  # the windows; bar at slots k and k + WINDOW
        self._next = 0  # ring slot of the next bar
        self._held = np.zeros(n, np.int64)  # returns each symbol holds in a row (at most WINDOW)
        for j, sym in enumerate(symbols):
            held = list(s.get("history", {}).get(sym, ()))[-WINDOW:]
            if held:  # the newest ones last, right before slot 0 (its mirror) as a push leaves them
                self._ring[WINDOW - len(held):WINDOW, j] = self._ring[2 * WINDOW - len(held):, j] = held
                self._held[j] = len(held)
        self.newest: int = s.get("newest", -1)
        self.emitted_until: int = s.get("emitted_until", -1)
        self.warm_until: int = s.get("warm_until", -1)  # the last bar time of a warm-up return (no rows up to it)

    @classmethod
    def from_snapshot(cls, snap: Any) -> CrossAssetStep:
        """Rebuild a step from :meth:`snapshot` (see :mod:`flows.snapshots`)."""
        s = check_snapshot(snap, "cross_asset", cls.VERSION)
        wait = s["max_wait_bars"]
        return cls(tuple(s["symbols"]), s["reference"], int(s["tf_ms"]), None if wait is None else int(wait), dict(s))

    def snapshot(self) -> dict[str, Any]:
        """Return the state as plain data (its configuration included: a resumed run goes on with it)."""
        return {"kind": "cross_asset", "version": self.VERSION, "symbols": list(self.symbols),
                "reference": self.reference, "tf_ms": self.tf_ms, "max_wait_bars": self.max_wait_bars,
                "pending": {k: dict(v) for k, v in self.pending.items()},
                "history": self.history,
                "newest": self.newest, "emitted_until": self.emitted_until, "warm_until": self.warm_until}

    @property
    def history(self) -> dict[str, list[float]]:
        """Each symbol's held returns in time order (the per-symbol windows, as plain lists)."""
        end, held = self._next + WINDOW, self._held.tolist()
        return {sym: self._ring[end - held[j]:end, j].tolist() for j, sym in enumerate(self.symbols)}

    def update(self, symbol: str, ts: int, ret_1: float, warmup: bool = False) -> list[tuple[str, int, dict[str, float]]]:
        """Add one symbol's return at bar time ``ts``; return rows of every bar time now complete.

        ``warmup``: the return of a bar the flow did not build (a kline of the warm-up at a fresh
        start): it fills the windows, and no row comes out for a bar time up to the last such one.
        """
        if warmup:
            self.warm_until = max(self.warm_until, ts)
        if ts <= self.emitted_until:
            return []  # that bar time was already given up on; its row is absent, never invented
        self.pending.setdefault(ts, {})[symbol] = ret_1
        self.newest = max(self.newest, ts)
        out: list[tuple[str, int, dict[str, float]]] = []
        for t in sorted(self.pending):
            rets = self.pending[t]
            if len(rets) < len(self.symbols) and (self.max_wait_ms is None or self.newest - t < self.max_wait_ms):
                break
            del self.pending[t]
            self.emitted_until = t
            rows = self._rows(t, rets)
            if t > self.warm_until:
                out.extend(rows)
        return out

    def _rows(self, ts: int, rets: dict[str, float]) -> list[tuple[str, int, dict[str, float]]]:
        if self.reference not in rets:
            return []  # no row, and no window moves: every pair of series stays aligned in time
        # summed in symbol order, whatever order the returns arrived in (worker count, batches): the same
        # float every time, and the order training.history_features sums in
        mean = sum([rets[sym] for sym in self._ordered if sym in rets]) / len(rets)
        present = np.array([sym in rets for sym in self.symbols])
        k = self._next
        self._ring[k] = self._ring[k + WINDOW] = [rets.get(sym, 0.0) for sym in self.symbols]
        self._next = (k + 1) % WINDOW
        # a hole would misalign the window: a symbol missing here warms up again
        self._held = np.where(present, np.minimum(self._held + 1, WINDOW), 0)
        if self._held[self._ref] < WINDOW:
            return []
        win = self._ring[self._next:self._next + WINDOW]  # [WINDOW, N] oldest first
        dx = win - np.add.reduce(win, axis=0, initial=0.0) / WINDOW
        sxy = np.add.reduce(dx * dx[:, self._ref:self._ref + 1], axis=0, initial=0.0)
        sxx = np.add.reduce(dx * dx, axis=0, initial=0.0)
        syy = sxx[self._ref]
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = (sxy / np.sqrt(sxx * syy)).tolist()
            beta = (sxy / syy).tolist()
        zero_x, zero_y = (sxx == 0.0).tolist(), syy == 0.0
        rows: list[tuple[str, int, dict[str, float]]] = []
        for j in np.flatnonzero(present & (self._held >= WINDOW)).tolist():  # not warm: absent, not zero-filled
            sym = self.symbols[j]
            rows.append((sym, ts, {"corr_btc_60": 0.0 if zero_x[j] or zero_y else corr[j],
                                   "beta_btc_60": 0.0 if zero_y else beta[j], "ret_rel_xs": rets[sym] - mean}))
        return rows
