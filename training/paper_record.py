"""The paper-trading record of a deployment, read from the decision store (for the go-live gate).

A paper run is every ``portfolio_state`` row of one ``run_id``.  The record counts a run
when its stored ensemble predictions were made by the judged ensemble version
(``predictions.model_version``), so paper days earned by other models do not qualify
new ones.  It reports:

- ``days``: the time the qualifying runs covered (the union of their first-to-last
  ``portfolio_state`` intervals), in days;
- ``breaches``: the portfolio halts (risk events of symbol ``*`` with a rule
  ``max_drawdown:halt`` or ``max_daily_loss:halt``) the runs hit: each is a limit reached;
- ``fill_deviation_bps``: the largest price difference between a stored paper fill and
  the fill of a backtest replay (:func:`training.backtest.run_backtest`, the flow's own
  steps) of the same stored bars with the same settings and registry; a fill found in
  one and not the other counts as an infinite deviation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from flows.operators.features import WARMUP
from flows.records import Bar
from flows.settings import Settings
from flows.stores.base import DecisionReader, HistoryReader
from flows.stores.schema import BAR_COLUMNS
from flows.timeframes import timeframe_ms

BREACH_RULES = frozenset({"max_drawdown:halt", "max_daily_loss:halt"})


@dataclass(frozen=True)
class PaperRecord:
    """What the decision store says about the paper trading of one ensemble version."""

    runs: tuple[str, ...]
    days: float
    breaches: tuple[str, ...]  # "<time> <rule>: <reason>"
    paper_fills: int
    replay_fills: int
    fill_deviation_bps: float
    notes: tuple[str, ...] = field(default_factory=tuple)


def _ms(ts: pd.Series) -> pd.Series:
    return (pd.to_datetime(ts, utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)


def qualifying_runs(decisions: DecisionReader, ensemble_version: str, mode_runs: Sequence[str] | None = None
                    ) -> list[str]:
    """Return the run ids whose ensemble predictions were made by ``ensemble_version`` (optionally among ``mode_runs``)."""
    preds = decisions.table("predictions")
    if preds.empty:
        return []
    ens = preds[(preds["model"] == "ensemble") & (preds["model_version"] == ensemble_version)]
    runs = sorted(set(ens["run_id"].astype(str)))
    return [r for r in runs if mode_runs is None or r in set(mode_runs)]


def covered_days(portfolio: pd.DataFrame, runs: Sequence[str]) -> float:
    """Return the days covered by the union of the runs' first-to-last ``portfolio_state`` intervals."""
    spans = sorted((g.min(), g.max()) for _, g in
                   pd.to_datetime(portfolio[portfolio["run_id"].isin(runs)]["ts"], utc=True)
                   .groupby(portfolio["run_id"]))
    total, end = pd.Timedelta(0), None
    for a, b in spans:
        if end is not None and a < end:
            a = end
        if b > a:
            total += b - a
        end = b if end is None else max(end, b)
    return total / pd.Timedelta(days=1)


def breaches_of(events: pd.DataFrame, runs: Sequence[str]) -> list[str]:
    """Return the portfolio halts of the runs, in time order."""
    if events.empty:
        return []
    e = events[events["run_id"].isin(runs) & (events["symbol"] == "*") & events["rule"].isin(BREACH_RULES)]
    return [f"{pd.Timestamp(t).isoformat()} {rule}: {reason}" for t, rule, reason in
            zip(e["ts"], e["rule"], e["reason"], strict=True)]


def replay_deviation(settings: Settings, history: HistoryReader, paper: pd.DataFrame, first_ms: int, last_ms: int
                     ) -> tuple[int, float]:
    """Return (replay fills in the span, largest price deviation in bps) against ``paper`` fills.

    The stored bars from ``WARMUP - 1`` bars before the first close's bar on (the klines
    a fresh run warmed up on, ``exchange.warmup_klines``) are replayed, so the first close's
    bar is the features' :data:`~flows.operators.features.WARMUP`-th, features and models
    see the same rows as in the flow, and only the run's closes (from ``first_ms``) are decided.
    """
    from training.backfill import bars_from_frame
    from training.backtest import run_backtest

    tf = settings.trading_timeframe()
    step = timeframe_ms(tf)
    start = pd.Timestamp(first_ms - WARMUP * step, unit="ms", tz="UTC")  # the first close's bar is the WARMUP-th
    end = pd.Timestamp(last_ms + step, unit="ms", tz="UTC")
    bars = history.bars(settings.symbols, tf, start, end, BAR_COLUMNS)
    bars = bars.assign(ts=_ms(bars["ts"]))
    streams: dict[str, Iterable[Bar]] = {s: bars_from_frame(s, tf, bars[bars["symbol"] == s].reset_index(drop=True)) for s in settings.symbols}
    result = run_backtest(settings, streams, tf, first_ms - step)  # closes before first_ms: warm-up only
    got = {(f.ts, f.symbol, f.side): f.price for f in result.fills if first_ms <= f.ts <= last_ms + step}
    want = {(int(t), s, side): float(p) for t, s, side, p in
            zip(_ms(paper["ts"]), paper["symbol"], paper["side"], paper["price"], strict=True)}
    if set(got) != set(want):
        return len(got), math.inf
    worst = max((abs(got[k] / want[k] - 1.0) * 1e4 for k in want), default=0.0)
    return len(got), float(worst)


def paper_record(settings: Settings, decisions: DecisionReader, history: HistoryReader, ensemble_version: str,
                 runs: Sequence[str] | None = None, replay: bool = True) -> PaperRecord:
    """Return the paper record of ``ensemble_version`` (``runs``: only these run ids)."""
    chosen = qualifying_runs(decisions, ensemble_version, runs)
    if not chosen:
        return PaperRecord((), 0.0, (), 0, 0, math.inf, (f"no paper run in the decision store predicted with "
                                                         f"ensemble {ensemble_version}",))
    portfolio = decisions.table("portfolio_state")
    days = covered_days(portfolio, chosen)
    breaches = breaches_of(decisions.table("risk_events"), chosen)
    fills = decisions.table("fills")
    fills = fills[fills["run_id"].isin(chosen)]
    notes: list[str] = []
    replayed, deviation = 0, math.inf
    if replay:
        worst = 0.0
        for run in chosen:
            rows = portfolio[portfolio["run_id"] == run]
            ms = _ms(rows["ts"])
            n, dev = replay_deviation(settings, history, fills[fills["run_id"] == run], int(ms.min()), int(ms.max()))
            replayed += n
            worst = max(worst, dev)
            if not math.isfinite(dev):
                notes.append(f"run {run}: the replay's fills differ from the paper fills in number or bar")
        deviation = worst
    else:
        notes.append("fills not replayed")
    return PaperRecord(tuple(chosen), days, tuple(breaches), len(fills), replayed, deviation, tuple(notes))
