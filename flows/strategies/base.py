"""The strategy interface: per closed bar and symbol, a context in, a target position out.

A strategy is the decision logic between the models and the risk engine, written the
way freqtrade's ``IStrategy`` or a nautilus ``Strategy`` is: a class with a
:meth:`Strategy.decide` method.  The decision step
(:class:`flows.operators.decisions.DecisionStep`) calls it once per symbol at every
closed bar of the trading timeframe that has a prediction, in the configured symbol
order, with a :class:`Context`; it returns a
:class:`~flows.risk.signals.TargetPosition` (a fraction in ``[-1, 1]`` and the reasons
that shaped it).  The risk engine then sizes and limits that fraction: caps, limits,
halts, breakers and the kill switch are in force for every strategy.

One code path: the same class runs in ``flows.live`` (paper and live),
``training.backtest`` (``--chunk 1`` and ``--chunk N``, through
:mod:`flows.replay`) and the walk-forward runner, so a strategy trades the same bars
the same way everywhere.

What the fraction means depends on :attr:`Strategy.sizing`:

- ``None`` (the configured ``risk.sizing.method``, Kelly by default): the fraction of
  the largest position the engine sizes (Kelly x confidence x volatility target, capped);
- ``"vol_target"``: the fraction *is* the position as a fraction of equity; the
  engine trusts it (no Kelly, no confidence scaling), capped at
  ``risk.sizing.max_position_fraction`` and scaled down in a halt's probation.

State: a strategy that remembers anything between bars (a position's entry time, an
average) keeps it as plain data: :meth:`Strategy.to_state` returns it (JSON-able:
dicts, lists, strings, numbers, booleans, None) and :meth:`Strategy.from_state` puts
it back.  The decision step keeps it in its snapshot, so a restarted flow goes on
exactly where it stopped.  A strategy must be deterministic: the same contexts in the
same order give the same targets (no clocks, no unseeded randomness).

Parameters: a frozen pydantic model (:class:`StrategyParams`, ``extra="forbid"``) set
as the class's ``Params``; ``strategy.params`` of the settings is validated against it
at start (:mod:`flows.strategies.load`).  Copy :mod:`flows.strategies.template` to begin.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict

from flows.records import Prediction
from flows.risk.config import SignalRules
from flows.risk.signals import TargetPosition

__all__ = ["Context", "Strategy", "StrategyEnv", "StrategyParams", "TargetPosition", "features_of", "vol_target_fraction"]


class StrategyParams(BaseModel):
    """Base of a strategy's parameters: frozen, unknown names refused, every float finite."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


@dataclass(frozen=True)
class StrategyEnv:
    """What a strategy knows of the system it trades in, fixed for a run (built from the settings).

    ``round_trip_cost`` is the fraction of notional a position change in and out
    costs: twice (taker fee + base slippage) of the configured execution, from
    :func:`flows.execution.costs.round_trip_cost`.
    """

    timeframe_ms: int
    bars_per_year: float
    round_trip_cost: float
    rules: SignalRules
    confidence_threshold: float


class Context(NamedTuple):
    """One symbol at one closed bar: what :meth:`Strategy.decide` sees.

    ``features`` is the bar's feature row as far as the decision step has it: today the
    prediction's ``ret_1`` (last bar's return) and ``rv_15`` (sqrt of the sum of the
    last 15 squared bar returns).  Model outputs are NaN while a model warms up;
    ``rl_target`` is None without a policy; ``regime`` is the score ``P(bull) - P(bear)`` in
    ``[-1, 1]`` of the regime known at the close (:mod:`flows.operators.regime`), None while
    ``regime.source`` is off or the classifier warms up; ``horizon`` is the model's label horizon in bars
    when the prediction carries one, else None.
    """

    symbol: str
    ts: int  # the bar close, ms
    price: float  # the close
    position: float  # base units held now (signed)
    equity: float
    features: Mapping[str, float]
    probability: float  # ensemble P(up)
    confidence: float  # |p - 0.5| * 2
    signal: int  # the scorer's: -1 none (below scoring.confidence_threshold), 0 bearish, 1 bullish
    rl_target: float | None
    regime: float | None
    horizon: int | None
    portfolio: Any  # flows.portfolio.PortfolioSnapshot: equity, cash, positions, drawdown, trade_returns, ...
    prediction: Prediction

    @property
    def exposure(self) -> float:
        """Return the position's value as a signed fraction of equity (0 when equity is not positive)."""
        return self.position * self.price / self.equity if self.equity > 0 else 0.0


def features_of(p: Prediction) -> dict[str, float]:
    """Return the feature row the decision step has for a prediction (its ``ret_1`` and ``rv_15``)."""
    return {"ret_1": p.ret_1, "rv_15": p.volatility}


def bar_vol(features: Mapping[str, float], window: int = 15) -> float | None:
    """Return the per-bar volatility from ``rv_<window>`` (None when missing, NaN or not positive)."""
    rv = features.get(f"rv_{window}")
    if rv is None or not (math.isfinite(rv) and rv > 0):
        return None
    return rv / math.sqrt(window)


def vol_target_fraction(features: Mapping[str, float], bars_per_year: float, vol_target: float,
                        cap: float) -> float | None:
    """Return ``min(cap, vol_target / annual vol)`` of the symbol's realised vol (None when it is unknown)."""
    vol = bar_vol(features)
    if vol is None:
        return None
    return min(cap, vol_target / (vol * math.sqrt(bars_per_year)))


class Strategy:
    """Base class of a strategy: override :meth:`decide` (and the state methods when it keeps state)."""

    #: the name ``strategy.name`` selects a built-in by (a user's class is selected by ``module:Class``)
    name: ClassVar[str] = ""
    #: the parameters model; ``strategy.params`` is validated against it
    Params: ClassVar[type[StrategyParams]] = StrategyParams
    #: the sizing the fraction is meant for: None = the configured Kelly family, "vol_target" = fraction of equity
    sizing: ClassVar[Literal["vol_target"] | None] = None

    def __init__(self, params: StrategyParams, env: StrategyEnv) -> None:
        """Keep the validated parameters and the run's environment."""
        self.params, self.env = params, env

    def decide(self, ctx: Context) -> TargetPosition:
        """Return the target position of ``ctx.symbol`` after the bar closing at ``ctx.ts``."""
        raise NotImplementedError

    def to_state(self) -> dict[str, Any]:
        """Return what the strategy remembers between bars, as plain data (``{}``: nothing)."""
        return {}

    def from_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`to_state` returned (called once, before the first :meth:`decide`)."""
