"""The README's journeys on both profiles, typed as a user types them (short form).

For each profile, in a fresh data directory (and, for ``timescale``, a scratch
database and a Redis database of its own):

1. ``python -m flows.main --duration 20``: ``feast apply``, the bootstrap of an empty
   registry (a backfill of two days of 1m klines from a seeded replay exchange through
   ccxt, ``training.train`` lightgbm, lstm, gnn and ensemble, ``training.rl train
   tactical`` and its export, each a subprocess), then the paper flow and the summary;
2. ``python -m training.datasets`` over the bootstrap's history.

The bootstrap's market is seeded, so both profiles hold the same bars: the
training sets, and the data hash every model records, must be the same on both.
``training.backtest --store`` on both profiles is tests/integration/test_backtest_store.py;
an analyst's ``get_historical_features`` with extra entity columns on both is
tests/integration/test_pit_profiles.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psycopg
import pytest
import redis
from psycopg import sql
from psycopg.conninfo import make_conninfo

from flows.bootstrap import history_window
from infra.db import ensure_database, migrate
from tests.kit.repo import PROJECT_ROOT, copy_feature_repo

pytestmark = pytest.mark.integration
FAMILIES = ("lightgbm", "lstm", "gnn", "ensemble", "rl_tactical")
REDIS_DB = 11  # a database of its own on the shared Redis


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout,
                          cwd=PROJECT_ROOT, check=False)
    assert done.returncode == 0, f"{' '.join(cmd[2:])} exited {done.returncode}:\n{done.stdout[-3000:]}\n" \
                                 f"{done.stderr[-3000:]}"
    return done


def _journey(tmp: Path, env: dict[str, str]) -> dict[str, object]:
    env = {**env, "CRYPTOSTREAM_DATA_DIR": str(tmp / "var"), "CRYPTOSTREAM_FEAST_REPO": str(copy_feature_repo(tmp))}
    main = _run([sys.executable, "-m", "flows.main", "--duration", "20"], env, timeout=900)
    start, end = history_window(2.0)
    out = tmp / "set.parquet"
    datasets = _run([sys.executable, "-m", "training.datasets", "--symbols", "BTC/USDT", "ETH/USDT", "SOL/USDT",
                     "--timeframe", "1m", "--start", start.isoformat(), "--end",
                     (end - pd.Timedelta(hours=1)).isoformat(), "--service", "lightgbm_1m_v1", "--horizon", "4",
                     "--out", str(out)], env, timeout=300)
    registry = tmp / "var" / "registry"
    manifests = {}
    for fam in FAMILIES:
        version = (registry / fam / "latest").read_text().strip()
        manifests[fam] = json.loads((registry / fam / version / "manifest.json").read_text())
    return {"main": main.stdout, "datasets": datasets.stdout, "set": pd.read_parquet(out), "manifests": manifests}


@pytest.fixture(scope="module")
def journeys(tmp_path_factory, timescale_dsn, redis_url) -> Iterator[dict[str, dict[str, object]]]:
    name = f"cryptostream_test_{uuid.uuid4().hex[:10]}"
    dsn = make_conninfo(timescale_dsn, dbname=name)
    ensure_database(dsn)
    url = redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    redis.Redis.from_url(url).flushdb()
    try:
        migrate(dsn)
        yield {"local": _journey(tmp_path_factory.mktemp("local"), {"CRYPTOSTREAM_PROFILE": "local"}),
               "timescale": _journey(tmp_path_factory.mktemp("timescale"),
                                     {"CRYPTOSTREAM_PROFILE": "timescale", "TIMESCALE_DSN": dsn, "REDIS_URL": url})}
    finally:
        redis.Redis.from_url(url).flushdb()
        with psycopg.connect(make_conninfo(timescale_dsn, dbname="postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.mark.parametrize("profile", ["local", "timescale"])
def test_the_main_job_bootstraps_trains_every_family_and_trades_paper(journeys, profile) -> None:
    out = str(journeys[profile]["main"])
    for step in ("backfill 2 days of 1m klines", "train lightgbm", "train lstm", "train gnn", "train ensemble",
                 "train tactical policy", "export tactical policy"):
        assert re.search(rf"^bootstrap: {step}.* done in \d+ s$", out, re.M), step
    summary = out[out.index("\nsummary ("):]
    assert f"profile {profile}" in summary
    assert "dead letters" in summary and summary.split("dead letters")[1].split("\n")[0].rstrip().endswith(": 0")
    assert all(f"{fam}=" in summary for fam in FAMILIES)
    decided = int(summary.split("bars decided (status lines, mode paper): ")[1].split()[0])
    assert decided > 0
    assert "Feast online bar_features_1m[BTC/USDT]" in summary


def test_both_profiles_give_the_same_training_set_and_train_on_the_same_data(journeys) -> None:
    local, timescale = journeys["local"], journeys["timescale"]
    frame = local["set"]
    assert isinstance(frame, pd.DataFrame) and len(frame) > 3 * 2000 and frame.symbol.nunique() == 3
    pd.testing.assert_frame_equal(timescale["set"], frame, check_exact=True)
    for fam in ("lightgbm", "lstm", "gnn"):
        lm, tm = local["manifests"][fam], timescale["manifests"][fam]  # type: ignore[index]
        assert lm["data_hash"] == tm["data_hash"], fam
