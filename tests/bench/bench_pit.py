"""Benchmark: the point-in-time training set at the real data's size, on both profiles.

Usage::

    set -a; eval "$(infra/up)"; set +a
    .venv/bin/python tests/bench/bench_pit.py [--data ../shared/data/binance-spot-1h] [--repeat 3]
        [--stock-rows 2000] [--lateral-rows 2000] [--no-train]

The five assets' hourly candles (187k bars) are backfilled into a scratch
TimescaleDB database and a scratch local data directory (the flow's operators,
as ``python -m training.backfill files`` does), ``feast apply`` runs for both
profiles, and the entity frame of ``training.datasets`` (every bar time of every
symbol, with ``fwd_ret`` and ``label``) is joined to the ``lightgbm_1h_v1``
service (25 features from two views) by:

1. *timescale, Feast SDK*: ``get_historical_features(...).to_df()`` through the
   profile's offline store (``flows.stores.feast_timescale``, the chosen path);
2. *hand-written as-of join* (the baseline): the entity keys uploaded by ``COPY``,
   one SQL statement over the same hypertables (a last-observation-carried-forward
   window per view), read back by ``COPY`` into pandas: no Feast;
3. *local, Feast SDK*: the embedded profile (parquet + DuckDB);
4. optionally Feast's stock PostgreSQL offline store (``type: postgres``) and a
   hand-written ``LATERAL ... LIMIT 1`` probe per row on the first ``--stock-rows``
   / ``--lateral-rows`` entity rows only (both are far too slow for all of them),
   with the chosen path on the same rows beside them.

Then, unless ``--no-train``, ``python -m training.train lightgbm`` over the full
window on each profile (wall time of the whole command, peak RSS).  Every figure is
the best and median of ``--repeat`` runs in this invocation; compare the ratios.
Not a test.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import psycopg  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.conninfo import make_conninfo  # noqa: E402

from flows import feast_store  # noqa: E402
from flows.feature_catalog import BAR_FEATURES, CROSS_FEATURES  # noqa: E402
from flows.settings import Settings, load_settings  # noqa: E402
from training.backfill import bars_from_frame, run_backfill  # noqa: E402
from training.datasets import attach_labels, load_bars  # noqa: E402

SERVICE = "lightgbm_1h_v1"
TTL_S = 2 * 86400  # the feature views' ttl (feature_repo/definitions.py)


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float, object]:
    """Return (best, median) seconds of ``repeat`` calls and the last result."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times), out


