"""Strategies of the tests: a user's strategy loaded by dotted path, and contexts to feed strategies directly."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from flows.records import Prediction
from flows.risk.config import SignalRules
from flows.risk.signals import TargetPosition
from flows.strategies.base import Context, Strategy, StrategyEnv, StrategyParams, features_of

TF = 3_600_000
ENV = StrategyEnv(TF, 8760.0, 0.0022, SignalRules(), 0.0)  # 1h bars, 10 bp fee + 1 bp slippage each way


class HoldParams(StrategyParams):
    """Parameters of :class:`SignHold`."""

    hold_bars: int = Field(4, ge=1, description="bars a side is held at least")
    size: float = Field(0.1, gt=0.0, le=1.0, description="position, fraction of equity")


class SignHold(Strategy):
    """A user's strategy: the sign of ``p - 0.5``, each side held ``hold_bars`` bars, a fixed fraction of equity.

    Selected as ``CRYPTOSTREAM_STRATEGY__NAME=tests.kit.strategies:SignHold``.
    """

    Params = HoldParams
    sizing = "vol_target"

    def __init__(self, params: Any, env: StrategyEnv) -> None:
        """Start flat."""
        super().__init__(params, env)
        self.p: HoldParams = params
        self.since: dict[str, list[int]] = {}  # symbol -> [side, bar close entered]

    def decide(self, ctx: Context) -> TargetPosition:
        """Go the probability's way unless the side is younger than ``hold_bars``."""
        side, since = self.since.get(ctx.symbol, (0, ctx.ts))
        want = 0 if not math.isfinite(ctx.probability) else (1 if ctx.probability > 0.5 else -1)
        if want and want != side and (not side or (ctx.ts - since) // self.env.timeframe_ms >= self.p.hold_bars):
            self.since[ctx.symbol] = [want, ctx.ts]
            return TargetPosition(want * self.p.size, (f"p={ctx.probability:.3f}: side {want:+d}",))
        return TargetPosition(ctx.exposure if side and ctx.position * side > 0 else side * self.p.size,
                              ("hold",))

    def to_state(self) -> dict[str, Any]:
        """Return the sides and their entry closes."""
        return {"since": {s: list(v) for s, v in self.since.items()}}

    def from_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`to_state`."""
        self.since = {s: [int(x) for x in v] for s, v in state["since"].items()}


class NotAStrategy:
    """A class that does not subclass Strategy (the loader refuses it)."""


def context(k: int, p: float, rv: float = 0.05, position: float = 0.0, price: float = 100.0,
            equity: float = 10_000.0, symbol: str = "BTC/USDT", horizon: int | None = None) -> Context:
    """Return the context of bar close ``k`` (1h bars) with probability ``p`` and ``rv_15`` = ``rv``."""
    conf = abs(p - 0.5) * 2 if math.isfinite(p) else math.nan
    pred = Prediction(symbol, "1h", k * TF, {}, p, conf, 1 if p > 0.5 else 0, math.nan, {}, 0.0, rv)
    return Context(symbol, k * TF, price, position, equity, features_of(pred), p, conf, pred.signal, None, None,
                   horizon, None, pred)
