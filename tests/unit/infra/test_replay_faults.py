"""Every injected fault is logged by the server and observable by the client."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import aiohttp
import ccxt
import orjson
import pytest
import websockets

from flows.exchange.binance import make_binance
from infra.replay_exchange import FaultConfig, ReplayExchange
from tests.kit.replay import run

SYMBOLS = ("BTC/USDT", "ETH/USDT")
PRO_OPTIONS = {"tradesLimit": 1_000_000}


def replay(**faults: Any) -> ReplayExchange:
    """Return a synthetic replay at speed max with the given faults."""
    return ReplayExchange(synthetic=SYMBOLS, synthetic_duration_s=3600, speed=0, seed=3, faults=FaultConfig(**faults))


async def raw_messages(ex: ReplayExchange, n: int) -> list[tuple[float, bytes]]:
    """Read ``n`` messages of btcusdt@trade with a plain websocket client: (arrival time, payload)."""
    out = []
    async with websockets.connect(ex.ws_url + "/ws/btcusdt@trade", max_queue=None) as ws:
        while len(out) < n:
            msg = await ws.recv(decode=False)
            out.append((time.perf_counter(), msg))
    return out


async def ccxt_trades(ex: ReplayExchange, n: int) -> list[dict[str, Any]]:
    """Collect ``n`` BTC/USDT trades with ccxt.pro watch_trades."""
    pro = make_binance(ex.http_url, pro=True, enableRateLimit=False, options=PRO_OPTIONS)
    out: list[dict[str, Any]] = []
    try:
        while len(out) < n:
            out += await pro.watch_trades("BTC/USDT")
    finally:
        await pro.close()
    return out[:n]


def test_drop_makes_ccxt_raise_network_error_and_reconnect() -> None:
    async def scenario() -> tuple[int, list[dict[str, Any]], ReplayExchange]:
        ex = replay(drop_every=400)
        await ex.start()
        pro = make_binance(ex.http_url, pro=True, enableRateLimit=False, options=PRO_OPTIONS)
        errors, trades = 0, []
        try:
            while errors < 3:
                try:
                    trades += await pro.watch_trades("BTC/USDT")
                except ccxt.NetworkError:
                    errors += 1
        finally:
            await pro.close()
            await ex.stop()
        return errors, trades, ex

    errors, trades, ex = run(scenario())
    drops = [f for f in ex.faults if f.kind == "drop"]
    assert errors == 3 and len(drops) >= 3
    assert [d.connection for d in drops[:3]] == [1, 2, 3] and all(d.seq == 400 for d in drops)
    ids = [int(t["id"]) for t in trades]
    assert ids == sorted(ids) and len(trades) >= 3 * 300  # resumed on each new connection


def test_drop_is_an_abrupt_close_for_a_plain_client() -> None:
    async def scenario() -> int:
        async with replay(drop_every=50) as ex, websockets.connect(ex.ws_url + "/ws/btcusdt@trade", max_queue=None) as ws:
            got = 0
            with pytest.raises(websockets.ConnectionClosedError) as info:
                while True:
                    await ws.recv()
                    got += 1
            assert info.value.rcvd is None  # no close frame: a reset
            return got

    assert run(scenario()) == 50


def test_stall_shows_as_a_gap_in_arrival() -> None:
    ex = replay(stall_every=300, stall_seconds=0.4)

    async def scenario() -> list[tuple[float, bytes]]:
        async with ex:
            return await raw_messages(ex, 700)

    msgs = run(scenario())
    gaps = [b[0] - a[0] for a, b in zip(msgs, msgs[1:], strict=False)]
    big = [i + 1 for i, g in enumerate(gaps) if g > 0.3]  # seq of the message before each gap
    assert big == [300, 600]
    assert [f.seq for f in ex.faults if f.kind == "stall" and f.seq < len(msgs)] == [300, 600]


def test_duplicates_repeat_trade_ids_in_ccxt() -> None:
    ex = replay(duplicate=0.02)

    async def scenario() -> list[dict[str, Any]]:
        async with ex:
            return await ccxt_trades(ex, 3000)

    trades = run(scenario())
    ids = [int(t["id"]) for t in trades]
    repeated = [i for i, (a, b) in enumerate(zip(ids, ids[1:], strict=False), 2) if a == b]
    logged = [f.seq for f in ex.faults if f.kind == "duplicate" and f.seq <= len(ids)]
    assert repeated == logged and len(logged) > 20
    assert all(f.trade_id == ids[f.seq - 1] for f in ex.faults if f.kind == "duplicate" and f.seq <= len(ids))


def test_reorder_makes_trade_ids_go_backwards() -> None:
    ex = replay(reorder=0.02)

    async def scenario() -> list[dict[str, Any]]:
        async with ex:
            return await ccxt_trades(ex, 3000)

    trades = run(scenario())
    ids = [int(t["id"]) for t in trades]
    backwards = [i for i, (a, b) in enumerate(zip(ids, ids[1:], strict=False), 1) if b < a]
    logged = [f.seq for f in ex.faults if f.kind == "reorder" and f.seq + 1 <= len(ids)]
    assert backwards == logged and len(logged) > 20
    assert len(set(ids)) == len(ids)


def _defect(msg: bytes) -> str | None:
    """Return what is wrong with a trade message, as a client's validation would see it."""
    try:
        d = orjson.loads(msg)
    except orjson.JSONDecodeError:
        return "malformed_json"
    if not all(k in d for k in ("p", "q", "t", "T")):
        return "missing_field"
    for key, name in (("p", "price"), ("q", "qty")):
        x = float(d[key])
        if math.isnan(x):
            return f"nan_{name}"
        if x < 0:
            return f"negative_{name}"
        if x == 0:
            return f"zero_{name}"
    return None


def test_corrupt_messages_reach_a_plain_client() -> None:
    ex = replay(corrupt=0.05)

    async def scenario() -> tuple[list[tuple[float, bytes]], list[dict[str, Any]]]:
        async with ex:
            msgs = await raw_messages(ex, 2000)
            async with aiohttp.ClientSession() as http, http.get(ex.http_url + "/replay/faults") as r:
                return msgs, await r.json()

    msgs, over_http = run(scenario())
    seen = {i: d for i, (_, m) in enumerate(msgs, 1) if (d := _defect(m)) is not None}
    logged = {f.seq: f.detail for f in ex.faults if f.kind == "corrupt" and f.seq <= len(msgs)}
    assert seen == logged and len(set(logged.values())) >= 5
    assert [r["seq"] for r in over_http if r["kind"] == "corrupt"] == [f.seq for f in ex.faults if f.kind == "corrupt"]


def test_faults_are_deterministic_for_a_seed() -> None:
    def faults_of_one_run() -> list[tuple[str, int, int | None]]:
        ex = replay(duplicate=0.01, reorder=0.01, corrupt=0.01)

        async def scenario() -> None:
            async with ex:
                await raw_messages(ex, 1500)
                await asyncio.sleep(0)

        run(scenario())
        return [(f.kind, f.seq, f.trade_id) for f in ex.faults if f.seq <= 1500]

    first, second = faults_of_one_run(), faults_of_one_run()
    assert first == second and len(first) > 30
