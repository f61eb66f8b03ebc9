"""Benchmark: live-flow throughput with Prometheus metrics served against without, in the same run.

Usage::

    .venv/bin/python tests/bench/bench_metrics.py                # 1,000,000 trades, batches of 1000 and 20
    .venv/bin/python tests/bench/bench_metrics.py --quick        # 200,000 trades, one round per batch size
    .venv/bin/python tests/bench/bench_metrics.py --trades 2000000 --rounds 5 --batches 1000

Not a test: nothing is asserted.  What it measures: the real ``flows.live.build_flow``
dataflow (parse -> dedupe -> bars -> features -> cross-asset) under
``bytewax.testing.run_main`` from a ``TestingSource`` of ``--trades`` Binance trade
messages of ``--symbols`` symbols (``bench_flow.make_market``: items of ``--batch``
messages per symbol, built before timing), its sinks swapped for counting sinks as in
``bench_flow.py`` section 1, so the figure is the flow's own cost (sinks' I/O would
hide the overhead).  *off*: ``monitoring.metrics_port`` 0 (no hooks); *on*: metrics
served on a free loopback port, every hook live (and /metrics scraped once per run, at
its end, to check the counts).  Each of ``--rounds`` rounds runs both, off first in even
rounds and on first in odd ones, so drift of a noisy machine hits both alike; the figure is each side's best run, and
the median of the per-round ratios is printed too, by wall clock and by the process's
CPU time (all its threads, the /metrics server's included), which a loaded machine
disturbs far less.  Batches of 1000 messages are what
the flow gets when it is busy (the source hands over everything that arrived); small
batches (``--batches 1000,20``) put the per-batch cost of the hooks under a magnifier.
Target (issue 18): at most 5 % slower with metrics.

``--hooks N``: the hooks alone, without Bytewax: the flow's parse step and per-symbol step
called in a plain loop over the same items, bare against wrapped by the metrics hooks
(``measured_parse``, ``symbol_step(settings, metrics)``), N alternating rounds, CPU time,
median of the per-round ratios.  Bytewax's own per-item cost, the same with metrics on or
off, is left out of both sides, so this overhead is an upper bound on the flow's, and
short rounds make it far steadier on a loaded machine than whole flow runs.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.bench_flow import SYMBOL_POOL, flow_settings, log, make_market, run_live_flow  # noqa: E402
from tests.kit.prometheus import free_port  # noqa: E402


def run_once(items: list, settings, port: int) -> tuple[float, float]:
    """Return (wall, CPU) seconds of one flow run; with ``port``, metrics are served there and checked after it."""
    from bytewax.testing import TestingSource

    from flows.monitoring import metrics as monitoring
    from flows.monitoring.config import MonitoringConfig

    monitoring.stop()
    if port:
        settings = settings.model_copy(update={"monitoring": MonitoringConfig(metrics_port=port)})
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    run_live_flow(settings, TestingSource(items))
    took = time.perf_counter() - t0, time.process_time() - c0
    if port:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        trades = sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("cryptostream_trades_total"))
        assert trades == sum(len(m) for _, _, m in items), trades  # every hook ran
    monitoring.stop()
    return took


def hooks_once(items: list, settings, metrics) -> float:
    """Return the CPU seconds of the parse and per-symbol steps over ``items`` (wrapped by ``metrics`` if given)."""
    from flows.live import symbol_step
    from flows.monitoring.hooks import measured_parse
    from flows.operators.parse import exchange_symbol, parse_messages

    symbols = {exchange_symbol(s): s for s in settings.symbols}

    def parse(batch):
        symbol, received_ms, msgs = batch
        return symbol, parse_messages(msgs, symbols, received_ms, trade_time=settings.trade_time)

    if metrics is not None:
        parse = measured_parse(parse, metrics)
    step = symbol_step(settings, metrics)
    pipes: dict = {}
    gc.collect()
    c0 = time.process_time()
    for batch in items:
        symbol, (trades, _) = parse(batch)
        if trades:
            pipes[symbol], _ = step(pipes.get(symbol), (symbol, trades))
    return time.process_time() - c0


def hooks_table(items: list, settings, rounds: int, batch: int) -> None:
    """Print the hooks' overhead: ``rounds`` alternating bare/wrapped loops, the median ratio of CPU times."""
    from flows.monitoring.metrics import FlowMetrics

    n = sum(len(m) for _, _, m in items)
    ratios, off, on = [], [], []
    for r in range(rounds):
        pair = [hooks_once(items, settings, None), hooks_once(items, settings, FlowMetrics())] if r % 2 == 0 else \
            [hooks_once(items, settings, FlowMetrics()), hooks_once(items, settings, None)][::-1]
        off.append(pair[0])
        on.append(pair[1])
        ratios.append(pair[1] / pair[0])
    print(f"hooks alone, batches of {batch}, {n:,} trades, {rounds} rounds (load average {os.getloadavg()[0]:.1f}): "
          f"bare {n / statistics.median(off):,.0f} trades per CPU s, with hooks {n / statistics.median(on):,.0f}; "
          f"slower: median of rounds {statistics.median(ratios) - 1:.1%}, quartiles "
          f"{statistics.quantiles(ratios, n=4)[0] - 1:.1%} .. {statistics.quantiles(ratios, n=4)[2] - 1:.1%}")


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, run the rounds and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trades", type=int, default=1_000_000)
    ap.add_argument("--symbols", type=int, default=5)
    ap.add_argument("--batches", default="1000,20", help="messages per item, comma-separated: one table row each")
    ap.add_argument("--rounds", type=int, default=3, help="off/on pairs per batch size")
    ap.add_argument("--quick", action="store_true", help="200,000 trades, one round")
    ap.add_argument("--hooks", type=int, default=0, metavar="ROUNDS", help="only the hooks, without Bytewax")
    args = ap.parse_args(argv)
    if args.hooks:
        symbols = SYMBOL_POOL[: args.symbols]
        with tempfile.TemporaryDirectory(prefix="bench_metrics_") as tmp:
            settings = flow_settings(symbols, Path(tmp))
            for batch in (int(b) for b in args.batches.split(",")):
                hooks_table(make_market(args.trades, symbols, batch), settings, args.hooks, batch)
        return 0
    if args.quick:
        args.trades, args.rounds = min(args.trades, 200_000), 1
    import flows.live  # noqa: F401  (imported before timing)

    symbols = SYMBOL_POOL[: args.symbols]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_metrics_") as tmp:
        settings = flow_settings(symbols, Path(tmp))
        run_once(make_market(20_000, symbols, 100), settings, 0)  # warm-up: Feast views, imports
        for batch in (int(b) for b in args.batches.split(",")):
            items = make_market(args.trades, symbols, batch)
            n = sum(len(m) for _, _, m in items)
            off: list[tuple[float, float]] = []
            on: list[tuple[float, float]] = []
            for r in range(args.rounds):
                if r % 2:  # odd rounds run "on" first: neither side always follows the other
                    on.append(run_once(items, settings, free_port()))
                    off.append(run_once(items, settings, 0))
                else:
                    off.append(run_once(items, settings, 0))
                    on.append(run_once(items, settings, free_port()))
                log(f"batch {batch}, round {r + 1}: off {n / off[-1][0]:,.0f} trades/s ({n / off[-1][1]:,.0f} per CPU "
                    f"s), on {n / on[-1][0]:,.0f} trades/s ({n / on[-1][1]:,.0f} per CPU s)")
            for i, clock in ((0, "wall"), (1, "CPU")):
                a, b = [x[i] for x in off], [x[i] for x in on]
                ratios = [y / x for x, y in zip(a, b, strict=True)]
                rows.append((batch, clock, n / min(a), n / min(b), min(b) / min(a) - 1, statistics.median(ratios) - 1))
    print(f"\nbench_metrics: {' '.join(sys.argv[1:]) or '(defaults)'}; {args.trades:,} trades, {len(symbols)} "
          f"symbols, {args.rounds} rounds; python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    head = ("messages/item", "clock", "metrics off trades/s", "metrics on trades/s", "slower (best vs best)",
            "slower (median of rounds)", "target")
    print("  ".join(head))
    for batch, clock, a, b, best, med in rows:
        print("  ".join([f"{batch:>13}", f"{clock:<5}", f"{a:>20,.0f}", f"{b:>19,.0f}", f"{best:>21.1%}",
                         f"{med:>25.1%}", "<= 5%"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
