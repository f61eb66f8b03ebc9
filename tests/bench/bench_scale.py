"""Benchmark: the flow at a universe of 10, 50 and 200 symbols on 1, 2 and 4 Bytewax worker processes.

Usage::

    nice .venv/bin/python tests/bench/bench_scale.py                      # every section
    nice .venv/bin/python tests/bench/bench_scale.py --sections 1 --trades 200000 --workers 1,2

1. Throughput.  ``flows.live.build_flow`` (parse -> dedupe -> bars -> features ->
   cross-asset, counting sinks) fed raw Binance trade messages of N symbols of the
   synthetic universe (``infra.replay_exchange.synthetic.universe``) from a source
   partitioned by symbol (one partition per worker), run as a Bytewax cluster of W
   processes (``bytewax.testing.cluster_main`` with its own addresses and process ids,
   one worker each, on loopback).  Trades/s = trades / (last process done - last
   process ready); the baseline is W = 1 of the same N in the same run (ratio).  Each
   process reports its peak RSS (``ru_maxrss``); per symbol = the slope of the
   one-worker peak over N.
3. Across hosts (``--sections 3``, root): the flow as one process, then as a cluster of W
   processes each in its own network namespace (``infra/netns/hosts up W``: veths on a
   bridge, 10.210.0.11 ...), Bytewax's own addresses and process ids; closed trades and
   a digest of every closed bar must equal the one process's.  ``--profile timescale``: the
   flow's own history and Feast online sinks write to a scratch database of the ``infra/up``
   TimescaleDB and to Redis db 15, which the hosts reach on the bridge address
   (``hosts up W --services``); the stored rows must equal the one process's.
4. Bar close to order intent (``--sections 4``): bench_decisions' close -> intent path
   (features, close barrier with scoring, decision step) at 200 symbols of the universe
   against 10, p50/p99 per stage; the models of each universe in ``<--registry>-u<N>``,
   bootstrapped once for those N symbols if empty (the GNN has all N as nodes: dense at 10,
   clusters of ``scoring.gnn_cluster_size`` at 200).
2. Per close at 200 symbols (the steps that see every symbol): the cross-asset step
   (all symbols of a bar time), the graph attention network dense over all N against
   the same network over correlated clusters of at most ``--cluster`` assets
   (block-diagonal: one session run per cluster, batched), and the decision step's
   portfolio key; p50/p99 per close; baseline: the same at 10 symbols.

Not a test.  This machine has 2 cores shared by up to 8 jobs: W > 2 cannot scale here,
and every figure moves with the load (the load average is printed beside them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[2]
BRIDGE = "10.210.0.1"  # infra/netns/hosts: the host side of the namespace hosts' bridge
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "bench")]

from bench_flow import flow_settings, log, make_market  # noqa: E402
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition  # noqa: E402
from bytewax.outputs import DynamicSink, StatelessSinkPartition  # noqa: E402

from infra.replay_exchange.synthetic import universe  # noqa: E402


def universe_symbols(n: int) -> tuple[str, ...]:
    """Return the first ``n`` USDT markets of the synthetic universe (BTC/USDT ... S200/USDT)."""
    return tuple(s for s in universe(max(n, 12), seed=7)[0] if s.endswith("/USDT"))[:n]


class _Part(StatefulSourcePartition[Any, None]):
    def __init__(self, items: list[Any]) -> None:
        self._items: Iterator[Any] = iter(items)

    def next_batch(self) -> list[Any]:
        item = next(self._items, None)
        if item is None:
            raise StopIteration
        return [item]

    def snapshot(self) -> None:
        return None


class SymbolPartitionedSource(FixedPartitionedSource[Any, None]):
    """Raw batches split into ``parts`` partitions by symbol (Bytewax spreads partitions over workers)."""

    def __init__(self, items: list[Any], parts: int) -> None:
        self.items, self.parts = items, parts
        symbols = sorted({it[0] for it in items})
        self.owner = {s: i % parts for i, s in enumerate(symbols)}

    def list_parts(self) -> list[str]:
        return [f"p{i}" for i in range(self.parts)]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Part:
        k = int(for_part[1:])
        return _Part([it for it in self.items if self.owner[it[0]] == k])


def report(out: dict[str, Any], path: Path | None) -> int:
    """Print a benchmark's figures as JSON (and write them to ``path``); return the exit code 0."""
    text = json.dumps(out, indent=1)
    print(text)
    if path:
        path.write_text(text)
    return 0


