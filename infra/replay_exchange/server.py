"""The replay exchange server: REST, websocket streams and admin endpoints on one port.

Websocket endpoints follow Binance spot: ``/ws`` and ``/ws/<stream>`` send raw
stream messages, ``/stream?streams=a/b`` sends combined ones (``{"stream":
..., "data": ...}``); on any of them ``{"method": "SUBSCRIBE", "params": [...],
"id": 1}`` subscribes and is answered ``{"result": null, "id": 1}``
(``UNSUBSCRIBE`` and ``LIST_SUBSCRIPTIONS`` too).  ccxt.pro connects to
``/ws/<n>`` and subscribes by message.

Signed account and order endpoints (``/api/v3/order``, ``openOrders``,
``allOrders``, ``myTrades``, ``account``): :mod:`infra.replay_exchange.signed`,
matched against the replayed trades by :mod:`infra.replay_exchange.orders`.

Admin: ``GET /replay/status``, ``GET``/``DELETE /replay/faults``, ``POST
/replay/control`` with ``{"action": "pause" | "resume" | "reset" | "seek",
"time": <ms>}`` and ``POST /replay/rest_faults`` with ``{"count": N, "status":
503}`` (the next N public REST requests fail: :class:`~infra.replay_exchange.faults.RestFaults`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from infra.replay_exchange.config import ReplayConfig, load_data
from infra.replay_exchange.engine import ReplayEngine, Subscriber
from infra.replay_exchange.faults import FaultInjector, FaultLog, FaultRecord, RestFaults
from infra.replay_exchange.orders import Account
from infra.replay_exchange.rest import RestApi, json_response
from infra.replay_exchange.signed import SignedApi
from infra.replay_exchange.tape import MarketData
from infra.replay_exchange.wire import BinanceError, text_frames

Source = str | Path | Sequence[str | Path] | MarketData | None
_WRITE_HIGH_WATER = 1 << 20  # bytes buffered per connection before the pump waits


class ReplayExchange:
    """A Binance-compatible exchange replaying one data set.

    Args:
        source: Data files or directories, a prebuilt :class:`MarketData`, or
            None for ``config.data`` (synthetic if that is empty too).
        config: Base settings; keyword overrides are applied on top.
        **overrides: Any :class:`ReplayConfig` field, e.g. ``speed=0``,
            ``seed=3``, ``faults=FaultConfig(duplicate=0.01)``,
            ``rest_horizon="all"``.

    Example:
        >>> async with ReplayExchange("data/BTC_USDT-1h.parquet", speed=0) as ex:  # doctest: +SKIP
        ...     exchange = make_binance(ex.http_url, pro=True)  # flows.exchange.binance
    """

    def __init__(self, source: Source = None, *, config: ReplayConfig | None = None, **overrides: Any) -> None:
        if source is not None and not isinstance(source, MarketData):
            paths = (source,) if isinstance(source, str | Path) else tuple(source)
            overrides["data"] = tuple(Path(p) for p in paths)
        self.config = replace(config or ReplayConfig(), **overrides)
        self.data = source if isinstance(source, MarketData) else load_data(self.config)
        self.fault_log = FaultLog()
        self.rest_faults = RestFaults(self.fault_log)  # ex.rest_faults.fail_next(3, 503)
        self.engine = ReplayEngine(self.data, self.config.speed, self.config.batch_size, self.config.wait_for_streams,
                                   self.config.stream_start_ms)
        self.rest = RestApi(self.data, self.engine, self.config.rest_horizon)
        cfg = self.config
        self.account = Account(self.data, self.engine, dict(cfg.balances), cfg.maker_commission, cfg.taker_commission)
        self.signed = SignedApi(self.account, cfg.api_key, cfg.api_secret)
        self.http_url = ""
        self.ws_url = ""
        self._runner: web.AppRunner | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._sockets: set[web.WebSocketResponse] = set()

    @property
    def faults(self) -> list[FaultRecord]:
        """Return the faults injected so far."""
        return self.fault_log.records()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 = a free port); return the HTTP base URL."""
        app = web.Application(middlewares=[_binance_errors, self.rest.weight_header, self._rest_fault])
        app.add_routes(self.rest.routes())
        app.add_routes(self.signed.routes())
        if self.config.funding is not None:
            from infra.replay_exchange.funding import FundingApi, load_funding

            app.add_routes(FundingApi(load_funding(self.config.funding)).routes())
        app.add_routes([
            web.get("/ws", self._websocket),
            web.get("/ws/{streams:.*}", self._websocket),
            web.get("/stream", self._websocket),
            web.get("/replay/status", self._status),
            web.get("/replay/faults", self._faults),
            web.delete("/replay/faults", self._clear_faults),
            web.post("/replay/control", self._control),
            web.post("/replay/rest_faults", self._set_rest_faults),
        ])
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.http_url = f"http://{bound_host}:{bound_port}"
        self.ws_url = f"ws://{bound_host}:{bound_port}"
        self._loop_task = asyncio.create_task(self.engine.run(), name="replay-loop")
        return self.http_url

    async def stop(self) -> None:
        """Close every connection and stop serving."""
        for ws in list(self._sockets):
            with contextlib.suppress(asyncio.TimeoutError):  # a client that stopped reading
                await asyncio.wait_for(ws.close(code=WSCloseCode.GOING_AWAY), 1.0)
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> ReplayExchange:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- websocket -------------------------------------------------------------
    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        faults = self.config.faults
        sub = self.engine.attach(request.path.startswith("/stream"), want_meta=faults.enabled)
        injector = FaultInjector(faults, self.config.seed, sub.conn_id, self.fault_log) if faults.enabled else None
        initial = request.query.get("streams", "").split("/") + request.match_info.get("streams", "").split("/")
        initial = [s for s in initial if "@" in s]
        if initial:
            self.engine.subscribe(sub, initial)
        self._sockets.add(ws)
        pump = asyncio.create_task(self._pump(ws, sub, injector, request))
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self._on_request(ws, sub, msg.data)
        finally:
            pump.cancel()
            self.engine.detach(sub)
            self._sockets.discard(ws)
        return ws

    async def _pump(self, ws: web.WebSocketResponse, sub: Subscriber, injector: FaultInjector | None, request: web.Request) -> None:
        """Send the connection's batches; apply faults when configured."""
        with contextlib.suppress(ConnectionResetError):  # the client went away mid-batch
            await self._send_batches(ws, sub, injector, request)

    async def _send_batches(
        self, ws: web.WebSocketResponse, sub: Subscriber, injector: FaultInjector | None, request: web.Request
    ) -> None:
        text = WSMsgType.TEXT
        transport = request.transport
        while True:
            batch = await sub.queue.get()
            if batch is None or ws.closed or transport is None or transport.is_closing():
                return
            msgs, meta = batch
            if injector is None:
                # One write per batch: aiohttp has no vectored frame write, and a
                # send_frame per message costs more than formatting it.  Whole frames
                # only, so aiohttp's own pong/close frames interleave at frame
                # boundaries; ws.closed turns True before aiohttp writes a close frame.
                transport.write(text_frames(msgs))
                while transport.get_write_buffer_size() > _WRITE_HIGH_WATER and not transport.is_closing():
                    await asyncio.sleep(0.001)  # flow control: let the client catch up
                continue
            assert meta is not None
            msgs, meta = injector.transform(msgs, meta)
            for m, mt in zip(msgs, meta, strict=True):
                await ws.send_frame(m, text)
                stall, drop = injector.after_send(mt)
                if stall:
                    await asyncio.sleep(stall)
                if drop:
                    if request.transport is not None:
                        request.transport.abort()  # a reset, not a close handshake
                    return

    async def _on_request(self, ws: web.WebSocketResponse, sub: Subscriber, text: str | bytes) -> None:
        """Answer a Binance websocket request (SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS)."""
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            await ws.send_str('{"error":{"code":3,"msg":"Invalid JSON"},"id":null}')
            return
        rid = req.get("id") if isinstance(req, dict) else None
        method = req.get("method") if isinstance(req, dict) else None
        params = req.get("params", []) if isinstance(req, dict) else []
        if method in ("SUBSCRIBE", "UNSUBSCRIBE") and isinstance(params, list) and all(isinstance(p, str) for p in params):
            self.engine.subscribe(sub, params, on=method == "SUBSCRIBE")
            reply: dict[str, Any] = {"result": None, "id": rid}
        elif method == "LIST_SUBSCRIPTIONS":
            reply = {"result": list(sub.names), "id": rid}
        elif method in ("SET_PROPERTY", "GET_PROPERTY"):
            reply = {"result": sub.combined if method == "GET_PROPERTY" else None, "id": rid}
        else:
            reply = {"error": {"code": 2, "msg": f"Invalid request: unknown method {method!r} or bad params"}, "id": rid}
        await ws.send_str(orjson.dumps(reply).decode())

    # -- admin -----------------------------------------------------------------
    async def _status(self, request: web.Request) -> web.Response:
        eng, tl = self.engine, self.data.timeline
        return json_response({
            "mode": self.data.mode,
            "description": self.data.description,
            "speed": self.config.speed,
            "rest_horizon": self.config.rest_horizon,
            "started": eng.started,
            "paused": eng.paused,
            "cursor": eng.cursor,
            "events": len(tl),
            "clock_ms": eng.clock_ns() // 1_000_000,
            "streamed": {name: int(n) for name, n in zip(tl.streams, eng.streamed, strict=True)},
            "connections": len(eng.subscribers),
        })

    async def _faults(self, request: web.Request) -> web.Response:
        return json_response([r.to_json() for r in self.fault_log.records(request.query.get("kind"))])

    async def _clear_faults(self, request: web.Request) -> web.Response:
        self.fault_log.clear()
        return json_response({})

    @web.middleware
    async def _rest_fault(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method == "GET" and request.path.startswith("/api/v3/"):
            fault = self.rest_faults.take(request.path)
            if fault is not None:
                status, body = fault
                if isinstance(body, str):
                    return web.Response(text=body, status=status, content_type="text/html")
                response = json_response(body, status)
                if status == 429:
                    response.headers["Retry-After"] = "1"
                return response
        return await handler(request)

    async def _set_rest_faults(self, request: web.Request) -> web.Response:
        try:
            body = await request.json(loads=orjson.loads)
            self.rest_faults.fail_next(int(body.get("count", 0)), int(body.get("status", 503)))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
            raise BinanceError(-1100, f"rest_faults takes {{\"count\": N, \"status\": 503}}: {exc}") from None
        return json_response({"left": self.rest_faults.left})

    async def _control(self, request: web.Request) -> web.Response:
        try:
            body = await request.json(loads=orjson.loads)
        except orjson.JSONDecodeError:
            raise BinanceError(-1100, "body must be JSON") from None
        action = body.get("action")
        if action == "pause":
            self.engine.pause()
        elif action == "resume":
            self.engine.resume()
        elif action == "reset":
            self.engine.reset()
        elif action == "seek":
            t = body.get("time")
            if not isinstance(t, int):
                raise BinanceError(-1102, "seek needs an integer 'time' in ms")
            self.engine.seek(t)
        else:
            raise BinanceError(-1100, "action must be pause, resume, reset or seek")
        return await self._status(request)


@web.middleware
async def _binance_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except BinanceError as exc:
        return json_response(exc.payload(), exc.status)


@contextlib.contextmanager
def running_replay(source: Source = None, *, host: str = "127.0.0.1", port: int = 0, **settings: Any) -> Iterator[ReplayExchange]:
    """Run a :class:`ReplayExchange` on a background thread (for sync code and tests).

    Args:
        source: As for :class:`ReplayExchange`.
        host: Interface to bind.
        port: Port, 0 = a free one.
        **settings: :class:`ReplayConfig` fields.

    Yields:
        The running exchange; ``http_url`` and ``ws_url`` are set.
    """
    ex = ReplayExchange(source, **settings)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    errors: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(ex.start(host, port))
        except BaseException as exc:  # handed to the caller's thread below
            errors.append(exc)
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(ex.stop())
        loop.close()

    thread = threading.Thread(target=serve, name="replay-exchange", daemon=True)
    thread.start()
    ready.wait(60)
    if errors:
        raise errors[0]
    try:
        yield ex
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
