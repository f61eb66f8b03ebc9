"""Console sinks: closed bars and status lines as log records, counted for the run's summary.

Each closed bar is a DEBUG record of the ``flows.bars`` logger and each bar close's status
line an INFO record of ``flows.status`` (:mod:`flows.monitoring.logging` routes them: the
console is quiet by default, the file keeps the status lines).  Both are counted in
:data:`flows.lifecycle.TALLY`, which the flow's summary prints at exit.
"""

from __future__ import annotations

import logging

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from flows.lifecycle import TALLY
from flows.records import Bar, Status, utc

bar_log = logging.getLogger("flows.bars")
status_log = logging.getLogger("flows.status")


def format_bar(bar: Bar) -> str:
    """Return a one-line, fixed-order description of a bar."""
    return (
        f"bar {bar.timeframe:>3} {bar.symbol:<10} {utc(bar.ts):%Y-%m-%d %H:%M:%S}Z "
        f"o={bar.open:.8g} h={bar.high:.8g} l={bar.low:.8g} c={bar.close:.8g} "
        f"v={bar.volume:.6g} n={bar.trade_count} vwap={bar.vwap:.8g}"
    )


class _BarPartition(StatelessSinkPartition[Bar]):
    def write_batch(self, items: list[Bar]) -> None:
        debug = bar_log.isEnabledFor(logging.DEBUG)
        for bar in items:
            TALLY.bar(bar.symbol)
            if debug:
                bar_log.debug(format_bar(bar), extra={"symbol": bar.symbol, "timeframe": bar.timeframe})


class BarPrinter(DynamicSink[Bar]):
    """Count closed bars; log each at DEBUG."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _BarPartition:
        """Return the logging partition."""
        return _BarPartition()


class _StatusPartition(StatelessSinkPartition[Status]):
    def write_batch(self, items: list[Status]) -> None:
        for s in items:
            TALLY.status(s.text)
            status_log.info("status %s", s.text, extra={"close_ts": s.ts})


class StatusPrinter(DynamicSink[Status]):
    """Count bar closes; log one status line per close at INFO."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _StatusPartition:
        """Return the logging partition."""
        return _StatusPartition()
