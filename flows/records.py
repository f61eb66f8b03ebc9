"""Small typed records that travel through the flows.

Times inside the flow are integers: milliseconds since the Unix epoch, UTC by
definition.  They become timezone-aware ``datetime`` objects only at the sinks,
which keeps the per-trade path free of object allocation.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, NamedTuple


class Trade(NamedTuple):
    """One exchange trade."""

    symbol: str
    trade_id: int
    ts: int
    price: float
    qty: float
    buyer_is_maker: bool


class Bar(NamedTuple):
    """One closed OHLCV bar; ``ts`` is the bar's open time, the bar covers ``[ts, ts + tf)``."""

    symbol: str
    timeframe: str
    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    trade_count: int
    vwap: float
    taker_buy_volume: float


class DeadLetter(NamedTuple):
    """An input that could not be used, kept with the reason it was refused."""

    source: str
    symbol: str | None
    ts: int
    reason: str
    payload: str


def utc(ts_ms: int) -> datetime:
    """Return the timezone-aware UTC datetime of an epoch-milliseconds timestamp."""
    return datetime.fromtimestamp(ts_ms / 1000.0, tz=timezone.utc)


class FeatureRow(NamedTuple):
    """Features of one symbol known at ``ts`` (the bar's close), for one table."""

    table: str
    symbol: str
    timeframe: str
    ts: int
    values: dict[str, float]


class BarReturn(NamedTuple):
    """A symbol's one-bar log return at a bar's close, the input of the cross-asset step."""

    symbol: str
    timeframe: str
    ts: int
    ret_1: float


class WarmupBar(NamedTuple):
    """A bar the flow did not build: a kline fetched at a fresh start to warm the features up.

    The symbol pipeline feeds it to its feature engine and emits this record instead of the
    bar: the cross-asset step warms up on ``ret_1`` (None for the first), the close barrier
    counts it as warm-up; it is never stored, scored or traded.  ``ts`` is the bar's close.
    """

    symbol: str
    timeframe: str
    ts: int
    ret_1: float | None


class OrderIntent(NamedTuple):
    """An order the decision step wants placed (quantities in base units, prices in quote)."""

    strategy: str
    symbol: str
    side: str
    qty: float
    order_type: str
    limit_price: float | None
    stop_price: float | None
    bar_ts: int
    leg: str
    reason: str


class Fill(NamedTuple):
    """One execution of an order; ``fee`` is in the quote currency whatever ``fee_asset`` was charged."""

    trade_id: str
    client_order_id: str
    ts: int
    symbol: str
    side: str
    qty: float
    price: float
    fee: float
    fee_asset: str
    liquidity: str


class Prediction(NamedTuple):
    """One symbol's scores at a bar close (``ts``, ms)."""

    symbol: str
    timeframe: str
    ts: int
    probabilities: dict[str, float]  # member family -> P(up) (NaN while warming up)
    probability: float  # ensemble P(up)
    confidence: float  # |p - 0.5| * 2
    signal: int  # -1 no signal, 0 bearish, 1 bullish (inference.scorer.to_signal)
    rl_target: float  # policy target position in [-1, 1]; NaN without a policy
    versions: dict[str, str]
    ret_1: float
    volatility: float  # rv_15 of the bar features
    horizon: int = 1  # bars the ensemble's label looks ahead (its manifest's horizon)


class Close(NamedTuple):
    """One settled bar close of the trading timeframe: its bars (symbol order) and predictions."""

    ts: int
    bars: tuple[Bar, ...]
    predictions: tuple[Prediction, ...]


class PortfolioRow(NamedTuple):
    """The portfolio after close ``ts`` (ms) as plain data (``Portfolio.snapshot()`` fields)."""

    ts: int
    state: dict[str, Any]


class Status(NamedTuple):
    """One status line per close: the figures it shows (:attr:`text` formats them when printed)."""

    ts: int
    equity: float
    drawdown: float
    fills: int
    positions: tuple[tuple[str, float], ...]  # (symbol, qty) in configured order
    signals: tuple[tuple[str, Any], ...]  # (symbol, (p_up, rl target, target fraction) or None)
    halts: tuple[tuple[str, str], ...] = ()  # (rule, phase) of every halt not active
    regime: str | None = None  # the market regime known at the close (flows.operators.regime), when configured

    @property
    def text(self) -> str:
        """Return the line: time, equity, drawdown, fills, positions, the last signal per symbol, halts if any."""
        shown = " ".join(f"{s.split('/')[0]}={q:.4g}" for s, q in self.positions)
        sig = " ".join(f"{s.split('/')[0]}:{_signal_text(v)}" for s, v in self.signals)
        halted = (" HALTS[" + " ".join(f"{r}={p}" for r, p in self.halts) + "]") if self.halts else ""
        regime = f" regime={self.regime}" if self.regime else ""
        return (f"{utc(self.ts):%Y-%m-%d %H:%M} equity={self.equity:,.2f} dd={self.drawdown:.2%} "
                f"fills={self.fills} pos[{shown}] signal(p_up rl>target)[{sig}]{halted}{regime}")


def _signal_text(v: Any) -> str:
    if v is None:
        return "-"
    p, rl, target = v
    rl_text = "" if rl != rl else f" rl{rl:+.2f}"  # NaN: no policy
    return f"p{p:.2f}{rl_text}>{target:+.2f}"


class Decided(NamedTuple):
    """One prediction's decision: the target fraction, the risk decision, the order intent if any."""

    prediction: Prediction
    target_fraction: float
    target_qty: float
    qty_delta: float
    reasons: tuple[str, ...]
