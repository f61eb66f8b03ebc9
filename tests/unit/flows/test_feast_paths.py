"""The local Feast registry and online store live under data_dir (flows/stores/feast_paths.py, issue 17 defect 6).

Before, both were ``feature_repo/data/registry.db`` and ``online.db``: every data directory
of a checkout shared them, so a run in one saw (and overwrote) another's views and values.
The test uses the project's own ``feature_repo`` on purpose: nothing may be written there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from flows import feast_store
from flows.operators.features import WARMUP
from flows.settings import PROJECT_ROOT, load_settings
from flows.stores.feast_paths import UNSET, data_path
from training.backfill import bars_from_frame, run_backfill

REPO = PROJECT_ROOT / "feature_repo"


def _settings(data_dir: Path):
    return load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(data_dir), "CRYPTOSTREAM_SYMBOLS": "BTC/USDT",
                              "CRYPTOSTREAM_BARS__TIMEFRAMES": "1h", "CRYPTOSTREAM_FEAST_REPO": str(REPO)})


def _backfill(settings) -> None:
    rng = np.random.default_rng(3)
    times = pd.date_range("2024-01-01", periods=WARMUP + 120, freq="1h", tz="UTC")  # rows after the warm-up
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(times))))
    df = pd.DataFrame({"ts": times.astype("int64") // 10**6, "open": close, "high": close * 1.002, "low": close * 0.998, "close": close,
                       "volume": rng.uniform(1, 5, len(times))})
    run_backfill(settings, {"BTC/USDT": bars_from_frame("BTC/USDT", "1h", df)}, "1h")


def _bare_feast_apply(data_dir: Path, tmp: Path) -> None:
    """Run ``feast apply`` in feature_repo/ from a shell that never set CRYPTOSTREAM_DATA_DIR.

    os.path.expandvars leaves the variable in place; the files go where the settings put data_dir
    (here from a CRYPTOSTREAM_CONFIG file), where the flow looks.
    """
    config = tmp / "cryptostream.yaml"
    config.write_text(f"data_dir: {data_dir}\nsymbols: [BTC/USDT]\nbars: {{timeframes: [1h]}}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOSTREAM_")}
    env.update({"CRYPTOSTREAM_CONFIG": str(config), "PYTHONPATH": str(PROJECT_ROOT)})
    done = subprocess.run([str(Path(sys.executable).with_name("feast")), "apply"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_two_data_dirs_share_no_feast_state(tmp_path: Path) -> None:
    in_repo = sorted(p.relative_to(REPO) for p in REPO.rglob("*") if "__pycache__" not in p.parts)
    a, b = _settings(tmp_path / "a"), _settings(tmp_path / "b")
    feast_store.apply(a)
    _backfill(a)
    store_a = feast_store.open_store(a)
    store_a.materialize(datetime(2023, 12, 31, tzinfo=timezone.utc), datetime(2024, 2, 1, tzinfo=timezone.utc),
                        feature_views=["bar_features_1h"])
    got_a = store_a.get_online_features(features=["bar_features_1h:ret_1"],
                                        entity_rows=[{"symbol": "BTC/USDT"}]).to_dict()
    assert got_a["ret_1"][0] is not None
    assert (tmp_path / "a" / "feast" / "registry.db").is_file() and (tmp_path / "a" / "feast" / "online.db").is_file()

    assert feast_store.open_store(b).list_feature_views() == [], "b sees a's registry"
    _bare_feast_apply(tmp_path / "b", tmp_path)
    assert (tmp_path / "b" / "feast" / "registry.db").is_file() and (tmp_path / "b" / "feast" / "online.db").is_file()
    store_b = feast_store.open_store(b)
    assert {v.name for v in store_b.list_feature_views()} >= {"bar_features_1h"}
    got_b = store_b.get_online_features(features=["bar_features_1h:ret_1"],
                                        entity_rows=[{"symbol": "BTC/USDT"}]).to_dict()
    assert got_b["ret_1"] == [None], "b sees a's online values"
    assert sorted(p.relative_to(REPO) for p in REPO.rglob("*") if "__pycache__" not in p.parts) == in_repo, \
        "nothing is written into feature_repo"


def test_data_path_resolves_the_unset_variable_and_relative_paths(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CRYPTOSTREAM_DATA_DIR", str(tmp_path / "d"))
    assert data_path(f"{UNSET}/feast/x.db", None) == tmp_path / "d" / "feast" / "x.db"
    assert (tmp_path / "d" / "feast").is_dir()
    assert data_path("rel/y.db", tmp_path) == tmp_path / "rel" / "y.db"
