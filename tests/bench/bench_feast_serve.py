"""Benchmark: ``feast serve`` (several workers) on the Redis online store under concurrent readers.

Usage::

    set -a; eval "$(infra/up)"; set +a
    nice .venv/bin/python tests/bench/bench_feast_serve.py [--workers 4] [--clients 1,10,100] [--symbols 50]

A scratch copy of the Feast repository on the ``timescale`` profile with the Redis online
store (Redis db ``--redis-db``, flushed before and after; a scratch TimescaleDB database for
the offline store's configuration), filled through the flow's own path (parse -> bars ->
features -> cross-asset -> ``FeastOnlineSink``) for ``--symbols`` symbols of the synthetic
universe.  Then ``feast serve -w W`` on a loopback port, and C concurrent clients (asyncio +
aiohttp, one connection each) each POST ``/get-online-features`` for the feature service
``lightgbm_1m_v1`` and one symbol, back to back, for ``--seconds`` (bounded by ``--max-requests``
per client).  p50/p99 of the request latency per concurrency, and requests/s.  Baseline in the
same run: the Feast SDK's ``get_online_features(...).to_dict()`` in this process, one reader.

Not a test.  This machine has 2 cores shared by up to 8 jobs: the server's workers, the
clients and the other jobs share them, so latency at 100 clients is mostly queueing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "bench")]

from bench_flow import OnlinePath, log, minute_batches, scratch_database  # noqa: E402
from bench_scale import report  # noqa: E402

from infra.replay_exchange.synthetic import universe  # noqa: E402
from tests.kit.processes import answers_ok  # noqa: E402
from tests.kit.servers import free_port  # noqa: E402

SERVICE = "lightgbm_1m_v1"


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q / 100 * len(s)))] * 1e3


async def _client(session: Any, url: str, symbols: list[str], k: int, until: float, most: int,
                  out: list[float]) -> None:
    for n in range(most):
        if time.perf_counter() > until:
            return
        body = {"feature_service": SERVICE, "entities": {"symbol": [symbols[(k + n) % len(symbols)]]}}
        t0 = time.perf_counter()
        async with session.post(url, json=body) as reply:
            data = await reply.read()
            if reply.status != 200:
                raise SystemExit(f"feast serve answered {reply.status}: {data[:300]!r}")
        out.append(time.perf_counter() - t0)


async def load(url: str, symbols: list[str], clients: int, seconds: float, most: int) -> dict[str, float]:
    """Run ``clients`` concurrent readers; return p50/p99 (ms) and requests/s."""
    import aiohttp

    lat: list[float] = []
    conn = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=conn) as session:
        await _client(session, url, symbols, 0, time.perf_counter() + 5, 20, [])  # warm-up
        t0 = time.perf_counter()
        await asyncio.gather(*(_client(session, url, symbols, k, t0 + seconds, most, lat) for k in range(clients)))
        wall = time.perf_counter() - t0
    return {"clients": clients, "requests": len(lat), "p50_ms": _pct(lat, 50), "p99_ms": _pct(lat, 99),
            "per_s": len(lat) / wall, "load": os.getloadavg()[0]}


@contextlib.contextmanager
def feast_serve(settings: Any, workers: int) -> Any:
    """Run ``feast serve`` for the settings' repository; yield its base URL."""
    from flows.feast_store import feast_environment, profile_yaml

    port = free_port()
    cmd = [str(Path(sys.executable).parent / "feast"), "-c", str(settings.feast_repo), "-f", str(profile_yaml(settings)),
           "serve", "-h", "127.0.0.1", "-p", str(port), "-w", str(workers), "--no-access-log",
           "--max-requests", "1000000"]
    proc = subprocess.Popen(cmd, env={**os.environ, **feast_environment(settings)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        if not answers_ok(f"{url}/health", proc, 180, 0.5):
            err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            raise SystemExit(f"feast serve did not start (exit {proc.poll()}):\n{err}")
        yield url
    finally:
        os.killpg(proc.pid, 15)  # its own session: the gunicorn master and its workers
        proc.wait(30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--clients", default="1,10,100")
    p.add_argument("--symbols", type=int, default=50)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--max-requests", type=int, default=2000, help="per client and concurrency")
    p.add_argument("--redis-db", type=int, default=14)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    import redis

    from flows import feast_store
    from flows.settings import load_settings
    from flows.sinks.feast_online import FeastOnlineSink
    from tests.kit.repo import copy_feature_repo

    base_dsn, redis_base = os.environ.get("TIMESCALE_DSN"), os.environ.get("REDIS_URL")
    if not base_dsn or not redis_base:
        raise SystemExit("needs TIMESCALE_DSN and REDIS_URL: set -a; eval \"$(infra/up)\"; set +a")
    redis_url = f"{redis_base.rsplit('/', 1)[0]}/{args.redis_db}" if redis_base.count("/") > 2 else \
        f"{redis_base}/{args.redis_db}"
    symbols = [s for s in universe(max(args.symbols, 12), 7)[0] if s.endswith("/USDT")][:args.symbols]
    out: dict[str, Any] = {"cores": os.cpu_count(), "workers": args.workers, "symbols": len(symbols)}
    with tempfile.TemporaryDirectory(prefix="bench_feast_serve_") as d, \
            scratch_database(base_dsn, "serve") as dsn:
        redis.Redis.from_url(redis_url).flushdb()
        try:
            repo = copy_feature_repo(Path(d))
            settings = load_settings(env={"CRYPTOSTREAM_PROFILE": "timescale", "CRYPTOSTREAM_FEAST_ONLINE": "redis",
                                          "TIMESCALE_DSN": dsn, "REDIS_URL": redis_url,
                                          "CRYPTOSTREAM_FEAST_REPO": str(repo),
                                          "CRYPTOSTREAM_DATA_DIR": str(Path(d) / "var"),
                                          "CRYPTOSTREAM_SYMBOLS": ",".join(symbols)})
            log("feast apply")
            feast_store.apply(settings)
            log(f"filling the online store: {len(symbols)} symbols, 75 minutes through the flow's path")
            sink = FeastOnlineSink(settings).build("feast_online", 0, 1)
            path = OnlinePath(settings, sink)
            for _, b in minute_batches(tuple(symbols), 75):
                path.feed(b)
            sink.close()
            store = feast_store.open_store(settings)
            sdk: list[float] = []
            for k in range(1000):
                t0 = time.perf_counter()
                got = store.get_online_features(features=store.get_feature_service(SERVICE),
                                                entity_rows=[{"symbol": symbols[k % len(symbols)]}]).to_dict()
                sdk.append(time.perf_counter() - t0)
            assert got["ret_1"][0] is not None, "online store not filled"
            out["sdk_in_process"] = {"p50_ms": _pct(sdk, 50), "p99_ms": _pct(sdk, 99)}
            log(f"baseline: SDK in process, 1 reader: p50 {out['sdk_in_process']['p50_ms']:.2f} ms, "
                f"p99 {out['sdk_in_process']['p99_ms']:.2f} ms")
            with feast_serve(settings, args.workers) as url:
                out["serve"] = []
                for c in (int(x) for x in args.clients.split(",")):
                    r = asyncio.run(load(f"{url}/get-online-features", symbols, c, args.seconds, args.max_requests))
                    log(f"feast serve -w {args.workers}, {c} clients: p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} "
                        f"ms, {r['per_s']:,.0f} requests/s ({r['requests']} requests, load {r['load']:.1f})")
                    out["serve"].append(r)
        finally:
            redis.Redis.from_url(redis_url).flushdb()
    return report(out, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
