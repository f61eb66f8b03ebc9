"""The chaos suite's scenarios (issue 17): each runs the real flow, or the real stores, and returns a table row.

A row says: scenario | runs | failures | rows lost | rows duplicated | duplicate client order ids.
A run fails when the flow does not end cleanly or its stored tables differ from an
uninterrupted reference run in any way (a row missing, a row twice, a value different).
``tests/chaos/test_chaos.py`` runs the bounded forms in CI; ``python -m tests.chaos --full``
runs the long forms and writes the table (``tests/chaos/RESULTS.md``).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from flows import feast_store
from flows.settings import load_settings
from infra.db import ensure_database, migrate
from infra.replay_exchange.faults import FaultConfig
from infra.replay_exchange.server import running_replay
from tests.kit.recovery import kill_at_and_finish, run_flow
from tests.kit.replay import with_history
from tests.kit.repo import PROJECT_ROOT, copy_feature_repo

START = datetime(2024, 5, 1, tzinfo=timezone.utc)
END = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
SYMBOLS = ("BTC/USDT", "ETH/USDT")
TABLES = ("bars", "bar_features", "cross_asset_features")
KEY = ["symbol", "ts"]


@dataclass
class Row:
    """One line of the chaos table."""

    scenario: str
    runs: int = 0
    failures: int = 0
    lost: int = 0
    duplicated: int = 0
    duplicate_orders: int = 0
    note: str = ""

    def add(self, other: Outcome) -> None:
        """Count one run's outcome."""
        self.runs += 1
        self.failures += int(not other.ok)
        self.lost += other.lost
        self.duplicated += other.duplicated
        self.duplicate_orders += other.duplicate_orders
        if other.error and not self.note:
            self.note = other.error[-300:].replace("\n", " ").replace("|", "/")

    def line(self) -> str:
        """Return the row as a Markdown table line."""
        return (f"| {self.scenario} | {self.runs} | {self.failures} | {self.lost} | {self.duplicated} | "
                f"{self.duplicate_orders} | {self.note} |")


HEADER = ("| scenario | runs | failures | rows lost | rows duplicated | duplicate client order ids | note |\n"
          "|---|---|---|---|---|---|---|")


@dataclass
class Outcome:
    """What one run left: counts against the reference and whether it is a pass."""

    lost: int = 0
    duplicated: int = 0
    differing: int = 0
    duplicate_orders: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        """A pass: nothing lost, repeated or different, and no error."""
        return not (self.lost or self.duplicated or self.differing or self.duplicate_orders or self.error)


def print_row(row: Row) -> Row:
    """Print the row (the chaos table's line) and return it."""
    print(row.line(), flush=True)
    return row


# --- stored tables --------------------------------------------------------------------------------


def _ms(ts: pd.Series) -> pd.Series:
    if pd.api.types.is_integer_dtype(ts):
        return ts.astype("int64")
    return (pd.to_datetime(ts, utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)


def _normal(df: pd.DataFrame) -> pd.DataFrame:
    df = df.drop(columns=[c for c in ("created_at", "run_id", "timeframe") if c in df.columns])
    df = df.assign(ts=_ms(df.ts))
    return df.sort_values(KEY).reset_index(drop=True)


def local_tables(var: Path, tf: str = "5m") -> dict[str, pd.DataFrame]:
    """Return the history tables the local profile stored under ``var``."""
    out = {}
    for t in TABLES:
        files = sorted((var / "offline" / f"{t}_{tf}").glob("*.parquet"))
        out[t] = _normal(pd.concat([pd.read_parquet(f) for f in files])) if files else pd.DataFrame(columns=KEY)
    return out


def timescale_tables(dsn: str, tf: str = "5m") -> dict[str, pd.DataFrame]:
    """Return the history tables stored in a TimescaleDB database."""
    out = {}
    with psycopg.connect(dsn) as conn:
        for t in TABLES:
            cur = conn.execute(sql.SQL("SELECT * FROM {} WHERE timeframe = %s").format(sql.Identifier(t)), (tf,))
            out[t] = _normal(pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description]))
    return out