def hand_written(dsn: str, entity: pd.DataFrame) -> pd.DataFrame:
    """The baseline: an as-of join written by hand for these two hypertables, no Feast."""
    lo = entity.event_timestamp.min() - pd.Timedelta(seconds=TTL_S)
    hi = entity.event_timestamp.max()
    up = pd.DataFrame({"r": np.arange(len(entity)), "symbol": entity.symbol.to_numpy(),
                       "t": np.datetime_as_string(entity.event_timestamp.dt.tz_convert(None).to_numpy()
                                                  .astype("datetime64[us]"), unit="us", timezone="UTC")})
    buf = io.StringIO()
    up.to_csv(buf, index=False, header=False)

    def view(alias: str, table: str, cols: tuple[str, ...]) -> tuple[str, str]:
        cte = (f"{alias} AS MATERIALIZED (SELECT row_number() OVER (ORDER BY symbol, ts) AS id, symbol, ts, "
               f"{', '.join(cols)} FROM {table} WHERE timeframe = '1h' AND ts <= '{hi.isoformat()}' "
               f"AND ts >= '{lo.isoformat()}'), "
               f"{alias}m AS (SELECT r, t, max(id) OVER (PARTITION BY symbol ORDER BY t, side ROWS UNBOUNDED "
               f"PRECEDING) AS last FROM (SELECT symbol, ts AS t, 0 AS side, id, NULL::bigint AS r FROM {alias} "
               f"UNION ALL SELECT symbol, t, 1, NULL, r FROM ent) AS u)")
        join = (f"JOIN {alias}m ON {alias}m.r = ent.r LEFT JOIN {alias} ON {alias}.id = {alias}m.last "
                f"AND {alias}.ts >= {alias}m.t - interval '{TTL_S} seconds'")
        return cte, join

    (cb, jb), (cc, jc) = view("b", "bar_features", BAR_FEATURES), view("c", "cross_asset_features", CROSS_FEATURES)
    cols = [f"b.{c}" for c in BAR_FEATURES] + [f"c.{c}" for c in CROSS_FEATURES]
    query = f"WITH {cb}, {cc} SELECT ent.r, {', '.join(cols)} FROM ent {jb} {jc} ORDER BY ent.r"
    out = io.BytesIO()
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SET LOCAL jit = off")
        cur.execute("CREATE TEMP TABLE ent (r bigint, symbol text, t timestamptz) ON COMMIT DROP")
        with cur.copy("COPY ent FROM STDIN (FORMAT csv)") as copy:
            copy.write(buf.getvalue())
        cur.execute("ANALYZE ent")
        with cur.copy(f"COPY ({query}) TO STDOUT (FORMAT csv)") as copy:
            for block in copy:
                out.write(block)
    out.seek(0)
    names = ["r", *BAR_FEATURES, *CROSS_FEATURES]
    feats = pacsv.read_csv(out, read_options=pacsv.ReadOptions(column_names=names)).to_pandas()
    return pd.concat([entity.reset_index(drop=True), feats.drop(columns="r")], axis=1)


