"""The one cost model: the default fees and slippage of every simulated fill.

The paper broker (through :class:`flows.execution.config.ExecutionConfig`), the RL
environments and the hierarchy (``training/rl``), and the sign-trading Sharpe ratio
of the training metrics, the reports and the LightGBM config all take their
default costs from :data:`COSTS`.  Settings users set keep their names; only their
defaults come from here.  Where a caller models costs differently, the constant it
uses is named below with the reason.

Standard library only: pure operators and the paper broker import this.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Binance spot, VIP 0 without the BNB discount: 0.1 % of notional, maker and taker alike.
BINANCE_SPOT_FEE = 0.001


@dataclass(frozen=True)
class SlippageModel:
    """The paper broker's slippage: ``base + impact * (qty / bar volume) ** exponent + vol * range``, capped.

    All in basis points except ``impact_exponent`` and ``volatility_coef`` (a fraction
    of the fill bar's ``(high - low) / open``).  See :mod:`flows.execution.paper`.
    """

    base_bps: float = 1.0
    impact_bps: float = 50.0
    impact_exponent: float = 0.5
    volatility_coef: float = 0.05
    max_bps: float = 200.0


@dataclass(frozen=True)
class CostModel:
    """Fees (fractions of notional) and slippage of a simulated fill.

    ``flat_slippage`` is the adverse fraction of the fill price the RL environments
    and the hierarchy charge per trade: they fill whole-portfolio rebalances at the
    next open with no volume model, so they take one flat figure (5 bps) where the
    paper broker, filling single orders against a bar, uses ``paper_slippage``.
    """

    maker_fee: float = BINANCE_SPOT_FEE
    taker_fee: float = BINANCE_SPOT_FEE
    flat_slippage: float = 0.0005
    paper_slippage: SlippageModel = field(default_factory=SlippageModel)

    @property
    def fee_bps(self) -> float:
        """Return the taker fee in basis points: the cost per unit of position change of sign trading."""
        return self.taker_fee * 1e4


def round_trip_cost(taker_fee: float = BINANCE_SPOT_FEE,
                    base_slippage_bps: float = SlippageModel.base_bps) -> float:
    """Return the fraction of notional a position costs in and out: twice (taker fee + base slippage).

    The cost-aware strategies (:mod:`flows.strategies`) compare expected edges with it;
    the paper broker's impact and volatility slippage come on top for large or
    volatile fills.
    """
    return 2.0 * (taker_fee + base_slippage_bps / 1e4)


#: The project's default costs.
COSTS = CostModel()

#: Maker fee of the RL execution environment (``training/rl/envs/execution.py``), 0.02 %.
#: Intended to differ from the paper broker's flat spot fee: the execution agent learns
#: when resting limit orders beat market orders, and it was trained on a maker-discount
#: tier (0.02 % maker against 0.1 % taker, the shape of Binance's futures and higher VIP
#: tiers) so that providing liquidity saves fees as well as the spread.  The published
#: execution policies were trained with it; changing it changes their environment.
EXECUTION_MAKER_FEE = 0.0002

#: Half-spread the RL execution environment's market orders pay (1 bp), the same as the
#: paper broker's ``paper_slippage.base_bps``; its impact term is the env's own (linear in
#: q / mean bar volume), not the paper broker's square-root one.
EXECUTION_HALF_SPREAD = COSTS.paper_slippage.base_bps / 1e4
