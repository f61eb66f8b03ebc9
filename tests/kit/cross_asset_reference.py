"""The cross-asset step's per-symbol Python form (before issue 21), kept as the reference its vectorised form must equal.

:class:`flows.operators.cross_asset.CrossAssetStep` computes the window sums over numpy arrays;
this is the loop it replaced, one symbol at a time over deques, unchanged.
"""

from __future__ import annotations

import math
from collections import deque
from itertools import repeat
from operator import mul, sub

from flows.operators.cross_asset import WINDOW


class ReferenceCrossAsset:
    """Join per-symbol returns by bar time; rows as the pre-issue-21 step computed them (``max_wait_bars`` off)."""

    def __init__(self, symbols: tuple[str, ...], reference: str = "BTC/USDT") -> None:
        self.symbols = symbols
        self.reference = reference if reference in symbols else symbols[0]
        self._ordered = sorted(symbols)
        self.pending: dict[int, dict[str, float]] = {}
        self.history = {sym: deque[float](maxlen=WINDOW) for sym in symbols}

    def bar_time(self, ts: int, rets: dict[str, float]) -> list[tuple[str, int, dict[str, float]]]:
        """Return the rows of one complete (or given-up-on) bar time holding ``rets``."""
        mean = sum([rets[sym] for sym in self._ordered if sym in rets]) / len(rets)
        ref = rets.get(self.reference)
        if ref is not None:
            for sym in self.symbols:
                if sym in rets:
                    self.history[sym].append(rets[sym])
                else:
                    self.history[sym].clear()
        rows: list[tuple[str, int, dict[str, float]]] = []
        ref_hist = self.history[self.reference]
        if ref is None or len(ref_hist) < WINDOW:
            return rows
        dy = _demeaned(ref_hist)
        syy = sum(map(mul, dy, dy))
        for sym in self.symbols:
            hist = self.history[sym]
            if sym not in rets or len(hist) < WINDOW:
                continue
            dx = _demeaned(hist)
            sxy, sxx = sum(map(mul, dx, dy)), sum(map(mul, dx, dx))
            corr = 0.0 if sxx == 0.0 or syy == 0.0 else sxy / math.sqrt(sxx * syy)
            beta = 0.0 if syy == 0.0 else sxy / syy
            rows.append((sym, ts, {"corr_btc_60": corr, "beta_btc_60": beta, "ret_rel_xs": rets[sym] - mean}))
        return rows


def _demeaned(values: deque[float]) -> list[float]:
    m = sum(values) / len(values)
    return list(map(sub, values, repeat(m)))
