"""Benchmark: replay exchange websocket output to one client, trades/s including the client's parsing.

Usage::

    .venv/bin/python tests/bench/bench_replay_ws.py [--trades 200000] [--repeat 3]

Starts ``python -m infra.replay_exchange`` in its own process (a synthetic
BTC/USDT market, speed max) so server and client each have a core, then reads
the same ``--trades`` trades with each client in turn, resetting the replay in
between (``POST /replay/control {"action": "reset"}``):

* ``TCP frame count``: a raw socket counting frames: what the server can push;
* ``websockets, no parse``: websockets' ``recv`` only: the ceiling for a Python client;
* ``websockets + orjson``: a plain client parsing each Binance trade message
  (websockets' defaults, as ``flows/sources/binance_ws.py`` uses it; ``q4096``:
  with ``max_queue=4096`` instead of 16);
* ``aiohttp + orjson``: the same with aiohttp's websocket client;
* ``ccxt.pro watch_trades``: the unified client the project's flows could use.

Clients take turns for ``--repeat`` rounds; prints the median and best trades/s
and the ratios of the medians to the plain websockets client and to the TCP
ceiling measured in the same run.  Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import orjson
import websockets

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from flows.exchange.binance import make_binance  # noqa: E402

STREAM = "btcusdt@trade"
Client = Callable[[str, str, int], Awaitable[float]]  # -> seconds to receive n trades


def parse_trade(msg: bytes | str) -> tuple[int, float, float, int, bool]:
    """Parse a Binance trade message into (id, price, qty, time, buyer maker)."""
    d = orjson.loads(msg)
    return d["t"], float(d["p"]), float(d["q"]), d["T"], d["m"]


async def tcp_frames(http_url: str, ws_url: str, n: int) -> float:
    """Count frames on a raw socket after a hand-made upgrade: what the server can push."""
    started = time.perf_counter()
    host, port = ws_url.split("://", 1)[1].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 22)
    writer.write(
        f"GET /ws/{STREAM} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    count, buf = 0, b""
    while count < n:
        buf += await reader.read(1 << 20)
        i, size = 0, len(buf)
        while i + 2 <= size:  # server frames are unmasked; trade messages are < 126 bytes
            length = buf[i + 1] & 0x7F
            head = 2 if length < 126 else 4
            if length == 126:
                if i + 4 > size:
                    break
                length = int.from_bytes(buf[i + 2 : i + 4], "big")
            if i + head + length > size:
                break
            i += head + length
            count += 1
        buf = buf[i:]
    elapsed = time.perf_counter() - started
    writer.close()
    return elapsed


async def raw_recv(http_url: str, ws_url: str, n: int) -> float:
    started = time.perf_counter()
    async with websockets.connect(f"{ws_url}/ws/{STREAM}", compression=None, close_timeout=0.1) as ws:
        for _ in range(n):
            await ws.recv(decode=False)
        return time.perf_counter() - started


async def websockets_orjson(http_url: str, ws_url: str, n: int) -> float:
    started = time.perf_counter()
    async with websockets.connect(f"{ws_url}/ws/{STREAM}", compression=None, close_timeout=0.1) as ws:
        for _ in range(n):
            parse_trade(await ws.recv(decode=False))
        return time.perf_counter() - started


async def websockets_big_queue(http_url: str, ws_url: str, n: int) -> float:
    started = time.perf_counter()
    async with websockets.connect(f"{ws_url}/ws/{STREAM}", compression=None, close_timeout=0.1, max_queue=4096) as ws:
        for _ in range(n):
            parse_trade(await ws.recv(decode=False))
        return time.perf_counter() - started


async def aiohttp_orjson(http_url: str, ws_url: str, n: int) -> float:
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{ws_url}/ws/{STREAM}", max_msg_size=0) as ws:
        for _ in range(n):
            parse_trade((await ws.receive()).data)
        return time.perf_counter() - started


async def ccxt_pro(http_url: str, ws_url: str, n: int) -> float:
    exchange = make_binance(http_url, pro=True, enableRateLimit=False, options={"tradesLimit": n + 1000})
    await exchange.load_markets()  # REST, outside the timing
    got = 0
    started = time.perf_counter()
    try:
        while got < n:
            got += len(await exchange.watch_trades("BTC/USDT"))
        return time.perf_counter() - started
    finally:
        await exchange.close()


CLIENTS: dict[str, Client] = {
    "TCP frame count": tcp_frames,
    "websockets, no parse": raw_recv,
    "websockets + orjson": websockets_orjson,
    "websockets q4096 + orjson": websockets_big_queue,
    "aiohttp + orjson": aiohttp_orjson,
    "ccxt.pro watch_trades": ccxt_pro,
}


async def measure(http_url: str, ws_url: str, client: Client, n: int) -> float:
    """Reset the replay, read ``n`` trades with ``client``; return trades/s."""
    async with aiohttp.ClientSession() as http, http.post(f"{http_url}/replay/control", json={"action": "reset"}) as r:
        r.raise_for_status()
    return n / await client(http_url, ws_url, n)


def start_server(trades: int) -> tuple[subprocess.Popen[str], str, str]:
    """Start the replay exchange in its own process; return it and its URLs."""
    hours = max(1, trades // 14_000 + 1)  # ~4-5 trades/s in the synthetic market
    cmd = [sys.executable, "-m", "infra.replay_exchange", "--synthetic", "BTC/USDT", "--duration", f"{hours}h",
           "--speed", "max", "--port", "0", "--seed", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    http_url = proc.stdout.readline().strip().split("=", 1)[1]
    ws_url = proc.stdout.readline().strip().split("=", 1)[1]
    return proc, http_url, ws_url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trades", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    proc, http_url, ws_url = start_server(args.trades)
    try:
        runs: dict[str, list[float]] = {name: [] for name in CLIENTS}
        for _ in range(args.repeat):  # round robin, so load from elsewhere hits every client alike
            for name, client in CLIENTS.items():
                runs[name].append(asyncio.run(measure(http_url, ws_url, client, args.trades)))
    finally:
        proc.terminate()
        proc.wait(10)
    median = {name: statistics.median(r) for name, r in runs.items()}
    base, ceiling = median["websockets + orjson"], median["TCP frame count"]
    print(f"replay exchange websocket -> one client, {args.trades:,} trades, speed max, {args.repeat} rounds")
    print(f"{'client':<27}{'median/s':>12}{'best/s':>12}{'vs websockets+orjson':>22}{'vs TCP ceiling':>16}")
    for name, rate in median.items():
        print(f"{name:<27}{rate:>12,.0f}{max(runs[name]):>12,.0f}{rate / base:>22.2f}{rate / ceiling:>16.2f}")
    print(f"ccxt.pro / plain clients (median): {median['ccxt.pro watch_trades'] / base:.2f} of websockets+orjson, "
          f"{median['ccxt.pro watch_trades'] / median['aiohttp + orjson']:.2f} of aiohttp+orjson")


if __name__ == "__main__":
    main()
