"""Replay clock, websocket protocol, admin control and the command line."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import websockets

from flows.exchange.binance import make_binance
from infra.replay_exchange import ReplayExchange
from infra.replay_exchange.__main__ import parse_args
from tests.kit.replay import run


def synthetic(**settings: Any) -> ReplayExchange:
    """Return a small synthetic replay (BTC, ETH; 1 hour)."""
    return ReplayExchange(synthetic=("BTC/USDT", "ETH/USDT"), synthetic_duration_s=3600, **settings)


def test_speed_paces_the_data_clock() -> None:
    speed = 300.0

    async def scenario() -> tuple[list[tuple[float, int]], int, int]:
        async with synthetic(speed=speed) as ex, aiohttp.ClientSession() as http:
            got: list[tuple[float, int]] = []
            async with websockets.connect(ex.ws_url + "/ws/btcusdt@trade", max_queue=None) as ws:
                started = time.perf_counter()
                while time.perf_counter() - started < 1.0:
                    got.append((time.perf_counter(), orjson.loads(await ws.recv())["T"]))
            async with http.get(ex.http_url + "/api/v3/time") as r:
                server_ms = (await r.json())["serverTime"]
            return got, server_ms, int(ex.data.timeline.time_ns[0] // 1_000_000)

    got, server_ms, first_ms = run(scenario())
    wall = got[-1][0] - got[0][0]
    data_s = (got[-1][1] - got[0][1]) / 1000
    assert 0.7 * speed < data_s / wall < 1.3 * speed
    assert server_ms - first_ms >= 0.9 * speed  # the clock kept running for the whole second


def test_websocket_protocol_subscribe_list_unsubscribe_and_errors() -> None:
    async def scenario() -> None:
        async with synthetic(speed=0) as ex, websockets.connect(ex.ws_url + "/ws", max_queue=None) as ws:

            async def ask(req: dict[str, Any]) -> Any:
                await ws.send(orjson.dumps(req).decode())
                while True:
                    reply = orjson.loads(await ws.recv())
                    if "id" in reply:
                        return reply

            assert await ask({"method": "LIST_SUBSCRIPTIONS", "id": 1}) == {"result": [], "id": 1}
            assert await ask({"method": "SUBSCRIBE", "params": ["btcusdt@trade", "ethusdt@trade"], "id": 2}) == {"result": None, "id": 2}
            assert (await ask({"method": "LIST_SUBSCRIPTIONS", "id": 3}))["result"] == ["btcusdt@trade", "ethusdt@trade"]
            assert await ask({"method": "UNSUBSCRIBE", "params": ["ethusdt@trade"], "id": 4}) == {"result": None, "id": 4}
            assert (await ask({"method": "NOPE", "id": 5}))["error"]["code"] == 2
            assert [sub.names for sub in ex.engine.subscribers] == [["btcusdt@trade"]]
            symbols = set()
            for _ in range(3000):  # everything queued before the unsubscribe drains first
                symbols.add(orjson.loads(await ws.recv()).get("s"))
            assert "BTCUSDT" in symbols
        async with synthetic(speed=0) as ex, websockets.connect(
            ex.ws_url + "/stream?streams=btcusdt@trade/ethusdt@trade", max_queue=None
        ) as ws:
            msgs = [orjson.loads(await ws.recv()) for _ in range(200)]
            assert {m["stream"] for m in msgs} == {"btcusdt@trade", "ethusdt@trade"}
            assert all(m["data"]["e"] == "trade" and m["data"]["s"] == m["stream"][:7].upper() for m in msgs)
            times = [m["data"]["T"] for m in msgs]
            assert times == sorted(times)  # symbols interleave in event time

    run(scenario())


def test_control_seek_moves_the_stream_and_reports_status() -> None:
    async def scenario() -> None:
        async with synthetic(speed=0, batch_size=64) as ex, aiohttp.ClientSession() as http:
            tape = ex.data.tapes["BTCUSDT"]
            target_ms = int(tape.ts[5000])
            async with websockets.connect(ex.ws_url + "/ws/btcusdt@trade", max_queue=None) as ws:
                first = [orjson.loads(await ws.recv())["t"] for _ in range(10)]
                async with http.post(ex.http_url + "/replay/control", json={"action": "seek", "time": target_ms}) as r:
                    status = await r.json()
                assert status["started"] and status["cursor"] == int(np.searchsorted(ex.data.timeline.time_ns, target_ms * 1_000_000))
                prev = first[-1]
                for _ in range(20_000):
                    t = orjson.loads(await ws.recv())["t"]
                    if t != prev + 1:
                        break
                    prev = t
                assert t == int(tape.ids[np.searchsorted(tape.ts, target_ms)])
            async with http.post(ex.http_url + "/replay/control", json={"action": "pause"}) as r:
                assert (await r.json())["paused"]
            async with http.post(ex.http_url + "/replay/control", json={"action": "fly"}) as r:
                assert r.status == 400 and (await r.json())["code"] == -1100

    run(scenario())


def test_clock_waits_for_all_streams_when_asked() -> None:
    async def scenario() -> None:
        async with synthetic(speed=0, wait_for_streams=2) as ex:
            async with websockets.connect(ex.ws_url + "/ws/btcusdt@trade", max_queue=None) as btc:
                await asyncio.sleep(0.2)
                assert not ex.engine.started and ex.engine.cursor == 0
                async with websockets.connect(ex.ws_url + "/ws/ethusdt@trade", max_queue=None) as eth:
                    first_btc = orjson.loads(await btc.recv())["t"]
                    first_eth = orjson.loads(await eth.recv())["t"]
            assert first_btc == first_eth == 1  # neither connection missed the start

    run(scenario())


def test_async_rest_client_works_too(tiny_csv: Path) -> None:
    async def scenario() -> list[list[float]]:
        async with ReplayExchange(tiny_csv, rest_horizon="all") as ex:
            b = make_binance(ex.http_url, asyncio_mode=True, enableRateLimit=False)
            try:
                await b.load_markets()
                return await b.fetch_ohlcv("ABC/USDT", "1h", limit=3)
            finally:
                await b.close()

    assert len(run(scenario())) == 3


def test_command_line_builds_the_config(tmp_path: Path) -> None:
    config, host, port = parse_args([
        "--data", str(tmp_path), "--speed", "max", "--port", "9100", "--start", "2024-01-01",
        "--drop-every", "50", "--corrupt", "0.01", "--corrupt-kinds", "nan_price,zero_qty", "--rest-horizon", "all",
    ])
    assert config.speed == 0 and config.data == (tmp_path,) and port == 9100 and host == "127.0.0.1"
    assert config.start == datetime(2024, 1, 1, tzinfo=timezone.utc) and config.rest_horizon == "all"
    assert config.faults.drop_every == 50 and config.faults.corrupt_kinds == ("nan_price", "zero_qty")
    syn, _, _ = parse_args(["--synthetic", "4", "--seed", "9", "--duration", "2h", "--speed", "60", "--wait-for-streams", "4"])
    assert syn.synthetic == ("BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT") and syn.synthetic_duration_s == 7200
    assert syn.wait_for_streams == 4 and syn.speed == 60