def free_ports(n: int) -> list[int]:
    """Return ``n`` free loopback ports."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def child(args: argparse.Namespace) -> None:
    """One process of the cluster: build the input, run the flow, print timings as JSON."""
    from bench_flow import counting_sinks
    from bytewax.testing import cluster_main

    from flows.live import build_flow

    symbols = universe_symbols(args.symbols)
    per = args.trades // len(symbols)
    items = make_market(args.trades, symbols, args.batch, mean_gap_ms=600_000 / per)  # ~10 1m bars per symbol
    settings = flow_settings(symbols, Path(args.data_dir), **profile_env(args.dsn, args.redis_url))
    addresses = args.addresses.split(";")
    import flows.live as live

    digest, closed = [0], [0]
    first_tf = settings.bars.timeframes[0]

    class DigestSink(DynamicSink[Any]):
        """The closed bars' digest: a sum of their hashes, whatever worker or order wrote them."""

        def build(self, step_id: str, worker_index: int, worker_count: int) -> StatelessSinkPartition[Any]:
            class Part(StatelessSinkPartition[Any]):
                def write_batch(self, items: list[Any]) -> None:
                    for bar in items:
                        h = hashlib.blake2b(repr(tuple(bar)).encode(), digest_size=8).digest()
                        digest[0] = (digest[0] + int.from_bytes(h, "big")) % 2**64
                        closed[0] += bar.trade_count if bar.timeframe == first_tf else 0
            return Part()

    saved = live.BarPrinter
    live.BarPrinter = DigestSink  # type: ignore[assignment,misc]
    try:
        if args.dsn:  # the real history and Feast online sinks: TimescaleDB and Redis
            flow = build_flow(settings, SymbolPartitionedSource(items, len(addresses)))
        else:
            with counting_sinks():
                live.BarPrinter = DigestSink  # type: ignore[assignment,misc]  # counting_sinks replaced it
                flow = build_flow(settings, SymbolPartitionedSource(items, len(addresses)))
    finally:
        live.BarPrinter = saved  # type: ignore[misc]
    ready = time.time()
    cluster_main(flow, addresses, args.proc_id, worker_count_per_proc=1)
    done = time.time()
    print(json.dumps({"ready": ready, "done": done, "trades": closed[0], "digest": digest[0],
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


def profile_env(dsn: str | None, redis_url: str | None) -> dict[str, str]:
    """Return the settings' variables of the timescale profile (Feast online store on Redis), or none."""
    if not dsn:
        return {}
    return {"CRYPTOSTREAM_PROFILE": "timescale", "TIMESCALE_DSN": dsn, "REDIS_URL": str(redis_url),
            "CRYPTOSTREAM_FEAST_ONLINE": "redis"}


def applied_template(tmp: Path, servers: Servers | None = None) -> Path:
    """Return a data directory with the Feast repository applied once (copied for every process)."""
    from flows import feast_store
    from tests.kit.repo import copy_feature_repo

    template = tmp / ("template-timescale" if servers else "template")
    if not template.exists():
        copy_feature_repo(template)
        env = profile_env(servers.dsn, servers.redis_url) if servers else {}
        feast_store.ensure_applied(flow_settings(universe_symbols(10), template, **env))
    return template


class Servers(NamedTuple):
    """TimescaleDB (a scratch database) and a Redis db of one run of the timescale profile."""

    dsn: str
    redis_url: str

    def through(self, host: str) -> Servers:
        """Return the same servers addressed through ``host`` (the bridge address, for the namespace hosts)."""
        from psycopg.conninfo import make_conninfo

        return Servers(make_conninfo(self.dsn, host=host), self.redis_url.replace("127.0.0.1", host))


def run_cluster(n_symbols: int, workers: int, trades: int, batch: int, tmp: Path,
                hosts: bool = False, servers: Servers | None = None) -> dict[str, Any]:
    """Run the flow on ``workers`` processes; return trades/s, closed trades and RSS per process.

    With ``hosts``, process i runs in network namespace ``cs21-h<i+1>`` at 10.210.0.<11+i>
    (``infra/netns/hosts up N`` made them): Bytewax's own addresses across the veths.  With
    ``servers``, the flow keeps its history and Feast online sinks (the timescale profile), the
    namespace hosts reaching them through the bridge (``hosts up N --services``).
    """
    import shutil

    ips = [f"10.210.0.{11 + i}" if hosts else "127.0.0.1" for i in range(workers)]
    addrs = ";".join(f"{ip}:{p}" for ip, p in zip(ips, free_ports(workers), strict=True))
    procs = []
    template = applied_template(tmp, servers)
    reach = servers.through(BRIDGE) if servers and hosts else servers
    for i in range(workers):
        data = tmp / f"n{n_symbols}-w{workers}-p{i}"
        shutil.copytree(template, data)
        cmd = [sys.executable, __file__, "--child", "--symbols", str(n_symbols), "--trades", str(trades),
               "--batch", str(batch), "--addresses", addrs, "--proc-id", str(i), "--data-dir", str(data)]
        if reach:
            cmd += ["--dsn", reach.dsn, "--redis-url", reach.redis_url]
        if hosts:
            cmd = ["ip", "netns", "exec", f"cs21-h{i + 1}", *cmd]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=900)
        if p.returncode != 0:
            raise SystemExit(f"cluster process failed ({p.returncode}):\n{err[-3000:]}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    wall = max(r["done"] for r in reports) - max(r["ready"] for r in reports)
    closed = sum(r["trades"] for r in reports)
    digest = sum(r["digest"] for r in reports) % 2**64
    return {"symbols": n_symbols, "workers": workers, "hosts": hosts, "wall_s": wall, "trades": trades,
            "closed": closed, "digest": f"{digest:016x}", "trades_per_s": trades / wall, "rss_mb": [round(r["rss_mb"]) for r in reports]}


def section_throughput(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """Section 1: trades/s and RSS for each universe size and worker count."""
    results = []
    for n in args.symbol_counts:
        base = None
        for w in args.workers:
            r = run_cluster(n, w, args.trades, args.batch, tmp)
            base = base or r["trades_per_s"]
            r["ratio_vs_1"] = r["trades_per_s"] / base
            r["load"] = os.getloadavg()[0]
            log(f"1: {n} symbols, {w} workers: {r['trades_per_s']:,.0f} trades/s ({r['ratio_vs_1']:.2f}x 1 worker), "
                f"{r['closed']:,} trades in closed bars, RSS {r['rss_mb']} MB, load {r['load']:.1f}")
            results.append(r)
    ones = [r for r in results if r["workers"] == 1]
    if len(ones) >= 2:
        a, b = ones[0], ones[-1]
        slope = (b["rss_mb"][0] - a["rss_mb"][0]) / (b["symbols"] - a["symbols"])
        log(f"1: peak RSS per symbol (1 worker, {a['symbols']} -> {b['symbols']} symbols): {slope:.2f} MB")
    return results


def section_hosts(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """Section 3: the same flow as one process and as a cluster across namespace hosts: same bars, throughput.

    ``--profile timescale``: every run writes to a scratch database of the ``infra/up`` TimescaleDB and a
    Redis db of its own (15), the hosts reach both through the bridge; the stored rows of every table must
    equal the one process's."""
    from tests.kit.chaos import compare

    n = args.symbol_counts[-1]
    hosts_cmd = [str(ROOT / "infra" / "netns" / "hosts"), "up"]
    runs: list[tuple[int, bool]] = [(1, False)] + [(w, True) for w in args.workers if w > 1]
    out, tables = [], []
    for w, on_hosts in runs:
        if on_hosts:
            services = ["--services"] if args.profile == "timescale" else []
            subprocess.run([*hosts_cmd, str(w), *services], check=True)
        with run_servers(args.profile) as servers:
            r = run_cluster(n, w, args.trades, args.batch, tmp, hosts=on_hosts, servers=servers)
            r["profile"] = args.profile
            if servers:
                tables.append(stored_tables(servers.dsn))
                r["rows"] = {t: len(df) for t, df in tables[-1].items()}
        out.append(r)
    for i, r in enumerate(out):
        r["same_as_one_process"] = (r["closed"], r["digest"]) == (out[0]["closed"], out[0]["digest"])
        if tables:
            r["same_rows_as_one_process"] = compare(tables[i], tables[0]).ok
        log(f"3: {n} symbols, {args.profile} profile, {r['workers']} process(es)"
            f"{' on namespace hosts' if r['hosts'] else ''}: {r['trades_per_s']:,.0f} trades/s "
            f"({r['trades_per_s'] / out[0]['trades_per_s']:.2f}x one process), bars digest {r['digest']}, "
            f"same as one process: {r['same_as_one_process']}"
            + (f", stored rows {r['rows']} same: {r['same_rows_as_one_process']}" if tables else "")
            + f", load {os.getloadavg()[0]:.1f}")
    return out


REDIS_DB = 15  # the timescale profile's runs: apart from the db 0 of everyday runs


@contextmanager
def run_servers(profile: str) -> Iterator[Servers | None]:
    """Yield a scratch database (dropped afterwards) and an emptied Redis db for one run, or None (local)."""
    if profile != "timescale":
        yield None
        return
    import redis

    from tests.kit.chaos import infra_settings, scratch_database

    settings = infra_settings()
    url = urlparse(settings["REDIS_URL"])
    redis_url = f"redis://127.0.0.1:{url.port or 6379}/{REDIS_DB}"
    redis.Redis.from_url(redis_url).flushdb()
    with scratch_database(settings["TIMESCALE_DSN"]) as dsn:
        yield Servers(dsn, redis_url)


def stored_tables(dsn: str) -> dict[str, Any]:
    """Return the rows of bars, features and cross-asset features the flow stored (1m, the bench's timeframe)."""
    from tests.kit.chaos import timescale_tables

    return timescale_tables(dsn, "1m")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", default="1,2")
    p.add_argument("--symbol-counts", type=lambda s: [int(x) for x in s.split(",")], default=[10, 50, 200])
    p.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4])
    p.add_argument("--trades", type=int, default=300_000)
    p.add_argument("--batch", type=int, default=200, help="messages per source item")
    p.add_argument("--closes", type=int, default=300, help="section 2: bar closes timed")
    p.add_argument("--cluster", type=int, default=20, help="section 2: most assets in one graph cluster")
    p.add_argument("--registry", type=Path, default=ROOT / "var" / "bench_registry",
                   help="section 4: models, in <registry>-u10 and <registry>-u200 (bootstrapped once if empty)")
    p.add_argument("--bootstrap-days", type=float, default=0.5,
                   help="section 4: days of history a registry is bootstrapped on (200 symbols: ~10 min)")
    p.add_argument("--profile", choices=("local", "timescale"), default="local",
                   help="section 3: timescale = the real sinks into TimescaleDB and Redis (infra/up; hosts via "
                   "the bridge)")
    p.add_argument("--json", type=Path, help="write the results here too")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--symbols", type=int, help=argparse.SUPPRESS)
    p.add_argument("--addresses", help=argparse.SUPPRESS)
    p.add_argument("--proc-id", type=int, help=argparse.SUPPRESS)
    p.add_argument("--data-dir", help=argparse.SUPPRESS)
    p.add_argument("--dsn", help=argparse.SUPPRESS)
    p.add_argument("--redis-url", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0
    sections = {s.strip() for s in args.sections.split(",")}
    out: dict[str, Any] = {"cores": os.cpu_count(), "load_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as d:
        tmp = Path(d)
        if "1" in sections:
            out["throughput"] = section_throughput(args, tmp)
        if "3" in sections:
            out["hosts"] = section_hosts(args, tmp)
        if "2" in sections:
            from bench_scale_close import section_close  # per-close costs at 200 symbols

            out["close"] = section_close(args)
        if "4" in sections:  # bar close -> order intent, 10 and 200 symbols
            from bench_scale_close import section_intent

            out["intent"] = section_intent(args, tmp)
    out["load_end"] = os.getloadavg()[0]
    return report(out, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
