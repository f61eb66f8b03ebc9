"""Plausibility of trade times: one bad timestamp must not close a day of bars.

Two checks, each against a clock the bad trade cannot move:

* the parser (:func:`flows.operators.parse.parse_messages`) refuses a trade time
  before :attr:`TradeTimeConfig.min_trade_time` or more than
  :attr:`TradeTimeConfig.max_ahead_ms` ahead of the time the batch was received
  (the host's clock): a trade stamped in seconds or microseconds, ``T=1`` or
  ``T=2**64`` never reaches the bar builder;
* :class:`TradeTimeGuard`, per symbol, holds a trade more than
  :attr:`TradeTimeConfig.max_jump_ms` after the symbol's latest trade until
  :attr:`TradeTimeConfig.confirm_trades` such trades (distinct ids, none more than
  ``max_jump_ms`` before another held one) agree: then the jump is real (a quiet
  or sparse market, a replay of a recording with a hole) and they go on; a trade
  near the latest one arriving first refutes those still far ahead of it, and a
  held trade far ahead of a later held one is refuted too: dead letters with the
  reason.  Only a trade with a higher id refutes a held one: trade ids grow with
  time, so a near trade with a lower id is an old one arriving late (a duplicate, a
  reordered message, a trade refetched from REST) and the held trade stays held.
  This catches a trade one day ahead in a replay, where the host's clock is far
  from the data's.

The bar builder also caps how many empty bars one trade may close
(``bars.max_empty_bars``); a gap in the stream is filled from REST by the
websocket source, not with empty bars.
"""

from __future__ import annotations

from datetime import datetime, timezone
from operator import itemgetter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flows.records import DeadLetter, Trade

_TS = itemgetter(2)  # Trade.ts


class TradeTimeConfig(BaseModel):
    """Tolerances for trade times (``CRYPTOSTREAM_TRADE_TIME__<FIELD>``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    min_trade_time: datetime = Field(datetime(2010, 1, 1, tzinfo=timezone.utc),
                                     description="a trade time before this UTC time is refused")
    max_ahead_ms: int = Field(60_000, ge=0, le=86_400_000,
                              description="a trade time may be at most this far ahead of the receive clock")
    max_jump_ms: int = Field(900_000, ge=1_000, description="a trade this far after the symbol's latest trade "
                             "waits for confirm_trades more before it counts")
    confirm_trades: int = Field(3, ge=1, le=1_000, description="trades that confirm a jump in time")

    @field_validator("min_trade_time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must be a UTC time with its offset, e.g. 2010-01-01T00:00:00Z")
        return value

    @property
    def min_ts(self) -> int:
        """Return :attr:`min_trade_time` in ms since the epoch."""
        return int(self.min_trade_time.timestamp() * 1000)


DEFAULT_TRADE_TIME = TradeTimeConfig()


class TradeTimeGuard:
    """Hold trades that jump far ahead of a symbol's latest trade until later trades confirm the jump."""

    def __init__(self, max_jump_ms: int = DEFAULT_TRADE_TIME.max_jump_ms,
                 confirm_trades: int = DEFAULT_TRADE_TIME.confirm_trades, state: dict[str, Any] | None = None) -> None:
        s = state or {}
        self.max_jump_ms, self.confirm_trades = max_jump_ms, confirm_trades
        self.last_ts: int | None = s.get("last_ts")  # the latest trade time let through
        self.held: list[Trade] = [Trade(*t) for t in s.get("held", ())]

    def snapshot(self) -> dict[str, Any]:
        """Return the state as plain data."""
        return {"last_ts": self.last_ts, "held": [list(t) for t in self.held]}

    def check(self, trades: list[Trade]) -> tuple[list[Trade], list[DeadLetter]]:
        """Return (trades to go on, trades refused as implausible), in arrival order."""
        last, jump = self.last_ts, self.max_jump_ms
        if not self.held and trades:
            hi = max(map(_TS, trades))
            if hi <= (last if last is not None else min(map(_TS, trades))) + jump:  # the usual batch: no jump
                if last is None or hi > last:
                    self.last_ts = hi
                return trades, []
        ok: list[Trade] = []
        dead: list[DeadLetter] = []
        held = self.held
        for t in trades:
            ts = t[2]
            if last is None or ts <= last + jump:
                ok.append(t)
                if last is None or ts > last:
                    last = ts
                if held:  # the stream went on near its latest trade: held trades near it go on, the rest were outliers
                    near = [h for h in held if h.ts <= last + jump]
                    # ... unless this trade is older than they are (a lower id: a late copy, a reordered or
                    # refetched trade): it says nothing of their times, and they stay held
                    far = [h for h in held if h.ts > last + jump]
                    dead.extend(self._refuse(h, last) for h in far if h.trade_id <= t.trade_id)
                    ok.extend(near)
                    last = max([last, *(h.ts for h in near)])
                    held = [h for h in far if h.trade_id > t.trade_id]
                continue
            if any(h.trade_id == t.trade_id for h in held):
                dead.append(DeadLetter("trade_time", t.symbol, ts, "duplicate trade id", repr(tuple(t))))
                continue
            # A held trade far ahead of this one (also past the latest) is alone in its jump.
            dead.extend(self._refuse(h, last) for h in held if h.ts > ts + jump)
            held = [h for h in held if h.ts <= ts + jump]
            held.append(t)
            if len(held) >= self.confirm_trades:  # confirmed: the market really moved on
                ok.extend(held)
                last = max(h.ts for h in held)
                held = []
        self.held, self.last_ts = held, last
        return ok, dead

    def _refuse(self, t: Trade, last: int | None) -> DeadLetter:
        ahead = (t.ts - last) / 1000 if last is not None else 0.0
        reason = (f"implausible trade time: {t.ts} is {ahead:,.0f} s after the symbol's latest trade and no "
                  f"{self.confirm_trades} trades confirmed the jump (trade_time.max_jump_ms={self.max_jump_ms})")
        return DeadLetter("trade_time", t.symbol, t.ts, reason, repr(tuple(t)))
