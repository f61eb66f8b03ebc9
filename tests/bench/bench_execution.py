"""Execution costs: the paper broker per bar, and signed order calls on the replay exchange.

    .venv/bin/python tests/bench/bench_execution.py [--bars 50000] [--calls 200]

1. Paper broker ``on_bar`` per bar with no open order, and with one market order
   submitted and filled every bar, against the baseline of building the bars alone.
2. LiveBroker-style signed calls through ccxt on an in-process replay exchange
   (``create_order`` + ``fetch_order`` + ``cancel_order``), against the public
   ``fetch_time`` round trip measured on the same server.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from flows.execution.config import ExecutionConfig  # noqa: E402
from flows.execution.paper import PaperBroker  # noqa: E402
from flows.records import (
    Bar,  # noqa: E402
    OrderIntent,  # noqa: E402
)

T0, M = 1_722_470_400_000, 60_000


def bars(n: int) -> list[Bar]:
    """Return ``n`` one-minute bars of a gentle saw-tooth market."""
    return [Bar("BTC/USDT", "1m", T0 + k * M, 100.0 + k % 7, 101.0 + k % 7, 99.0 + k % 7, 100.5 + k % 7, 5.0, 500.0,
                10, 100.0, 2.5) for k in range(n)]


def per_bar_us(fn, n: int) -> float:
    """Return microseconds per bar of ``fn(n)``, best of three."""
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - t)
    return best / n * 1e6


def paper_section(n: int) -> None:
    def baseline(k: int) -> None:
        bars(k)

    def idle(k: int) -> None:
        broker = PaperBroker(ExecutionConfig())
        for b in bars(k):
            broker.on_bar(b)

    def trading(k: int) -> None:
        broker = PaperBroker(ExecutionConfig())
        for b in bars(k):
            broker.on_bar(b)
            broker.submit(OrderIntent("cs", "BTC/USDT", "buy" if b.ts // M % 2 else "sell", 0.1, "market", None,
                                      None, b.ts + M, "entry", ""))

    base = per_bar_us(baseline, n)
    for name, fn in (("paper on_bar, no open order", idle), ("paper submit + fill every bar", trading)):
        us = per_bar_us(fn, n)
        print(f"{name:38s} {us:8.2f} us/bar   baseline (bars only) {base:6.2f} us/bar   ratio {us / base:6.1f}x")


def replay_section(calls: int) -> None:
    from flows.exchange.binance import make_binance
    from infra.replay_exchange import running_replay
    from tests.kit.replay import make_candles

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ABC_USDT-1h.csv"
        make_candles(48, 3_600_000).to_csv(path, index=False)
        with running_replay(path, speed=0, rest_horizon="all", api_key="k", api_secret="s") as ex:
            c = make_binance(ex.http_url, apiKey="k", secret="s")
            c.load_markets()
            t = time.perf_counter()
            for _ in range(calls):
                c.fetch_time()
            base = (time.perf_counter() - t) / calls * 1e3
            t = time.perf_counter()
            for i in range(calls):
                o = c.create_order("ABC/USDT", "limit", "buy", 0.1, 60.0, {"newClientOrderId": f"b{i}"})
                c.fetch_order(o["id"], "ABC/USDT")
                c.cancel_order(o["id"], "ABC/USDT")
            signed = (time.perf_counter() - t) / (3 * calls) * 1e3
    print(f"{'replay signed order call (ccxt)':38s} {signed:8.2f} ms/call  baseline fetch_time {base:6.2f} ms/call"
          f"   ratio {signed / base:6.1f}x")


def main() -> None:
    """Run both sections and print one line per figure."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bars", type=int, default=50_000)
    p.add_argument("--calls", type=int, default=200)
    a = p.parse_args()
    paper_section(a.bars)
    replay_section(a.calls)


if __name__ == "__main__":
    main()
