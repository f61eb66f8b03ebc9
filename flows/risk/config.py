"""Risk settings: sizing, limits, circuit breakers, kill switch and signal rules.

Frozen pydantic models, validated once at the edge (``Settings.risk``); the
environment sets them with ``CRYPTOSTREAM_RISK__<SECTION>__<FIELD>``, e.g.
``CRYPTOSTREAM_RISK__LIMITS__MAX_POSITION_FRACTION=0.2``.  Fractions are of equity.
This module imports only pydantic and the standard library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

KellyMethod = Literal["full_kelly", "half_kelly", "quarter_kelly", "fixed_fraction", "vol_target"]
KELLY_MULTIPLIER = {"full_kelly": 1.0, "half_kelly": 0.5, "quarter_kelly": 0.25}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)  # every float finite


def _pairs(value: Any, what: str) -> Any:
    """Parse ``"BTC/USDT=majors,ETH/USDT=majors"`` (the environment's form) into a mapping."""
    if not isinstance(value, str):
        return value
    out = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        key, sep, val = part.partition("=")
        if not sep or not key.strip() or not val.strip():
            raise ValueError(f"{part!r} is not SYMBOL={what}; write e.g. BTC/USDT={what}")
        out[key.strip()] = val.strip()
    return out


class SizingConfig(_Frozen):
    """Position sizing after the seed's ``PositionSizer`` (half Kelly, prior 50 % wins of +2 % / -1 %)."""

    method: KellyMethod = Field("half_kelly", description="Kelly multiple: full, half, quarter, a fixed fraction, "
                                "or vol_target: the strategy's fraction is the position as a fraction of equity "
                                "(no Kelly, no confidence; capped at max_position_fraction); a strategy that "
                                "sizes itself (flows/strategies) sets it")
    fixed_fraction: float = Field(0.02, gt=0.0, le=1.0, description="fraction of equity per position with "
                                  "method=fixed_fraction")
    kelly_cap: float = Field(0.25, gt=0.0, le=1.0, description="full Kelly fraction clipped to [0, kelly_cap] "
                             "before the multiple (seed: 25 %)")
    prior_trades: float = Field(20.0, ge=0.0, description="weight of the prior in closed trades: Kelly's win "
                                "rate, mean win and mean loss are shrunk toward the prior by this many "
                                "pseudo-trades (0 = the raw record)")
    probation_fraction: float = Field(0.25, ge=0.0, le=1.0, description="when the record's Kelly is not "
                                      "positive, size at this fraction of the prior's Kelly (keeps trading small "
                                      "so the record can recover; 0 = stop, which can lock out for good)")
    lookback_trades: int = Field(100, ge=1, description="most recent closed trades Kelly is estimated from")
    prior_win_rate: float = Field(0.5, ge=0.0, le=1.0, description="prior win probability (seed)")
    prior_avg_win: float = Field(0.02, gt=0.0, description="prior mean winning trade return (seed)")
    prior_avg_loss: float = Field(0.01, gt=0.0, description="prior mean losing trade return, positive (seed)")
    stop_loss_pct: float | None = Field(None, gt=0.0, lt=1.0, description="set: the Kelly fraction is the equity "
                                        "risked down to a stop this far away (seed's risk per share), so the "
                                        "position is fraction / stop_loss_pct; unset: the fraction is the position")
    vol_target: float = Field(0.20, gt=0.0, description="annualized volatility target; size *= min(1, target/vol)")
    vol_window_bars: int = Field(15, ge=1, description="bars the volatility given to decide() spans (rv_15: 15); "
                                 "per-bar vol = vol / sqrt(vol_window_bars)")
    bars_per_year: float | None = Field(None, gt=0.0, description="annualization; unset = from the bar length "
                                        "seen in on_bar (365 days a year)")
    max_position_fraction: float = Field(0.25, gt=0.0, le=10.0, description="sizing cap per position (seed: 25 %)")
    min_rebalance_fraction: float = Field(0.001, ge=0.0, le=1.0, description="changes smaller than this fraction "
                                          "of equity are not traded (closing to flat always is)")
    min_order_fraction: float = Field(1e-6, ge=0.0, le=1.0, description="no order for a change worth less than "
                                      "this fraction of equity, even one a rule cut (a cap's float residue); "
                                      "closing to flat always is")


class LimitsConfig(_Frozen):
    """Hard limits; a decision that would breach one is cut to the limit (rejection recorded)."""

    max_position_fraction: float = Field(0.25, gt=0.0, le=10.0, description="max |position| value / equity "
                                         "per symbol")
    max_gross_leverage: float = Field(1.0, gt=0.0, le=20.0, description="max sum of |position values| / equity")
    max_drawdown: float = Field(0.15, gt=0.0, le=1.0, description="from the equity peak (from the release "
                                "after a halt); reaching it halts new risk for halt_cooldown_bars, then "
                                "probation (go-live gate: 15 %)")
    max_daily_loss: float = Field(0.05, gt=0.0, le=1.0, description="loss over a rolling 24 h as a fraction of "
                                  "the equity 24 h ago; reaching it halts as max_drawdown does")
    halt_cooldown_bars: int = Field(24, ge=0, description="bars a drawdown or daily-loss halt allows only "
                                    "risk-reducing orders before probation (flows/risk/halts.py)")
    probation_bars: int = Field(72, ge=0, description="bars of probation after a halt's cooldown: sizes scaled by "
                                "probation_scale, the limit measured from the release; then full size")
    probation_scale: float = Field(0.25, gt=0.0, le=1.0, description="size multiple during probation")
    max_correlated_fraction: float = Field(0.5, gt=0.0, le=20.0, description="max sum of |position values| / "
                                           "equity over a symbol and the symbols correlated with it")
    groups: dict[str, str] = Field(default_factory=dict, description="symbol -> group; symbols of one group are "
                                   "correlated (env: BTC/USDT=majors,ETH/USDT=majors)")
    correlation_threshold: float = Field(0.7, ge=0.0, le=1.0, description="|correlation| at or above which two "
                                         "symbols are correlated")
    correlation_halflife_bars: float = Field(50.0, gt=0.0, description="half-life in bars of the engine's "
                                             "exponentially weighted correlations")
    correlation_min_bars: int = Field(30, ge=3, description="common bars needed before a correlation counts")

    @field_validator("groups", mode="before")
    @classmethod
    def _groups(cls, value: Any) -> Any:
        return _pairs(value, "group")


class BreakersConfig(_Frozen):
    """Circuit breakers per symbol; a tripped breaker allows only risk-reducing orders."""

    stale_bars: int = Field(3, ge=1, description="trip when no bar came for this many bar lengths, or this many "
                            "bars in a row did not move (filled empty bars)")
    gap_sigma: float = Field(6.0, gt=0.0, description="trip when |bar return| exceeds this many sigmas of the "
                             "slow volatility")
    spike_ratio: float = Field(3.0, gt=1.0, description="trip while fast volatility / slow volatility exceeds this")
    fast_halflife_bars: float = Field(5.0, gt=0.0, description="half-life of the fast volatility (EWMA of r^2)")
    slow_halflife_bars: float = Field(100.0, gt=0.0, description="half-life of the slow volatility (EWMA of r^2)")
    warmup_bars: int = Field(30, ge=1, description="bars before the gap and spike breakers can trip")
    cooldown_bars: int = Field(5, ge=0, description="bars a breaker stays tripped after its condition clears")

    @model_validator(mode="after")
    def _halflives(self) -> BreakersConfig:
        if self.fast_halflife_bars >= self.slow_halflife_bars:
            raise ValueError(f"fast_halflife_bars ({self.fast_halflife_bars}) must be below slow_halflife_bars "
                             f"({self.slow_halflife_bars})")
        return self


class KillSwitchConfig(_Frozen):
    """Where the kill switch lives (Redis key in the ``timescale`` profile, a file in ``local``)."""

    redis_key: str = Field("cryptostream:kill", min_length=1, description="Redis key whose presence stops new risk")
    file: Path | None = Field(None, description="file whose presence stops new risk; unset = <data_dir>/KILL")
    flatten: bool = Field(False, description="while engaged, also close every position")


class SignalRules(_Frozen):
    """How ML signal, RL target, regime and sentiment combine (see :mod:`flows.risk.signals`)."""

    ml_weight: float = Field(0.5, ge=0.0, description="weight of the ML direction")
    rl_weight: float = Field(0.5, ge=0.0, description="weight of the RL target (when a policy is present)")
    min_confidence: float = Field(0.0, ge=0.0, le=1.0, description="ML signals below this confidence are none")
    require_agreement: bool = Field(True, description="ML and RL pointing opposite ways -> flat")
    rl_alone: bool = Field(False, description="act on the RL target when the ML signal is none")
    allow_short: bool = Field(True, description="negative targets allowed (false for spot accounts)")
    regime_threshold: float = Field(0.5, ge=0.0, le=1.0, description="|regime| from which it scales the target")
    counter_regime_scale: float = Field(0.5, ge=0.0, le=1.0, description="scale of a target against the regime")
    sentiment_weight: float = Field(0.2, ge=0.0, le=1.0, description="target *= 1 + weight * sentiment * sign")

    @model_validator(mode="after")
    def _weights(self) -> SignalRules:
        if self.ml_weight + self.rl_weight <= 0:
            raise ValueError("ml_weight + rl_weight must be positive")
        return self


class RiskConfig(_Frozen):
    """The risk engine's settings."""

    sizing: SizingConfig = Field(default_factory=SizingConfig, description="position sizing (Kelly family)")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="hard limits")
    breakers: BreakersConfig = Field(default_factory=BreakersConfig, description="circuit breakers")
    kill_switch: KillSwitchConfig = Field(default_factory=KillSwitchConfig, description="kill switch")
    signals: SignalRules = Field(default_factory=SignalRules, description="signal combination rules")
