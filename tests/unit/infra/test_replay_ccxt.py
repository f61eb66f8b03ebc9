"""ccxt (sync REST) and ccxt.pro (websocket) against an in-process replay exchange."""

from __future__ import annotations

import gzip
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import ccxt
import numpy as np
import orjson
import pandas as pd
import pytest
import websockets

from flows.exchange.binance import binance_urls, make_binance
from infra.replay_exchange import ReplayExchange, running_replay
from tests.kit.replay import run

PRO_OPTIONS = {"tradesLimit": 1_000_000}  # keep every trade between two watch calls at speed max


def file_candles(path: Path, start: datetime | None = None, end: datetime | None = None) -> list[list[float]]:
    """Return a candle file as ccxt OHLCV rows (the expected answer)."""
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    ms = pd.DatetimeIndex(pd.to_datetime(df.iloc[:, 0], utc=True)).as_unit("ms").asi8
    keep = np.ones(len(df), dtype=bool)
    if start is not None:
        keep &= ms >= int(start.timestamp() * 1000)
    if end is not None:
        keep &= ms < int(end.timestamp() * 1000)
    cols = df[["open", "high", "low", "close", "volume"]].to_numpy()[keep]
    return [[int(t), *row] for t, row in zip(ms[keep].tolist(), cols.tolist(), strict=True)]


async def watch(exchange: Any, symbols: list[str], n: int) -> list[dict[str, Any]]:
    """Collect at least ``n`` trades with watch_trades / watch_trades_for_symbols."""
    out: list[dict[str, Any]] = []
    while len(out) < n:
        if len(symbols) == 1:
            out += await exchange.watch_trades(symbols[0])
        else:
            out += await exchange.watch_trades_for_symbols(symbols)
    return out


def test_client_helper_points_every_url_at_the_replay() -> None:
    urls = binance_urls("http://127.0.0.1:9000")
    flat = []

    def walk(tree: dict[str, Any]) -> None:
        for v in tree.values():
            walk(v) if isinstance(v, dict) else flat.append(v)

    walk(urls)
    assert urls["public"] == "http://127.0.0.1:9000/api/v3" and urls["ws"]["spot"] == "ws://127.0.0.1:9000/ws"
    assert all(u.startswith(("http://127.0.0.1:9000/", "ws://127.0.0.1:9000/")) for u in flat)
    real = make_binance()
    assert "binance.com" in real.urls["api"]["public"] and real.options["fetchMarkets"]["types"] == ["spot"]


def test_markets_time_ohlcv_and_trades_over_rest(tiny_csv: Path) -> None:
    with running_replay(tiny_csv, rest_horizon="all") as ex:
        b = make_binance(ex.http_url, enableRateLimit=False)
        markets = b.load_markets()
        m = markets["ABC/USDT"]
        assert list(markets) == ["ABC/USDT"] and m["spot"] and m["active"]
        assert m["precision"] == {"amount": 0.001, "price": 0.01, "base": 1e-08, "quote": 1e-08}
        assert m["limits"]["amount"]["min"] == 0.001 and m["limits"]["cost"]["min"] == 5.0
        assert b.fetch_time() == ex.engine.clock_ns() // 1_000_000
        expected = file_candles(tiny_csv)
        assert b.fetch_ohlcv("ABC/USDT", "1h", since=expected[0][0], limit=1000) == expected
        assert b.fetch_ohlcv("ABC/USDT", "1h", limit=5) == expected[-5:]
        tape = ex.data.tapes["ABCUSDT"]
        since = int(tape.ts[10])
        trades = b.fetch_trades("ABC/USDT", since=since, limit=20)  # aggTrades, ccxt adds endTime = since + 1h
        window = (tape.ts >= since) & (tape.ts <= since + 3_600_000)
        base = ex.rest.aggregates(tape).base  # aggregate ids: a sequence of their own (one trade each here)
        assert [int(t["id"]) - base for t in trades] == np.flatnonzero(window)[:20].tolist()
        assert [t["price"] for t in trades] == tape.price[window][:20].tolist()
        by_id = b.fetch_trades("ABC/USDT", limit=5, params={"fromId": base + 100})
        assert [int(t["info"]["f"]) for t in by_id] == tape.ids[100:105].tolist()
        recent = b.fetch_trades("ABC/USDT", limit=3, params={"fetchTradesMethod": "publicGetTrades"})
        assert [t["amount"] for t in recent] == tape.qty[-3:].tolist()


