"""Benchmark: the dashboard's first paint with 1,000,000 bars stored, against an empty store, on both profiles.

For each profile, the same run measures an empty store (the baseline) and then a store
filled through the profile's writers (``tests/kit/dashboard_store.py``): 1,000,000 1m bars
(3 symbols x 333,334), a day of features, and a paper run deciding at every close
(a ``portfolio_state`` row per close: 333,334; a prediction per symbol and close:
1,000,002; orders and fills when confidence > 0.3, a few percent of them).
``python -m flows.monitoring.dashboard`` serves it; headless Debian Chromium opens each
page in a new browser context (a new session) and the time from navigation to

- ``content``: the page's heading and its first figures drawn, and
- ``complete``: the whole script ran (the live caption below the page is drawn)

is printed per page, with ``store reads``: the seconds of the page's reads called directly
(no Streamlit, no browser).  ``cold`` is the first visit after the server started (the store is
queried; nothing cached), ``warm`` the median of the next visits (the queries' results are
cached per change token).  Targets: first paint within 2 s with 1M bars.

Usage::

    set -a; eval "$(infra/up)"; set +a     # for the timescale profile
    .venv/bin/python tests/bench/bench_dashboard.py [--bars 1000000] [--profiles local,timescale] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from flows.settings import load_settings  # noqa: E402
from flows.stores import open_stores  # noqa: E402
from tests.kit.dashboard_browser import LIVE, browser, free_port, serve  # noqa: E402
from tests.kit.dashboard_store import fill_store  # noqa: E402

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
PAGES = (("", "Portfolio", "Equity"), ("orders", "Orders and fills", "Fills (last 200)"),
         ("predictions", "Predictions", "Per model (last 200 predictions)"),
         ("freshness", "Feature freshness", "Feature freshness"), ("risk", "Risk", "Limits and headroom"),
         ("positions", "Positions", "Positions"))


def visit(page: Any, url: str, heading: str, first: str) -> tuple[float, float]:
    """Return (content, complete) seconds of one visit in a fresh browser context."""
    t0 = time.perf_counter()
    page.goto(url)
    page.get_by_role("heading", name=heading, exact=True).wait_for(timeout=60_000)
    empty = page.get_by_text("No portfolio rows are stored yet", exact=False)
    page.get_by_text(first, exact=True).or_(empty).first.wait_for(timeout=60_000)
    content = time.perf_counter() - t0
    page.get_by_text(LIVE).wait_for(timeout=60_000)
    return content, time.perf_counter() - t0


def store_reads(env: dict[str, str]) -> dict[str, float]:
    """Return the seconds of each page's store reads, called directly (no Streamlit, no browser, no cache)."""
    settings = load_settings(env=env)
    reader = open_stores(settings).monitor_reader()
    t0 = time.perf_counter()
    runs = reader.runs()
    run = str(runs.run_id.iloc[0]) if len(runs) else "none"
    base = time.perf_counter() - t0  # the sidebar's run list, on every page
    calls: dict[str, list[tuple[str, tuple[Any, ...]]]] = {
        "portfolio": [("latest_state", (run,)), ("equity", (run, 1500)), ("daily", (run,)), ("symbol_flows", (run,))],
        "orders": [("fills", (run, 200, "1m")), ("orders", (run, 200))],
        "predictions": [("predictions", (run, 200))],
        "freshness": [("freshness", (SYMBOLS, ("1m",)))],
        "risk": [("latest_state", (run,)), ("risk_events", (run, 200)), ("risk_counts", (run,))],
        "positions": [("latest_state", (run,))]}
    out = {}
    for page, todo in calls.items():
        t0 = time.perf_counter()
        for name, args in todo:
            getattr(reader, name)(*args)
        out[page] = base + time.perf_counter() - t0
    return out


def measure(env: dict[str, str], repeats: int) -> dict[str, tuple[tuple[float, float], tuple[float, float]]]:
    """Serve the dashboard and return per page (cold (content, complete), warm median (content, complete))."""
    out = {}
    with serve(env, free_port(), timeout_s=120) as url, browser() as first_page:
        ctx = first_page.context.browser
        for path, heading, first in PAGES:
            runs = []
            for _ in range(1 + repeats):
                context = ctx.new_context(viewport={"width": 1400, "height": 1000})
                page = context.new_page()
                runs.append(visit(page, f"{url}/{path}", heading, first))
                context.close()
            warm = (statistics.median(r[0] for r in runs[1:]), statistics.median(r[1] for r in runs[1:]))
            out[path or "portfolio"] = (runs[0], warm)
    return out


def profile_env(profile: str, data_dir: Path) -> tuple[dict[str, str], Any]:
    """Return the dashboard's environment for a profile, and a cleanup (the scratch database)."""
    env = {"CRYPTOSTREAM_PROFILE": profile, "CRYPTOSTREAM_DATA_DIR": str(data_dir),
           "CRYPTOSTREAM_SYMBOLS": ",".join(SYMBOLS)}
    if profile == "local":
        return env, lambda: None
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    from infra.db import ensure_database, migrate

    base = os.environ.get("TIMESCALE_DSN")
    if not base or not os.environ.get("REDIS_URL"):
        raise SystemExit("the timescale profile needs TIMESCALE_DSN and REDIS_URL: set -a; eval \"$(infra/up)\"; set +a")
    name = f"cryptostream_bench_{uuid.uuid4().hex[:8]}"
    dsn = make_conninfo(base, dbname=name)
    ensure_database(dsn)
    migrate(dsn)

    def drop() -> None:
        with psycopg.connect(make_conninfo(base, dbname="postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    env.update({"TIMESCALE_DSN": dsn, "REDIS_URL": os.environ["REDIS_URL"],
                "CRYPTOSTREAM_RISK__KILL_SWITCH__REDIS_KEY": f"bench:dashboard:kill:{name}"})
    return env, drop


def main(argv: list[str] | None = None) -> None:
    """Print first-paint times per profile and page: empty store against 1M bars."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bars", type=int, default=1_000_000, help="bars stored in all (split over 3 symbols)")
    parser.add_argument("--profiles", default="local,timescale")
    parser.add_argument("--repeats", type=int, default=3, help="warm visits per page")
    args = parser.parse_args(argv)
    per_symbol = -(-args.bars // len(SYMBOLS))
    print(f"{'profile':<10} {'store':<15} {'page':<12} {'store reads':>11} {'cold content':>13} "
          f"{'cold complete':>14} {'warm content':>13} {'warm complete':>14}")
    for profile in args.profiles.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            env, cleanup = profile_env(profile, Path(tmp) / "var")
            try:
                reads = {"empty": store_reads(env)}
                results = {"empty": measure(env, args.repeats)}
                t0 = time.perf_counter()
                stores = open_stores(load_settings(env=env))
                n = fill_store(stores, SYMBOLS, per_symbol, run_id="bench-run", order_confidence=0.3)
                print(f"# {profile}: stored {n:,} bars and the decision tables in {time.perf_counter() - t0:.0f} s",
                      flush=True)
                reads[f"{n:,} bars"] = store_reads(env)
                results[f"{n:,} bars"] = measure(env, args.repeats)
            finally:
                cleanup()
        for store, pages in results.items():
            for page, ((cc, cf), (wc, wf)) in pages.items():
                print(f"{profile:<10} {store:<15} {page:<12} {reads[store][page]:>10.3f}s {cc:>12.2f}s {cf:>13.2f}s "
                      f"{wc:>12.2f}s {wf:>13.2f}s", flush=True)


if __name__ == "__main__":
    main()
