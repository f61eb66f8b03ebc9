"""Opening the Feast store reads the profile's connection values without leaving them in the environment."""

from __future__ import annotations

import os
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