def test_binance_errors_become_ccxt_exceptions(tiny_csv: Path) -> None:
    with running_replay(tiny_csv) as ex:
        b = make_binance(ex.http_url, enableRateLimit=False)
        b.load_markets()
        with pytest.raises(ccxt.BadSymbol, match="-1121"):
            b.publicGetKlines({"symbol": "NOPEUSDT", "interval": "1h"})
        with pytest.raises(ccxt.BadRequest, match="-1102"):
            b.publicGetAggTrades({})
        with pytest.raises(ccxt.BadRequest, match="-1120"):
            b.fetch_ohlcv("ABC/USDT", "1M")
        with pytest.raises(ccxt.BadRequest, match="-1100"):
            b.publicGetTrades({"symbol": "ABCUSDT", "limit": "ten"})
        with pytest.raises(ccxt.BadRequest, match="-1128"):
            b.publicGetAggTrades({"symbol": "ABCUSDT", "fromId": 1, "startTime": 1})
        with pytest.raises(ccxt.BadSymbol):
            b.fetch_ohlcv("NOPE/USDT")  # refused by ccxt itself: not in the markets
        with pytest.raises(ccxt.ExchangeNotAvailable, match="404"):
            b.fapiPublicGetExchangeInfo()  # an API the replay does not emulate


def test_fetch_ohlcv_returns_the_real_file(data_dir: Path) -> None:
    path = data_dir / "binance-spot-1h" / "BTC_USDT-1h.parquet"
    start, end = datetime(2021, 5, 1, tzinfo=timezone.utc), datetime(2021, 6, 1, tzinfo=timezone.utc)
    with running_replay(path, rest_horizon="all", start=start, end=end) as ex:
        b = make_binance(ex.http_url, enableRateLimit=False)
        expected = file_candles(path, start, end)
        got = b.fetch_ohlcv("BTC/USDT", "1h", since=expected[0][0], limit=1000)
        assert len(got) == len(expected) == 744 and got == expected
        assert b.fetch_ohlcv("BTC/USDT", "1d", since=expected[0][0], limit=3)[0][0] == expected[0][0]


def test_watch_trades_replays_the_candles(tiny_csv: Path) -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with ReplayExchange(tiny_csv, speed=0) as ex:
            pro = make_binance(ex.http_url, pro=True, enableRateLimit=False, options=PRO_OPTIONS)
            try:
                return await watch(pro, ["ABC/USDT"], len(ex.data.tapes["ABCUSDT"]))
            finally:
                await pro.close()

    trades = run(scenario())
    ohlcv = ccxt.binance().build_ohlcvc(trades, "1h")
    expected = [c for c in file_candles(tiny_csv) if c[5] > 0]  # no trades in an empty candle
    assert [c[:5] for c in ohlcv] == [c[:5] for c in expected]
    np.testing.assert_allclose([c[5] for c in ohlcv], [c[5] for c in expected], rtol=1e-9)
    ids = [int(t["id"]) for t in trades]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_watch_trades_for_two_symbols_interleaves_in_event_time() -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with ReplayExchange(synthetic=("BTC/USDT", "ETH/USDT", "SOL/USDT"), synthetic_duration_s=1800, speed=0) as ex:
            pro = make_binance(ex.http_url, pro=True, enableRateLimit=False, options=PRO_OPTIONS)
            try:
                return await watch(pro, ["BTC/USDT", "ETH/USDT"], 3000)
            finally:
                await pro.close()

    trades = run(scenario())
    assert {t["symbol"] for t in trades} == {"BTC/USDT", "ETH/USDT"}
    for sym in ("BTC/USDT", "ETH/USDT"):
        ids = [int(t["id"]) for t in trades if t["symbol"] == sym]
        assert ids == list(range(ids[0], ids[0] + len(ids)))


