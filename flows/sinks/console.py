"""Console sink: one line per closed bar, for the default run and for operators watching it."""

from __future__ import annotations

import sys
from typing import TextIO

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from flows.records import Bar, utc


def format_bar(bar: Bar) -> str:
    """Return a one-line, fixed-order description of a bar."""
    return (
        f"bar {bar.timeframe:>3} {bar.symbol:<10} {utc(bar.ts):%Y-%m-%d %H:%M:%S}Z "
        f"o={bar.open:.8g} h={bar.high:.8g} l={bar.low:.8g} c={bar.close:.8g} "
        f"v={bar.volume:.6g} n={bar.trade_count} vwap={bar.vwap:.8g}"
    )


class _PrintPartition(StatelessSinkPartition[Bar]):
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write_batch(self, items: list[Bar]) -> None:
        for bar in items:
            print(format_bar(bar), file=self.stream)
        self.stream.flush()


class BarPrinter(DynamicSink[Bar]):
    """Print closed bars to standard output."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _PrintPartition:
        return _PrintPartition(self.stream or sys.stdout)