def compare(got: dict[str, pd.DataFrame], want: dict[str, pd.DataFrame], atol: float = 0.0) -> Outcome:
    """Count rows of ``want`` missing from ``got``, rows of ``got`` stored twice, and rows whose values differ.

    Values are compared exactly (``atol``: the tolerance of float columns).
    """
    out = Outcome()
    for t, w in want.items():
        g = got.get(t, pd.DataFrame(columns=KEY))
        out.duplicated += int(g.duplicated(KEY).sum())
        g = g.drop_duplicates(KEY)
        both = w.merge(g, on=KEY, how="left", suffixes=("", "_got"), indicator=True)
        out.lost += int((both["_merge"] == "left_only").sum())
        extra = len(g) - int((both["_merge"] == "both").sum())
        out.differing += max(extra, 0)
        cols = [c for c in w.columns if c not in KEY and f"{c}_got" in both.columns]
        hit = both[both["_merge"] == "both"]
        for c in cols:
            a, b = hit[c], hit[f"{c}_got"]
            same = (a == b) | (a.isna() & b.isna())
            if atol and pd.api.types.is_float_dtype(a):
                same |= (a - b).abs() <= atol
            out.differing += int((~same).sum())
    return out


# --- servers --------------------------------------------------------------------------------------


def infra_settings() -> dict[str, str]:
    """Return TIMESCALE_DSN and REDIS_URL from the environment, else from ``infra/up`` (which starts them)."""
    if os.environ.get("TIMESCALE_DSN") and os.environ.get("REDIS_URL"):
        return {"TIMESCALE_DSN": os.environ["TIMESCALE_DSN"], "REDIS_URL": os.environ["REDIS_URL"]}
    done = subprocess.run([str(PROJECT_ROOT / "infra" / "up")], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHON": sys.executable})
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


@contextmanager
def scratch_database(dsn: str) -> Iterator[str]:
    """Create and migrate a database of its own on the server of ``dsn``; drop it afterwards."""
    name = f"cryptostream_chaos_{uuid.uuid4().hex[:10]}"
    scratch = make_conninfo(dsn, dbname=name)
    ensure_database(scratch)
    migrate(scratch)
    try:
        yield scratch
    finally:
        with psycopg.connect(make_conninfo(dsn, dbname="postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# --- the features flow ----------------------------------------------------------------------------


def candle_files(shared: Path) -> list[Path]:
    """Return the 5m candle files of :data:`SYMBOLS`."""
    return [shared / "binance-spot-5m-2024" / f"{s.replace('/', '_')}-5m.parquet" for s in SYMBOLS]


def flow_env(var: Path, repo: Path, ex: Any, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Return the environment of a ``flows.live`` run over the replay ``ex`` (features only)."""
    return {**os.environ, "CRYPTOSTREAM_DATA_DIR": str(var), "CRYPTOSTREAM_FEAST_REPO": str(repo),
            "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS), "CRYPTOSTREAM_BARS__TIMEFRAMES": "5m",
            "CRYPTOSTREAM_EXCHANGE__HTTP_URL": ex.http_url, "CRYPTOSTREAM_EXCHANGE__WS_URL": ex.ws_url,
            "CRYPTOSTREAM_EXCHANGE__API_KEY": "replay", "CRYPTOSTREAM_EXCHANGE__FILL_SINCE": START.isoformat(),
            "CRYPTOSTREAM_EXCHANGE__IDLE_STOP_S": "4", **(extra or {})}


def profile_env(profile: str, dsn: str | None, redis_url: str | None) -> dict[str, str]:
    """Return the variables that select ``profile`` (with its servers)."""
    if profile == "local":
        return {"CRYPTOSTREAM_PROFILE": "local"}
    assert dsn and redis_url
    return {"CRYPTOSTREAM_PROFILE": "timescale", "TIMESCALE_DSN": dsn, "REDIS_URL": redis_url}


def reference_tables(shared: Path, tmp: Path) -> dict[str, pd.DataFrame]:
    """Run the features flow once, uninterrupted and fault-free (local profile); return its tables."""
    with running_replay(candle_files(shared), speed=0, end=END, seed=5, **with_history(START, "5m")) as ex:
        ex.engine.wait_for_streams = len(SYMBOLS)
        env = flow_env(tmp / "var", copy_feature_repo(tmp), ex)
        feast_store.apply(load_settings(env=env))
        proc = run_flow(env)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-3000:]
    tables = local_tables(tmp / "var")
    assert len(tables["bars"]) == len(SYMBOLS) * (12 * 12 - 1)
    # warmed up on the replay's klines before START (exchange.warmup_klines): features from the first bar
    assert len(tables["bar_features"]) == len(tables["cross_asset_features"]) == len(tables["bars"])
    return tables


def _run_and_compare(tmp: Path, want: dict[str, pd.DataFrame], profile: str, servers: dict[str, str],
                     body: Callable[[Any, dict[str, str], Path], None], speed: float,
                     faults: FaultConfig | None = None) -> Outcome:
    """Run ``body(ex, env, tmp)`` against a replay (in a scratch database for ``timescale``) and compare."""
    tmp.mkdir(parents=True, exist_ok=True)

    def go(dsn: str | None) -> Outcome:
        with running_replay(candle_files(Path(servers["SHARED"])), speed=speed, end=END, seed=5, **with_history(START, "5m"),
                            faults=faults or FaultConfig()) as ex:
            ex.engine.wait_for_streams = len(SYMBOLS)
            env = flow_env(tmp / "var", copy_feature_repo(tmp), ex,
                           profile_env(profile, dsn, servers.get("REDIS_URL")))
            feast_store.apply(load_settings(env=env))
            try:
                body(ex, env, tmp)
            except BaseException as exc:  # a failed run is counted, not raised (pytest.fail is a BaseException)
                if isinstance(exc, KeyboardInterrupt):
                    raise
                return Outcome(error=f"{type(exc).__name__}: {exc}")
        got = local_tables(tmp / "var") if dsn is None else timescale_tables(dsn)
        return compare(got, want)

    if profile == "local":
        return go(None)
    with scratch_database(servers["TIMESCALE_DSN"]) as dsn:
        return go(dsn)


def _recovery_dir(tmp: Path) -> Path:
    recovery = tmp / "recovery"
    recovery.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True,
                   capture_output=True)
    return recovery


def sigkill_features(shared: Path, tmp: Path, want: dict[str, pd.DataFrame], profile: str, kills: int,
                     per_run: int, servers: dict[str, str], seed: int = 17) -> Row:
    """SIGKILL the features flow at ``kills`` random points (``per_run`` per replay), restart, compare."""
    row = Row(f"SIGKILL features flow, {profile} profile ({kills} random points, {per_run} per run)")
    rng = random.Random(seed)
    done = 0
    while done < kills:
        n = min(per_run, kills - done)
        shares = tuple(sorted(rng.uniform(0.1, 0.9) for _ in range(n)))
        run_tmp = tmp / f"kill-{profile}-{done}"

        def body(ex: Any, env: dict[str, str], t: Path, shares: tuple[float, ...] = shares) -> None:
            kill_at_and_finish(ex, env, _recovery_dir(t), shares)

        out = _run_and_compare(run_tmp, want, profile, {**servers, "SHARED": str(shared)}, body, speed=1800)
        row.add(out)
        row.runs += n - 1  # a row counts kill points
        done += n
        shutil.rmtree(run_tmp, ignore_errors=True)
    return print_row(row)


STORMS: dict[str, FaultConfig] = {
    "drop": FaultConfig(drop_every=150),
    "stall": FaultConfig(stall_every=300, stall_seconds=0.5),
    "duplicate": FaultConfig(duplicate=0.05),
    "reorder": FaultConfig(reorder=0.05),
    "corrupt": FaultConfig(corrupt=0.02),
    "every fault but corruption": FaultConfig(drop_every=200, stall_every=400, stall_seconds=0.3, duplicate=0.03,
                                              reorder=0.03),
    "all at once": FaultConfig(drop_every=200, stall_every=400, stall_seconds=0.3, duplicate=0.03, reorder=0.03,
                               corrupt=0.01),
}


def fault_storm(shared: Path, tmp: Path, want: dict[str, pd.DataFrame], name: str, runs: int,
                speed: float) -> Row:
    """Run the features flow through a storm of one fault kind (seeded differently per run); compare."""
    row = Row(f"storm: {name} ({FaultConfig.__name__}: "
              f"{', '.join(f'{k}={v}' for k, v in vars(STORMS[name]).items() if v and k != 'corrupt_kinds')})")
    for i in range(runs):
        cfg = STORMS[name]
        run_tmp = tmp / f"storm-{name.replace(' ', '_')}-{i}"

        def body(ex: Any, env: dict[str, str], t: Path) -> None:
            proc = run_flow(env)
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err.decode()[-1500:]

        row.add(_run_and_compare(run_tmp, want, "local", {"SHARED": str(shared)}, body, speed=speed, faults=cfg))
        shutil.rmtree(run_tmp, ignore_errors=True)
    if name in ("corrupt", "all at once") and row.failures:
        row.note = ("a corrupted trade goes to dead letters and its id is refetched from REST (id_gaps); bars still differ"
                    + (f"; {row.note}" if row.note else ""))
    return print_row(row)


def timescale_restart(shared: Path, tmp: Path, want: dict[str, pd.DataFrame], runs: int, down_s: float,
                      redis_url: str) -> Row:
    """Restart a throwaway TimescaleDB under the running features flow (timescale profile); compare."""
    from tests.kit.servers import ThrowawayTimescale

    row = Row(f"outage: TimescaleDB stopped for {down_s:g} s mid-run (timescale profile, features flow)")
    for i in range(runs):
        run_tmp = tmp / f"ts-restart-{i}"
        run_tmp.mkdir(parents=True, exist_ok=True)
        with ThrowawayTimescale() as ts:
            row.add(_restart_run(shared, run_tmp, want, ts, redis_url, 0.3 + 0.2 * (i % 3), down_s))
        shutil.rmtree(run_tmp, ignore_errors=True)
    return print_row(row)


def _restart_run(shared: Path, tmp: Path, want: dict[str, pd.DataFrame], ts: Any, redis_url: str, share: float,
                 down_s: float) -> Outcome:
    with running_replay(candle_files(shared), speed=1800, end=END, seed=5, **with_history(START, "5m")) as ex:
        ex.engine.wait_for_streams = len(SYMBOLS)
        env = flow_env(tmp / "var", copy_feature_repo(tmp), ex, profile_env("timescale", ts.dsn, redis_url))
        feast_store.apply(load_settings(env=env))
        proc = run_flow(env)
        total = len(ex.data.timeline)
        deadline = time.monotonic() + 120
        while ex.engine.cursor < total * share and time.monotonic() < deadline:
            time.sleep(0.05)
        ts.stop("fast")
        time.sleep(down_s)
        ts.start()
        _, err = proc.communicate(timeout=300)
        if proc.returncode != 0:
            return Outcome(error=f"exit {proc.returncode}: {err.decode()[-1500:]}")
    return compare(timescale_tables(ts.dsn), want)


def redis_outage(tmp: Path, dsn: str, down_s: float, batches_per_s: float = 10.0) -> Row:
    """Kill an own redis-server under the decision step and sink for ``down_s``; count what was not published.

    The decision step (real portfolio, risk engine, paper broker, the Redis kill switch)
    and the decision sink (TimescaleDB + the Redis event bus) work one close per batch.
    A failure: an order placed while the switch was unreadable, a record missing from
    TimescaleDB or from the stream after the outage, or a client order id stored twice.
    """
    from flows.execution.orders import Order, OrderStatus
    from flows.operators.decisions import DecisionStep
    from flows.records import Bar, Prediction
    from flows.sinks.decisions import DecisionSink
    from flows.wiring import build_deps
    from tests.kit.servers import OwnRedis

    tf = 60_000
    row = Row(f"outage: Redis killed for {down_s:g} s (decision step + sink, timescale profile)")
    out = Outcome()
    with OwnRedis(tmp) as rd, scratch_database(dsn) as db:
        settings = load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp / "var"), "CRYPTOSTREAM_PROFILE": "timescale",
                                      "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS), "TIMESCALE_DSN": db,
                                      "REDIS_URL": rd.url})
        sink = DecisionSink(settings).open()
        step = DecisionStep(SYMBOLS, tf, build_deps(settings))
        written = 0

        def close(k: int) -> list[Any]:
            nonlocal written
            preds = [Prediction(s, "1m", (k + 1) * tf, {}, 0.7 if k % 2 else 0.3, 0.4, 1 if k % 2 else -1,
                                float("nan"), {}, 0.0, 0.0005) for s in SYMBOLS]
            step.on_predictions(preds)
            px = 100.0 + k % 7
            res = [o for s in SYMBOLS for o in step.on_bar(
                Bar(s, "1m", k * tf, px, px + 1, px - 1, px + 0.5, 50.0, 50.0 * px, 10, px, 25.0))]
            sink.write_batch(preds + res)
            written += len(preds)
            return res

        k = 0
        for k in range(5):
            close(k)
        sink.flush()
        before = written
        rd.kill()
        t_end, risky = time.monotonic() + down_s, 0
        while time.monotonic() < t_end:
            k += 1
            risky += sum(isinstance(o, Order) and o.status == OrderStatus.NEW for o in close(k))
            time.sleep(1.0 / batches_per_s)
        rd.start()
        for j in range(k + 1, k + 6):
            close(j)
        sink.close()
        import redis

        with psycopg.connect(db) as conn:
            stored = conn.execute("SELECT count(*), count(DISTINCT (symbol, ts)) FROM predictions").fetchone()
            orders = conn.execute("SELECT count(*) - count(DISTINCT client_order_id) FROM orders").fetchone()
        assert stored is not None and orders is not None
        published = redis.Redis.from_url(rd.url).xlen("cryptostream:predictions")
        out.lost = (written - stored[1]) + max(0, (written - before) - published)
        out.duplicated = (stored[0] - stored[1]) + max(0, published - (written - before))
        out.duplicate_orders = int(orders[0])
        if risky:
            out.error = f"{risky} orders placed while the kill switch could not be read"
        row.note = (f"{written - before} predictions written during and after the outage, {published} published; "
                    f"{risky} new orders while Redis was down")
    row.add(out)
    return print_row(row)


def _fuzz(test_file: str, examples: int, scenario: str) -> Row:
    """Run a hypothesis fuzz test's ``fuzzed`` cases with ``examples`` examples; return its row."""
    env = {**os.environ, "CRYPTOSTREAM_FUZZ_EXAMPLES": str(examples)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file, "-k", "fuzzed"],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=False)
    row = Row(scenario)
    row.add(Outcome(error="" if done.returncode == 0 else done.stdout[-500:]))
    return print_row(row)


def fuzz_parser(examples: int) -> Row:
    """Run the parser's hypothesis fuzz test (``tests/unit/flows/test_parse_schema.py``) with more examples."""
    return _fuzz("tests/unit/flows/test_parse_schema.py", examples,
                 f"fuzz: parser, hypothesis, CRYPTOSTREAM_FUZZ_EXAMPLES={examples} (about {examples * 50:,} messages)")


def fuzz_rest_replies(examples: int) -> Row:
    """Run the REST gap fill's reply fuzz test (``tests/unit/flows/sources/test_rest_fill_replies.py``)."""
    return _fuzz("tests/unit/flows/sources/test_rest_fill_replies.py", examples,
                 f"fuzz: REST replies (aggTrades, historicalTrades), hypothesis, CRYPTOSTREAM_FUZZ_EXAMPLES="
                 f"{examples} per fill (about {examples * 19:,} rows drawn)")


def soak(tmp: Path, trades: int, sample_s: float = 10.0, rate: float = 40.0) -> tuple[Row, list[dict[str, Any]]]:
    """Run ``flows.live`` (local profile) over a synthetic replay of about ``trades`` trades at max speed.

    Samples RSS, threads and open files of the flow's process every ``sample_s`` seconds.
    """
    symbols = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
    seconds = max(60, int(trades / (rate * len(symbols))))
    replay = subprocess.Popen(
        [sys.executable, "-m", "infra.replay_exchange", "--synthetic", ",".join(symbols), "--duration",
         f"{seconds}s", "--rate", str(rate), "--speed", "max", "--rest-horizon", "all", "--port", "0",
         "--wait-for-streams", str(len(symbols)), "--seed", "11"],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    urls = {}
    assert replay.stdout is not None
    while len(urls) < 2:
        line = replay.stdout.readline()
        assert line, "the replay exchange did not start"
        k, _, v = line.strip().partition("=")
        if k.startswith("CRYPTOSTREAM_EXCHANGE__"):
            urls[k] = v.strip()
    try:
        env = {**os.environ, "CRYPTOSTREAM_DATA_DIR": str(tmp / "var"), "CRYPTOSTREAM_SYMBOLS": ",".join(symbols),
               "CRYPTOSTREAM_FEAST_REPO": str(copy_feature_repo(tmp)), **urls,
               "CRYPTOSTREAM_EXCHANGE__API_KEY": "replay", "CRYPTOSTREAM_EXCHANGE__IDLE_STOP_S": "10"}
        feast_store.apply(load_settings(env=env))
        samples: list[dict[str, Any]] = []
        t0 = time.monotonic()
        proc = run_flow(env)
        err: list[bytes] = []
        reader = threading.Thread(target=lambda: err.append(proc.stderr.read() if proc.stderr else b""), daemon=True)
        reader.start()
        while proc.poll() is None:
            samples.append({"t_s": round(time.monotonic() - t0, 1), **process_figures(proc.pid)})
            time.sleep(sample_s)
        reader.join(5)
    finally:
        replay.terminate()
        replay.wait(10)
    bars = local_bars(tmp / "var")
    row = Row(f"soak: {trades / 1e6:g}M synthetic trades at max speed (local profile, features flow)")
    out = Outcome(error="" if proc.returncode == 0 else b"".join(err).decode()[-500:])
    row.add(out)
    n = int(bars.trade_count.sum()) if len(bars) else 0
    warm = [s for s in samples if s["t_s"] >= 60 and s["rss_mb"]] or samples
    row.note = (f"{n:,} trades in bars in {time.monotonic() - t0:.0f} s; after the first minute RSS "
                f"{warm[0]['rss_mb']:.0f} -> {warm[-1]['rss_mb']:.0f} MB (max {max(s['rss_mb'] for s in warm):.0f}), "
                f"threads {warm[0]['threads']} -> {warm[-1]['threads']}, open files {warm[0]['open_files']} -> "
                f"{warm[-1]['open_files']}") if warm else "no samples"
    return print_row(row), samples


def local_bars(var: Path) -> pd.DataFrame:
    """Return the 1m bars the local profile stored."""
    files = sorted((var / "offline" / "bars_1m").glob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame(columns=["trade_count"])


def process_figures(pid: int) -> dict[str, Any]:
    """Return RSS (MB), threads and open files of a process (Linux /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "threads": int(fields["Threads"]),
                "open_files": len(os.listdir(f"/proc/{pid}/fd"))}
    except (OSError, KeyError):
        return {"rss_mb": 0.0, "threads": 0, "open_files": 0}


def sigkill_decisions(shared: Path, tmp: Path, registry: Path, reference: Path, profile: str, kills: int,
                      per_run: int, servers: dict[str, str], seed: int = 23) -> Row:
    """SIGKILL the flow with scoring and paper decisions at random points after warm-up; compare predictions.

    Reference: the uninterrupted local run of :func:`tests.kit.paper.reference`.  Lost or
    duplicated rows are counted on the predictions; client order ids stored twice on the orders.
    """
    from tests.kit.paper import LIVE, paper_env, stored_predictions
    from tests.kit.paper import SYMBOLS as PAPER_SYMBOLS
    from tests.kit.paper import candle_files as paper_files

    row = Row(f"SIGKILL decisions flow (scoring + paper trading), {profile} profile "
              f"({kills} random points, {per_run} per run)")
    want = stored_predictions(reference)
    want = want.assign(ts=_ms(want.ts))[["symbol", "ts", "prob_up", "signal"]]
    rng = random.Random(seed)
    done = 0
    while done < kills:
        n = min(per_run, kills - done)
        shares = tuple(sorted(rng.uniform(0.6, 0.9) for _ in range(n)))  # the models score from ~51 %
        run_tmp = tmp / f"dkill-{profile}-{done}"
        run_tmp.mkdir(parents=True, exist_ok=True)

        def go(dsn: str | None, shares: tuple[float, ...] = shares, run_tmp: Path = run_tmp) -> Outcome:
            with running_replay(paper_files(shared), speed=3600, end=LIVE[1], **with_history(LIVE[0], "5m"), seed=5) as ex:
                ex.engine.wait_for_streams = len(PAPER_SYMBOLS)
                env = {**paper_env(run_tmp / "var", copy_feature_repo(run_tmp), ex, registry),
                       **profile_env(profile, dsn, servers.get("REDIS_URL"))}
                feast_store.apply(load_settings(env=env))
                try:
                    kill_at_and_finish(ex, env, _recovery_dir(run_tmp), shares)
                except BaseException as exc:
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    return Outcome(error=f"{type(exc).__name__}: {exc}")
            if dsn is None:
                got = stored_predictions(run_tmp / "var")
                from tests.kit.paper import decision_table

                coids = decision_table(run_tmp / "var", "orders").client_order_id
            else:
                with psycopg.connect(dsn) as conn:
                    cur = conn.execute("SELECT symbol, ts, prob_up, signal FROM predictions")
                    got = pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])
                    coids = pd.Series([r[0] for r in conn.execute("SELECT client_order_id FROM orders")])
            got = got.assign(ts=_ms(got.ts))[["symbol", "ts", "prob_up", "signal"]]
            out = compare({"predictions": got.sort_values(KEY).reset_index(drop=True)},
                          {"predictions": want.sort_values(KEY).reset_index(drop=True)}, atol=1e-12)
            out.duplicate_orders = int(coids.duplicated().sum())
            return out

        if profile == "local":
            outcome = go(None)
        else:
            with scratch_database(servers["TIMESCALE_DSN"]) as dsn:
                outcome = go(dsn)
        row.add(outcome)
        row.runs += n - 1
        done += n
        shutil.rmtree(run_tmp, ignore_errors=True)
    return print_row(row)
