"""Opening the Feast store reads the profile's connection values without leaving them in the environment."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from flows import feast_store
from flows.settings import load_settings
from tests.kit.repo import copy_feature_repo

LEAKABLE = ("CRYPTOSTREAM_PROFILE", "CRYPTOSTREAM_DATA_DIR", "CRYPTOSTREAM_FEAST_REPO", "TIMESCALE_HOST",
            "TIMESCALE_PORT", "TIMESCALE_DB", "TIMESCALE_USER", "TIMESCALE_PASSWORD", "FEAST_REDIS_CONNECTION")


def test_open_store_expands_the_yaml_and_restores_the_environment(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for name in LEAKABLE:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CRYPTOSTREAM_DATA_DIR", "/somewhere/else")  # a user's own value survives unchanged
    settings = load_settings(env={"CRYPTOSTREAM_PROFILE": "timescale", "CRYPTOSTREAM_DATA_DIR": str(tmp_path / "var"),
                                  "CRYPTOSTREAM_FEAST_REPO": str(copy_feature_repo(tmp_path)),
                                  "TIMESCALE_DSN": "postgresql://quant:pw@127.0.0.1:5999/market",
                                  "REDIS_URL": "redis://127.0.0.1:6379/3"})
    store = feast_store.open_store(settings)  # builds the config only: nothing listens on 5999
    online = store.config.online_store
    assert (online.host, int(online.port), online.database, online.user) == ("127.0.0.1", 5999, "market", "quant")
    assert os.environ["CRYPTOSTREAM_DATA_DIR"] == "/somewhere/else"
    assert [n for n in LEAKABLE if n != "CRYPTOSTREAM_DATA_DIR" and n in os.environ] == []
    assert load_settings().profile == "local"  # a later load is not switched to the store's profile


def test_stores_opened_at_once_in_threads_never_touch_the_environment(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytewax workers open their stores at once: a set-and-restore of os.environ around Feast's loader raced,
    leaving one worker's data directory in the environment for every later load_settings of the process."""
    for name in LEAKABLE:
        monkeypatch.delenv(name, raising=False)
    repo = copy_feature_repo(tmp_path)
    settings = [load_settings(env={"CRYPTOSTREAM_DATA_DIR": str(tmp_path / f"var{i}"),
                                   "CRYPTOSTREAM_FEAST_REPO": str(repo)}) for i in range(4)]
    seen: list[str | None] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(os.environ.get("CRYPTOSTREAM_DATA_DIR"))

    def open_many(s) -> list[str]:
        return [feast_store.open_store(s).config.online_store.path for _ in range(5)]

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            paths = list(pool.map(open_many, settings))
    finally:
        stop.set()
        watcher.join()
    assert [set(p) for p in paths] == [{f"{tmp_path}/var{i}/feast/online.db"} for i in range(4)]  # each its own
    assert set(seen) == {None} and len(seen) > 10  # never set, not even for a moment
    assert [n for n in LEAKABLE if n in os.environ] == []