def test_recorded_replay_yields_exactly_the_recorded_trades(data_dir: Path) -> None:
    folder = data_dir / "binance-ws-2024-08-08"
    expected = []
    with gzip.open(folder / "btcusdt_20240808.gz", "rb") as fh:
        for line in fh:
            if b"@trade" in line and len(expected) < 2000:
                d = orjson.loads(line.split(b" ", 1)[1])["data"]
                expected.append((str(d["t"]), float(d["p"]), float(d["q"]), d["T"], "sell" if d["m"] else "buy"))

    async def scenario() -> tuple[list[dict[str, Any]], list[bytes]]:
        async with ReplayExchange(folder, speed=0) as ex:
            pro = make_binance(ex.http_url, pro=True, enableRateLimit=False, options=PRO_OPTIONS)
            try:
                trades = await watch(pro, ["BTC/USDT"], 2000)
            finally:
                await pro.close()
        async with ReplayExchange(folder, speed=0) as ex, websockets.connect(ex.ws_url + "/stream?streams=btcusdt@trade", max_queue=None) as ws:
            raw = [await ws.recv(decode=False) for _ in range(50)]
        return trades, raw

    trades, raw = run(scenario())
    got = [(t["id"], t["price"], t["amount"], t["timestamp"], t["side"]) for t in trades[:2000]]
    assert got == expected
    with gzip.open(folder / "btcusdt_20240808.gz", "rb") as fh:
        lines = [line.split(b" ", 1)[1].rstrip(b"\n") for line in fh if b"@trade" in line][:50]
    assert raw == lines  # byte for byte as recorded


def test_rest_horizon_clock_serves_only_streamed_trades(tiny_csv: Path) -> None:
    async def scenario() -> None:
        async with ReplayExchange(tiny_csv, speed=0, batch_size=50) as ex, aiohttp.ClientSession() as http:
            async def agg(**params: Any) -> list[dict[str, Any]]:
                async with http.get(ex.http_url + "/api/v3/aggTrades", params={"symbol": "ABCUSDT", **params}) as r:
                    return await r.json()

            assert await agg() == []
            async with websockets.connect(ex.ws_url + "/ws/abcusdt@trade", max_queue=None) as ws:
                seen = [orjson.loads(await ws.recv())["t"] for _ in range(20)]
            horizon = ex.engine.horizon("ABCUSDT")
            assert 20 <= horizon < len(ex.data.tapes["ABCUSDT"])
            base = ex.rest.aggregates(ex.data.tapes["ABCUSDT"]).base
            fill = await agg(fromId=base + 20, limit=1000)  # the gap after a disconnect (one trade an aggregate here)
            assert [t["f"] for t in fill] == list(range(seen[-1] + 1, horizon + 1))
            async with http.get(ex.http_url + "/api/v3/klines", params={"symbol": "ABCUSDT", "interval": "1h"}) as r:
                klines = await r.json()
            assert sum(k[8] for k in klines) == horizon and klines[-1][0] <= ex.data.tapes["ABCUSDT"].ts[horizon - 1]

    run(scenario())


def test_stream_start_serves_the_history_before_it_over_rest_and_streams_from_it(tiny_csv: Path) -> None:
    """A replay seeked to ``stream_start``: the klines before it are the market's past (a fresh flow's warm-up)."""
    from datetime import timedelta

    from infra.replay_exchange.config import ReplayConfig

    first = datetime(2024, 1, 1, tzinfo=timezone.utc)
    stream_start = first + timedelta(hours=24)

    async def scenario() -> tuple[list[list[Any]], int, int, int]:
        async with ReplayExchange(tiny_csv, speed=0, stream_start=stream_start) as ex, \
                aiohttp.ClientSession() as http:
            async with http.get(ex.http_url + "/api/v3/klines", params={"symbol": "ABCUSDT", "interval": "1h"}) as r:
                klines = await r.json()
            async with websockets.connect(ex.ws_url + "/ws/abcusdt@trade", max_queue=None) as ws:
                first_trade = orjson.loads(await ws.recv())["T"]
            ex.engine.reset()  # back to the stream's start, not the data's
            return klines, first_trade, ex.engine.horizon("ABCUSDT"), ex.engine.cursor

    klines, first_trade, horizon, cursor = run(scenario())
    history = file_candles(tiny_csv, end=stream_start)
    assert len(history) == 24 and [int(k[0]) for k in klines] == [c[0] for c in history]
    full = [(k, c) for k, c in zip(klines, history, strict=True) if c[5] > 0]  # an empty candle has no trades
    np.testing.assert_allclose([[float(x) for x in k[1:6]] for k, _ in full], [c[1:6] for _, c in full], rtol=1e-9)
    assert first_trade >= int(stream_start.timestamp() * 1000)
    assert horizon == cursor > 0  # after a reset: everything before the stream's start is history again
    with pytest.raises(ValueError, match="stream_start"):
        ReplayConfig(start=stream_start, stream_start=first)
