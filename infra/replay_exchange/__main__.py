"""Command line: ``python -m infra.replay_exchange --data PATH --speed 60 --port 9000``.

Prints the REST and websocket base URLs (and the settings a flow needs to
point ccxt at them) once serving, then runs until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path

from infra.replay_exchange.config import ReplayConfig
from infra.replay_exchange.faults import CORRUPT_KINDS, FaultConfig
from infra.replay_exchange.server import ReplayExchange
from infra.replay_exchange.synthetic import DEFAULT_SYMBOLS


def _speed(text: str) -> float:
    if text.lower() in ("max", "0"):
        return 0.0
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("speed is > 0, or 0/max for as fast as the client reads")
    return value


def _utc(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date/time such as 2024-03-01 or 2024-03-01T12:00Z") from None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _duration(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 90s, 30m, 6h, 2d") from None


def _symbols(text: str) -> tuple[str, ...]:
    if text.isdigit():
        n = int(text)
        if not 1 <= n <= len(DEFAULT_SYMBOLS):
            raise argparse.ArgumentTypeError(f"--synthetic N takes 1..{len(DEFAULT_SYMBOLS)}")
        return DEFAULT_SYMBOLS[:n]
    return tuple(s.strip().upper() for s in text.split(",") if s.strip())


def _balance(text: str) -> tuple[str, float]:
    asset, _, amount = text.partition("=")
    try:
        return asset.strip().upper(), float(amount)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not ASSET=AMOUNT such as USDT=10000") from None


def parse_args(argv: list[str] | None = None) -> tuple[ReplayConfig, str, int]:
    """Parse the command line into a config, host and port."""
    p = argparse.ArgumentParser(
        prog="python -m infra.replay_exchange",
        description="A local exchange speaking Binance spot REST and websocket on one port, replaying market data.",
    )
    src = p.add_argument_group("data (recorded .gz, candle .parquet/.csv/.feather, or synthetic)")
    src.add_argument("--data", type=Path, nargs="+", default=[], help="files or directories")
    src.add_argument("--synthetic", type=_symbols, default=(), metavar="SYMBOLS|N",
                     help="synthetic market: BTC/USDT,ETH/USDT or a count of default symbols (default 3)")
    src.add_argument("--universe", type=int, default=0, metavar="N",
                     help="synthetic universe of N USDT markets (plus BTC and USDC pairs, spread volumes)")
    src.add_argument("--clusters", type=int, default=None, metavar="K",
                     help="correlated clusters of the synthetic market (default: N/10 for a universe, else none)")
    src.add_argument("--seed", type=int, default=7)
    src.add_argument("--start", type=_utc, help="first data time (UTC ISO)")
    src.add_argument("--end", type=_utc, help="data before this time (UTC ISO)")
    src.add_argument("--stream-start", type=_utc,
                     help="stream from here (UTC ISO); the data before it is history REST serves (a flow's warm-up)")
    src.add_argument("--trades-per-candle", type=float, default=8.0, help="mean trades per candle (>= 4)")
    src.add_argument("--streams", default="trade", help="recorded streams: trade[,bookTicker][,depth]")
    src.add_argument("--duration", type=_duration, default=6 * 3600, help="synthetic length, e.g. 6h (default)")
    src.add_argument("--rate", type=float, default=4.0, help="synthetic trades/s per symbol (calm regime)")
    src.add_argument("--funding", type=Path, help="USD-M funding CSV served at /fapi/v1/fundingRate")
    run = p.add_argument_group("replay")
    run.add_argument("--speed", type=_speed, default=60.0, help="times real time; 0 or max = as fast as clients read")
    run.add_argument("--rest-horizon", choices=("all", "clock"), default="clock",
                     help="clock: REST only returns data already streamed (default); all: everything")
    run.add_argument("--wait-for-streams", type=int, default=1, metavar="N",
                     help="start the clock once N distinct streams are subscribed (default 1)")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=9000, help="0 = any free port")
    f = p.add_argument_group("fault injection (websocket)")
    f.add_argument("--drop-every", type=int, default=0, metavar="N", help="abort the connection every N messages")
    f.add_argument("--stall-every", type=int, default=0, metavar="N", help="stall every N messages")
    f.add_argument("--stall-seconds", type=float, default=0.0, metavar="S")
    f.add_argument("--duplicate", type=float, default=0.0, metavar="FRACTION")
    f.add_argument("--reorder", type=float, default=0.0, metavar="FRACTION", help="swap with the next message")
    f.add_argument("--corrupt", type=float, default=0.0, metavar="FRACTION")
    f.add_argument("--corrupt-kinds", default=",".join(CORRUPT_KINDS))
    acc = p.add_argument_group("account (signed order endpoints)")
    acc.add_argument("--api-key", default="replay-key", help="key the signed endpoints accept")
    acc.add_argument("--api-secret", default="replay-secret", help="secret of the HMAC-SHA256 signatures")
    acc.add_argument("--balance", type=_balance, action="append", default=[], metavar="ASSET=AMOUNT",
                     help="starting free balance, repeatable (default USDT=100000)")
    acc.add_argument("--maker-commission", type=float, default=0.001)
    acc.add_argument("--taker-commission", type=float, default=0.001)
    a = p.parse_args(argv)
    try:
        faults = FaultConfig(
            drop_every=a.drop_every, stall_every=a.stall_every, stall_seconds=a.stall_seconds,
            duplicate=a.duplicate, reorder=a.reorder, corrupt=a.corrupt,
            corrupt_kinds=tuple(k.strip() for k in a.corrupt_kinds.split(",") if k.strip()),
        )
        config = ReplayConfig(
            data=tuple(a.data), synthetic=a.synthetic, seed=a.seed, speed=a.speed, rest_horizon=a.rest_horizon,
            start=a.start, end=a.end, stream_start=a.stream_start, trades_per_candle=a.trades_per_candle,
            streams=tuple(s.strip() for s in a.streams.split(",") if s.strip()),
            synthetic_duration_s=a.duration, synthetic_rate=a.rate, universe=a.universe, clusters=a.clusters, wait_for_streams=a.wait_for_streams,
            faults=faults, api_key=a.api_key, api_secret=a.api_secret,
            balances=tuple(a.balance) or (("USDT", 100_000.0),),
            maker_commission=a.maker_commission, taker_commission=a.taker_commission, funding=a.funding,
        )
    except ValueError as exc:
        p.error(str(exc))
    return config, a.host, a.port


async def serve(config: ReplayConfig, host: str, port: int) -> None:
    """Load the data, serve until a termination signal."""
    exchange = ReplayExchange(config=config)
    await exchange.start(host, port)
    print(f"replay exchange: {exchange.data.description}", file=sys.stderr)
    print(f"REST      {exchange.http_url}/api/v3", file=sys.stderr)
    print(f"websocket {exchange.ws_url}/ws  (combined: {exchange.ws_url}/stream)", file=sys.stderr)
    print(f"CRYPTOSTREAM_EXCHANGE__HTTP_URL={exchange.http_url}")
    print(f"CRYPTOSTREAM_EXCHANGE__WS_URL={exchange.ws_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await exchange.stop()


def main(argv: list[str] | None = None) -> None:
    """Run the replay exchange from the command line."""
    config, host, port = parse_args(argv)
    try:
        asyncio.run(serve(config, host, port))
    except (FileNotFoundError, ValueError) as exc:
        sys.exit(f"replay exchange: {exc}")


if __name__ == "__main__":
    main()
