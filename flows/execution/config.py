"""Execution settings: which broker, fees, the paper broker's slippage and latency, live trading guards.

Environment variables nest with ``__``: ``CRYPTOSTREAM_EXECUTION__BROKER=live``,
``CRYPTOSTREAM_EXECUTION__SLIPPAGE__BASE_BPS=2``,
``CRYPTOSTREAM_EXECUTION__LIVE__MAX_CAPITAL=500``.  Only pydantic and the
standard library are imported here (``flows.settings`` imports this lazily).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from flows.execution.costs import COSTS

_SLIP = COSTS.paper_slippage


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)  # every float finite


class SlippageConfig(_Frozen):
    """Paper fills move against the order by ``base + impact * (qty / bar volume) ** exponent + vol * range``.

    ``range`` is the fill bar's ``(high - low) / open``; the sum is capped at ``max_bps``.
    """

    base_bps: float = Field(_SLIP.base_bps, ge=0.0, le=1_000.0, description="fixed half-spread cost in basis points")
    impact_bps: float = Field(_SLIP.impact_bps, ge=0.0, le=10_000.0,
                              description="impact in bps when the order is the whole bar's volume")
    impact_exponent: float = Field(_SLIP.impact_exponent, gt=0.0, le=2.0, description="0.5 = square-root impact, 1 = linear")
    volatility_coef: float = Field(_SLIP.volatility_coef, ge=0.0, le=1.0,
                                   description="fraction of the bar's high-low range added as slippage")
    max_bps: float = Field(_SLIP.max_bps, ge=0.0, le=10_000.0, description="cap on the total slippage")


class LiveConfig(_Frozen):
    """Live trading through ccxt: the opt-in, the capital cap, where the keys are, how fills are polled."""

    confirm: bool = Field(False, description="must be true (with mode=live) to send real orders")
    max_capital: float | None = Field(None, gt=0.0,
                                      description="most quote currency held in positions and open buys")
    secrets_file: Path | None = Field(None, description="JSON or TOML file with api_key and api_secret "
                                      "(used when the environment has no keys)")
    recv_window_ms: int = Field(5_000, ge=100, le=60_000, description="Binance recvWindow of signed requests")
    timeout_ms: int = Field(10_000, ge=100, le=120_000, description="ccxt request timeout")
    trades_limit: int = Field(500, ge=1, le=1_000, description="most own trades fetched per poll and symbol")
    gate_override_reason: str | None = Field(None, min_length=10, description="start mode=live without a "
                                             "passing go-live verdict (python -m training.gate), for this "
                                             "reason; recorded as the risk event go_live:override")
    cancel_after_bars: int | None = Field(None, ge=1, description="cancel entry orders still open after this "
                                          "many bars; None = leave them")


class ExecutionConfig(_Frozen):
    """How orders are executed (paper by default)."""

    broker: Literal["paper", "live"] = Field("paper", description="paper (simulated) or live (ccxt)")
    default_order_type: Literal["market", "limit"] = Field("market", description="type of entry orders")
    limit_offset_bps: float = Field(0.0, ge=0.0, le=1_000.0, description="entry limit price this far inside "
                                    "the last close (buy below, sell above) when the intent has none")
    maker_fee: float = Field(COSTS.maker_fee, ge=0.0, le=0.05, description="fraction of notional (Binance spot 0.1%)")
    taker_fee: float = Field(COSTS.taker_fee, ge=0.0, le=0.05, description="fraction of notional (Binance spot 0.1%)")
    slippage: SlippageConfig = SlippageConfig()
    latency_ms: int = Field(0, ge=0, le=3_600_000, description="paper: order reaches the market this long "
                            "after the decision; inside a bar the price is interpolated open->close")
    stop_loss_pct: float | None = Field(None, gt=0.0, lt=1.0, description="protective stop this fraction "
                                        "from the average entry price; None = off")
    take_profit_pct: float | None = Field(None, gt=0.0, le=10.0, description="take-profit this fraction "
                                          "from the average entry price; None = off")
    live: LiveConfig = LiveConfig()

