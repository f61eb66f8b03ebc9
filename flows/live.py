"""The live dataflow: ``python -m bytewax.run flows.live``.

Exchange websocket (one partition per symbol) -> parse and validate -> event-time
bars for every configured timeframe -> sinks.  Settings come from the
environment and ``$CRYPTOSTREAM_CONFIG`` (see ``flows/settings.py``); invalid
settings stop the program at import with a message naming the field.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from flows.operators.bars import BarBuilder
from flows.operators.parse import exchange_symbol, parse_messages
from flows.records import Bar, DeadLetter, Trade
from flows.settings import Settings, SettingsError, load_settings
from flows.sinks.console import BarPrinter
from flows.sinks.dead_letters import DeadLetterFile
from flows.sources.binance_ws import BinanceTradeSource, RawBatch

log = logging.getLogger(__name__)


def _bars_step(settings: Settings):
    timeframes = settings.bars.timeframes
    lateness = settings.bars.allowed_lateness_ms
    fill = settings.bars.fill_empty

    def step(state: dict[str, Any] | None, item: tuple[list[Trade], int]) -> tuple[dict[str, Any], Iterable[Any]]:
        trades, _ = item
        builders: dict[str, BarBuilder] = state["builders"] if state else {}
        out: list[Any] = []
        for tf in timeframes:
            builder = builders.get(tf)
            if builder is None:
                builder = builders[tf] = BarBuilder(trades[0].symbol, tf, lateness, fill)
            bars, late = builder.update(trades)
            out.extend(bars)
            if tf == timeframes[0]:
                out.extend(late)
        return {"builders": builders}, out

    return step


def _late(trade: Trade) -> DeadLetter:
    return DeadLetter("bars", trade.symbol, trade.ts, "late trade: its bar had closed", repr(tuple(trade)))


def build_flow(settings: Settings) -> Dataflow:
    """Build the dataflow for these settings."""
    symbols = {exchange_symbol(s): s for s in settings.symbols}
    flow = Dataflow("live")
    raw = op.input("exchange_ws", flow, BinanceTradeSource(settings.symbols, settings.exchange.ws_url,
                                                           settings.duration_s))

    def parse(batch: RawBatch) -> tuple[str, tuple[list[Trade], list[DeadLetter], int]]:
        symbol, received_ms, msgs = batch
        trades, dead = parse_messages(msgs, symbols, received_ms)
        return symbol, (trades, dead, received_ms)

    parsed = op.map("parse", raw, parse)
    trades = op.filter_map_value("trades", parsed, lambda v: (v[0], v[2]) if v[0] else None)
    out = op.stateful_flat_map("bars", trades, _bars_step(settings))
    bars = op.filter_map("closed_bars", out, lambda kv: kv[1] if isinstance(kv[1], Bar) else None)
    late = op.filter_map("late_trades", out, lambda kv: _late(kv[1]) if isinstance(kv[1], Trade) else None)
    dead = op.flat_map("dead_letters", parsed, lambda kv: kv[1][1])
    op.output("dead_letter_sink", op.merge("refused", dead, late), DeadLetterFile(settings.data_dir))
    op.output("bar_printer", bars, BarPrinter())
    return flow


def _flow_from_environment() -> Dataflow:
    try:
        settings = load_settings()
        settings.require_servers()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return build_flow(settings)


flow = _flow_from_environment()
