"""Portfolio halts with a release rule: halted, then a cooldown, then reduced-size probation, then normal.

The drawdown and daily-loss limits used to be traps: past ``max_drawdown`` only
risk-reducing orders went through, and a flat book can never climb back to its
peak, so the strategy stayed out for good, and nothing said so.  Here each limit
is a small state machine per portfolio, fed once per bar close:

* **active** -> **halted** when the limit is reached (drawdown from the peak at or
  past ``max_drawdown``; loss over the rolling 24 h at or past ``max_daily_loss``).
  While halted only risk-reducing orders go through.
* **halted** -> **probation** after ``cooldown_bars`` bars (compare freqtrade's
  ``MaxDrawdown`` protection, which locks for a set time).  The limit's reference
  restarts there: the drawdown is measured from the equity at release, and the
  daily loss from the release equity until 24 h have passed.  Sizes are scaled by
  ``probation_scale``.
* **probation** -> **active** after ``probation_bars`` bars without reaching the
  limit again; reaching it during probation halts again.

Every transition is a :class:`HaltEvent` (rule, what happened, why) that the risk
engine turns into a risk event, the status line and the summaries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple

DAY_MS = 86_400_000
RULES = ("max_drawdown", "max_daily_loss")


def _utc(ms: int) -> str:
    return f"{datetime.fromtimestamp(ms / 1000, tz=timezone.utc):%Y-%m-%d %H:%M} UTC"


class HaltEvent(NamedTuple):
    """A halt, a move to probation, or a release of one rule at bar close ``ts``."""

    ts: int
    rule: str
    kind: str  # "halt" | "probation" | "release"
    reason: str


@dataclass(frozen=True)
class HaltRules:
    """The limits and the release rule (from ``LimitsConfig``)."""

    max_drawdown: float
    max_daily_loss: float
    cooldown_bars: int
    probation_bars: int
    probation_scale: float


@dataclass
class _Rule:
    phase: str = "active"  # active | halted | probation
    until: int = 0  # ms: end of the cooldown (halted) or of the probation
    release_ts: int | None = None
    release_equity: float = 0.0


class Halts:
    """The drawdown and daily-loss halts of one portfolio."""

    def __init__(self, rules: HaltRules) -> None:
        """Start with both rules active and no peak yet (the first close sets it)."""
        self.rules = rules
        self.state = {r: _Rule() for r in RULES}
        self.peak: float | None = None

    def on_close(self, ts: int, equity: float, daily_pnl: float, bar_ms: int,
                 peak_equity: float | None = None) -> list[HaltEvent]:
        """Advance the rules to bar close ``ts`` (ms); return the transitions.

        ``daily_pnl`` is the portfolio's equity change over the rolling 24 h;
        ``peak_equity`` its all-time peak, used until a drawdown release restarts it.
        """
        cfg = self.rules
        if self.peak is None:
            self.peak = max(equity, peak_equity or equity)
        self.peak = max(self.peak, equity)
        events: list[HaltEvent] = []
        dd = 1.0 - equity / self.peak if self.peak > 0 else 0.0
        loss = self._daily_loss(ts, equity, daily_pnl)
        for rule, value, limit in (("max_drawdown", dd, cfg.max_drawdown), ("max_daily_loss", loss, cfg.max_daily_loss)):
            st = self.state[rule]
            what = "drawdown from peak" if rule == "max_drawdown" else "loss over 24 h"
            if st.phase in ("active", "probation") and value >= limit:
                st.phase, st.until = "halted", ts + cfg.cooldown_bars * bar_ms
                events.append(HaltEvent(ts, rule, "halt", f"{what} {value:.2%} reached the limit {limit:.2%}: only "
                                        f"risk-reducing orders for {cfg.cooldown_bars} bars"))
            elif st.phase == "halted" and ts >= st.until:
                st.phase, st.until = "probation", ts + cfg.probation_bars * bar_ms
                st.release_ts, st.release_equity = ts, equity
                if rule == "max_drawdown":
                    self.peak = equity  # the drawdown is measured from here on
                events.append(HaltEvent(ts, rule, "probation", f"cooldown over: trading resumes at "
                                        f"{cfg.probation_scale:.0%} size for {cfg.probation_bars} bars"))
            elif st.phase == "probation" and ts >= st.until:
                st.phase = "active"
                events.append(HaltEvent(ts, rule, "release", f"probation passed ({cfg.probation_bars} bars without "
                                        f"reaching the limit): full size"))
        return events

    def _daily_loss(self, ts: int, equity: float, daily_pnl: float) -> float:
        """Return the loss (fraction) over 24 h, counted from the last release if that is more recent."""
        st = self.state["max_daily_loss"]
        if st.release_ts is not None and ts - st.release_ts < DAY_MS and st.release_equity > 0:
            return max(0.0, 1.0 - equity / st.release_equity)
        start = equity - daily_pnl
        return -daily_pnl / start if daily_pnl < 0 and start > 0 else 0.0

    def blocked(self) -> dict[str, str]:
        """Return rule -> reason for every halted rule (only risk-reducing orders while any is)."""
        return {r: f"{r} halted: only risk-reducing orders until {_utc(st.until)}, then probation"
                for r, st in self.state.items() if st.phase == "halted"}

    def scale(self) -> float:
        """Return the size multiple: ``probation_scale`` while any rule is on probation, else 1."""
        return self.rules.probation_scale if any(st.phase == "probation" for st in self.state.values()) else 1.0

    def phases(self) -> dict[str, str]:
        """Return rule -> phase, for rules not active (what the status line shows)."""
        out = {}
        for r, st in self.state.items():  # a loop, not a comprehension: once per close, mostly all active
            if st.phase != "active":
                out[r] = st.phase
        return out

    def to_state(self) -> dict[str, Any]:
        """Return the state as plain data."""
        return {"peak": self.peak, "rules": {r: {"phase": st.phase, "until": st.until, "release_ts": st.release_ts,
                                                 "release_equity": st.release_equity}
                                             for r, st in self.state.items()}}

    @classmethod
    def from_state(cls, rules: HaltRules, state: Mapping[str, Any]) -> Halts:
        """Rebuild from :meth:`to_state` output."""
        out = cls(rules)
        out.peak = state["peak"]
        for r, d in state["rules"].items():
            out.state[r] = _Rule(str(d["phase"]), int(d["until"]), d["release_ts"], float(d["release_equity"]))
        return out