def lateral(dsn: str, entity: pd.DataFrame) -> int:
    """A hand-written LATERAL probe per entity row (the textbook as-of join); return the rows read."""
    rows = [(i, s, t.to_pydatetime()) for i, (s, t) in enumerate(zip(entity.symbol, entity.event_timestamp,
                                                                      strict=True))]
    probe = ", ".join(f"b.{c}" for c in BAR_FEATURES)
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SET LOCAL jit = off")
        cur.execute("CREATE TEMP TABLE ent (r bigint, symbol text, t timestamptz) ON COMMIT DROP")
        with cur.copy("COPY ent FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute("ANALYZE ent")
        cur.execute(f"SELECT ent.r, {probe} FROM ent LEFT JOIN LATERAL (SELECT * FROM bar_features b "
                    f"WHERE b.symbol = ent.symbol AND b.timeframe = '1h' AND b.ts <= ent.t AND b.ts >= ent.t - "
                    f"interval '{TTL_S} seconds' ORDER BY b.ts DESC LIMIT 1) AS b ON true ORDER BY ent.r")
        return len(cur.fetchall())


def settings_for(profile: str, tmp: Path, dsn: str | None) -> Settings:
    repo = tmp / f"repo-{profile}"
    repo.mkdir()
    for f in (ROOT / "feature_repo").iterdir():
        if f.suffix in (".py", ".yaml"):
            (repo / f.name).write_bytes(f.read_bytes())
    env = {"CRYPTOSTREAM_PROFILE": profile, "CRYPTOSTREAM_DATA_DIR": str(tmp / f"var-{profile}"),
           "CRYPTOSTREAM_FEAST_REPO": str(repo)}
    if dsn:
        env.update(TIMESCALE_DSN=dsn, REDIS_URL=os.environ["REDIS_URL"])
    return load_settings(env=env)


def stock_store(settings: Settings) -> object:
    """Feast's own PostgreSQL offline store over the same repository (a copy of the yaml with ``type: postgres``)."""
    yaml = feast_store.profile_yaml(settings)
    text = yaml.read_text().replace("type: flows.stores.feast_timescale.TimescaleOfflineStore", "type: postgres")
    stock = yaml.with_name("stock.yaml")
    stock.write_text(text)
    return feast_store.open_store(settings, stock)


def train_lightgbm(settings: Settings, symbols: list[str], start: str, end: str, tmp: Path) -> tuple[float, float]:
    """Run ``python -m training.train lightgbm`` as a user would; return (wall s, peak RSS MB of the child)."""
    env = {**os.environ, **feast_store.feast_environment(settings),
           "CRYPTOSTREAM_PROFILE": settings.profile, "CRYPTOSTREAM_DATA_DIR": str(settings.data_dir)}
    if settings.timescale_dsn is not None:
        env["TIMESCALE_DSN"] = settings.timescale_dsn.get_secret_value()
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child would report this process's peak.
    cmd = [sys.executable, "-c", "import runpy, sys; sys.argv = ['training.train'] + sys.argv[1:]\n"
           "try:\n    runpy.run_module('training.train', run_name='__main__')\n"
           "finally:\n    hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
           "    print('peak_rss_kb', hwm[0], file=sys.stderr)",
           "lightgbm", "--symbols", *symbols, "--timeframe", "1h", "--start", start, "--end", end,
           "--registry", str(tmp / f"registry-{settings.profile}"), "--seed", "7"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"training.train lightgbm failed on {settings.profile}:\n{done.stderr[-2000:]}")
    rss = [int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("peak_rss_kb")]
    return took, rss[-1] / 1024 if rss else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "binance-spot-1h")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--stock-rows", type=int, default=2000, help="entity rows for Feast's stock store (0 = skip)")
    p.add_argument("--lateral-rows", type=int, default=2000, help="entity rows for the LATERAL probe (0 = skip)")
    p.add_argument("--no-train", action="store_true", help="skip training.train lightgbm on both profiles")
    a = p.parse_args(argv)
    base = os.environ.get("TIMESCALE_DSN") or sys.exit('needs TIMESCALE_DSN: set -a; eval "$(infra/up)"; set +a')
    files = sorted(a.data.glob("*.parquet"))
    if not files:
        sys.exit(f"no candle files under {a.data}")
    from infra.db import ensure_database, migrate

    name = f"cryptostream_bench_pit_{uuid.uuid4().hex[:8]}"
    dsn = make_conninfo(base, dbname=name)
    ensure_database(dsn)
    migrate(dsn)
    try:
        with tempfile.TemporaryDirectory(prefix="bench_pit_") as t:
            tmp = Path(t)
            return run(a, files, dsn, tmp)
    finally:
        with psycopg.connect(make_conninfo(base, dbname="postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def run(a: argparse.Namespace, files: list[Path], dsn: str, tmp: Path) -> int:
    frames = {}
    for f in files:
        df = pd.read_parquet(f)
        df["ts"] = (df.ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
        frames[f.name.split("-")[0].replace("_", "/")] = df.reset_index(drop=True)
    symbols = sorted(frames)
    profiles = {"timescale": settings_for("timescale", tmp, dsn), "local": settings_for("local", tmp, None)}
    for s in profiles.values():
        t0 = time.perf_counter()
        run_backfill(s, {sym: bars_from_frame(sym, "1h", df) for sym, df in frames.items()}, "1h")
        feast_store.apply(s)
        print(f"backfill + feast apply ({s.profile}): {time.perf_counter() - t0:.1f} s", flush=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE")  # what autovacuum does soon after a backfill; the stock store's plans need it too

    ts_settings, local = profiles["timescale"], profiles["local"]
    t0, t1 = pd.Timestamp(frames[symbols[0]].ts.iloc[0], unit="ms", tz="UTC"), \
        pd.Timestamp(frames[symbols[0]].ts.iloc[-1], unit="ms", tz="UTC")
    bars = load_bars(ts_settings, tuple(symbols), "1h", t0, t1 + pd.Timedelta(hours=2))
    entity = attach_labels(bars, "1h", 1)
    print(f"entity frame: {len(entity):,} rows x {entity.shape[1]} columns, {len(symbols)} symbols, "
          f"service {SERVICE} ({len(BAR_FEATURES) + len(CROSS_FEATURES)} features)\n", flush=True)

    ts_store, local_store = feast_store.open_store(ts_settings), feast_store.open_store(local)
    service_ts, service_local = ts_store.get_feature_service(SERVICE), local_store.get_feature_service(SERVICE)
    rows: list[tuple[str, float, float]] = []
    best, med, chosen = timed(lambda: ts_store.get_historical_features(entity_df=entity, features=service_ts)
                              .to_df(), a.repeat)
    rows.append(("timescale, Feast SDK (chosen path)", best, med))
    best, med, hand = timed(lambda: hand_written(dsn, entity), a.repeat)
    rows.append(("hand-written as-of join (baseline)", best, med))
    best, med, embedded = timed(lambda: local_store.get_historical_features(entity_df=entity,
                                                                             features=service_local).to_df(), a.repeat)
    rows.append(("local (embedded), Feast SDK", best, med))

    cols = ["symbol", "event_timestamp", *BAR_FEATURES, *CROSS_FEATURES]
    same_hand = chosen[cols].reset_index(drop=True).equals(hand[cols].reset_index(drop=True))
    emb = embedded.assign(event_timestamp=pd.to_datetime(embedded.event_timestamp, utc=True)
                          .astype("datetime64[ns, UTC]")).sort_values(["symbol", "event_timestamp"])
    mine = chosen.sort_values(["symbol", "event_timestamp"])
    same_local = mine[cols].reset_index(drop=True).equals(emb[cols].reset_index(drop=True))
    base = rows[1][1]
    print(f"{'point-in-time set, ' + format(len(entity), ',') + ' rows':<44} {'best s':>8} {'median s':>9} "
          f"{'x baseline':>11}")
    for label, b, m in rows:
        print(f"{label:<44} {b:>8.2f} {m:>9.2f} {b / base:>10.2f}x")
    print(f"same rows and values: chosen == hand-written {same_hand}, chosen == local {same_local}")

    small: list[tuple[str, float, int]] = []
    if a.stock_rows:
        sub = entity.iloc[:: max(1, len(entity) // a.stock_rows)].head(a.stock_rows).reset_index(drop=True)
        stock = stock_store(ts_settings)
        svc = stock.get_feature_service(SERVICE)  # type: ignore[attr-defined]
        b, _, _ = timed(lambda: stock.get_historical_features(entity_df=sub, features=svc).to_df(), 1)  # type: ignore[attr-defined]
        small.append(("Feast's stock PostgreSQL store", b, len(sub)))
        b, _, _ = timed(lambda: ts_store.get_historical_features(entity_df=sub, features=service_ts).to_df(), 1)
        small.append(("timescale, Feast SDK (chosen path)", b, len(sub)))
    if a.lateral_rows:
        sub = entity.iloc[:: max(1, len(entity) // a.lateral_rows)].head(a.lateral_rows).reset_index(drop=True)
        b, _, _ = timed(lambda: lateral(dsn, sub), 1)
        small.append(("hand-written LATERAL probe (bar view only)", b, len(sub)))
    if small:
        print(f"\n{'on a sample of the entity rows':<44} {'rows':>8} {'s':>9} {'us/row':>11}")
        for label, b, n in small:
            print(f"{label:<44} {n:>8,} {b:>9.2f} {b / n * 1e6:>11.0f}")

    if not a.no_train:
        print(f"\n{'python -m training.train lightgbm (full window)':<44} {'wall s':>8} {'peak MB':>9}")
        for s in (ts_settings, local):
            took, rss = train_lightgbm(s, symbols, str(t0), str(t1 + pd.Timedelta(hours=1)), tmp)
            print(f"{s.profile:<44} {took:>8.1f} {rss:>9.0f}", flush=True)
    print(f"\n(this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
