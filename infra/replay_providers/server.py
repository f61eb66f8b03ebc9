"""The provider replay's routes: ``/fng/``, ``/charts/{name}`` and the error control ``/replay/errors``.

``POST /replay/errors`` with ``{"path": "/fng/", "reply": "fng_error", "status": 200, "times": 1}``
makes the next ``times`` requests of that path answer the recorded reply ``recorded/<reply>.*``
with the given HTTP status (the providers' error forms), then normal service resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from aiohttp import web

RECORDED = Path(__file__).with_name("recorded")
CHARTS = {"hash-rate": ("hashrate.csv", "hashrate", "Hash Rate", "Hash Rate TH/s"),
          "difficulty": ("difficulty.csv", "difficulty", "Difficulty", "Difficulty")}


def classification(value: int) -> str:
    """Return alternative.me's label of an index value."""
    for upper, label in ((24, "Extreme Fear"), (46, "Fear"), (54, "Neutral"), (75, "Greed")):
        if value <= upper:
            return label
    return "Extreme Greed"


def recorded(name: str) -> tuple[bytes, str]:
    """Return a recorded reply's body and content type."""
    for suffix, ctype in ((".json", "application/json"), (".txt", "text/plain")):
        path = RECORDED / f"{name}{suffix}"
        if path.is_file():
            return path.read_bytes(), ctype
    raise FileNotFoundError(f"no recorded reply {name!r} in {RECORDED}")


@dataclass
class _Error:
    reply: str
    status: int
    times: int


class ProviderReplay:
    """Serve the daily providers from a folder of daily CSV files."""

    def __init__(self, data: Path) -> None:
        self.data = Path(data)
        self.errors: dict[str, _Error] = {}
        self.requests: list[str] = []  # path?query of every request, for tests
        self.http_url = ""
        self._runner: web.AppRunner | None = None

    def _csv(self, name: str) -> pd.DataFrame:
        return pd.read_csv(self.data / name)  # re-read per request: a test may rewrite the file between calls

    @web.middleware
    async def _replay_errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(request.path_qs)
        err = self.errors.get(request.path)
        if err is not None and err.times > 0 and not request.path.startswith("/replay/"):
            err.times -= 1
            body, ctype = recorded(err.reply)
            return web.Response(body=body, status=err.status, content_type=ctype)
        return await handler(request)

    async def fng(self, request: web.Request) -> web.Response:
        """``GET /fng/?limit=N&format=json``: newest first; ``limit=0`` = all (alternative.me's default is 1)."""
        raw = request.query.get("limit", "1")
        if not raw.lstrip("-").isdigit():
            body, _ = recorded("fng_error")
            return web.Response(body=body, content_type="application/json")
        df = self._csv("fear_greed.csv").iloc[::-1]
        limit = int(raw)
        if limit > 0:
            df = df.head(limit)
        data = []
        for i, (date, value) in enumerate(zip(df["date"], df["fng"], strict=True)):
            ts = int(pd.Timestamp(date, tz="UTC").timestamp())
            item = {"value": str(int(value)), "value_classification": classification(int(value)),
                    "timestamp": str(ts)}
            if i == 0:
                item["time_until_update"] = "86400"
            data.append(item)
        return web.json_response({"name": "Fear and Greed Index", "data": data, "metadata": {"error": None}})

    async def chart(self, request: web.Request) -> web.Response:
        """``GET /charts/{name}?timespan=all&format=json``: ``{"status": "ok", ..., "values": [{x, y}]}``."""
        name = request.match_info["name"]
        if name not in CHARTS:
            body, _ = recorded("chart_not_found")
            return web.Response(body=body, status=404, content_type="application/json")
        file, col, title, unit = CHARTS[name]
        df = self._csv(file)
        values = [{"x": int(pd.Timestamp(d, tz="UTC").timestamp()), "y": float(y)}
                  for d, y in zip(df["date"], df[col], strict=True)]
        return web.json_response({"status": "ok", "name": title, "unit": unit, "period": "day",
                                  "description": f"{title} per day (replayed).", "values": values})

    async def set_errors(self, request: web.Request) -> web.Response:
        """``POST /replay/errors``: answer the next ``times`` requests of ``path`` with a recorded reply."""
        doc = await request.json()
        recorded(doc["reply"])  # fail now, not at the next request
        self.errors[doc["path"]] = _Error(doc["reply"], int(doc.get("status", 200)), int(doc.get("times", 1)))
        return web.json_response({"ok": True})

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 = a free port); return the base URL."""
        app = web.Application(middlewares=[self._replay_errors])
        app.add_routes([web.get("/fng/", self.fng), web.get("/fng", self.fng),
                        web.get("/charts/{name}", self.chart), web.post("/replay/errors", self.set_errors)])
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        h, p = self._runner.addresses[0][:2]
        self.http_url = f"http://{h}:{p}"
        return self.http_url

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()


@contextlib.contextmanager
def running_providers(data: Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[ProviderReplay]:
    """Run a provider replay on a background thread for the block; yield it (``http_url`` set)."""
    replay = ProviderReplay(data)
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(replay.start(host, port))
        started.set()
        loop.run_forever()

    t = threading.Thread(target=serve, name="provider-replay", daemon=True)
    t.start()
    if not started.wait(10):
        raise RuntimeError("provider replay did not start")
    try:
        yield replay
    finally:
        asyncio.run_coroutine_threadsafe(replay.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)


def set_error(base: str, path: str, reply: str, status: int = 200, times: int = 1) -> None:
    """Ask a running replay to answer the next ``times`` requests of ``path`` with a recorded reply."""
    from urllib.request import Request, urlopen

    body = json.dumps({"path": path, "reply": reply, "status": status, "times": times}).encode()
    with urlopen(Request(f"{base}/replay/errors", data=body, method="POST",  # noqa: S310 (local replay)
                         headers={"Content-Type": "application/json"}), timeout=10) as r:
        r.read()
