"""Open the Feast feature store of the active profile.

``feature_repo/feature_store.yaml`` is the ``local`` profile; ``timescale.yaml``
and ``timescale-redis.yaml`` read their connection values from the environment.
This module derives those values from the settings' ``TIMESCALE_DSN`` and
``REDIS_URL`` so every component opens the same store the CLI does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from flows.settings import Settings, SettingsError

if TYPE_CHECKING:
    from feast import FeatureStore

def profile_yaml(settings: Settings) -> Path:
    """Return the feature_store yaml of the settings' profile and online store."""
    repo = settings.feast_repo
    if settings.profile == "local":
        return repo / "feature_store.yaml"
    return repo / ("timescale-redis.yaml" if settings.feast_online == "redis" else "timescale.yaml")


def feast_environment(settings: Settings) -> dict[str, str]:
    """Return the environment variables the profile's yaml reads."""
    env = {"CRYPTOSTREAM_PROFILE": settings.profile, "CRYPTOSTREAM_DATA_DIR": str(settings.data_dir),
           "CRYPTOSTREAM_FEAST_REPO": str(settings.feast_repo)}
    if settings.profile == "timescale":
        settings.require_servers()
        assert settings.timescale_dsn is not None and settings.redis_url is not None
        from psycopg.conninfo import conninfo_to_dict

        pg = conninfo_to_dict(settings.timescale_dsn.get_secret_value())
        env.update(
            TIMESCALE_HOST=str(pg.get("host", "127.0.0.1")),
            TIMESCALE_PORT=str(pg.get("port", "5432")),
            TIMESCALE_DB=str(pg.get("dbname", "postgres")),
            TIMESCALE_USER=str(pg.get("user", "postgres")),
            TIMESCALE_PASSWORD=str(pg.get("password", "")),
        )
        redis = urlparse(settings.redis_url.get_secret_value())
        db = (redis.path or "/0").lstrip("/") or "0"
        conn = f"{redis.hostname}:{redis.port or 6379},db={db}"
        if redis.password:
            conn += f",password={redis.password}"
        env["FEAST_REDIS_CONNECTION"] = conn
    return env


def open_store(settings: Settings) -> FeatureStore:
    """Return a FeatureStore for the settings (the repository must have been applied)."""
    from feast import FeatureStore

    with _environment(feast_environment(settings)):  # Feast expands the yaml's ${VARS} while loading it
        return FeatureStore(repo_path=str(settings.feast_repo), fs_yaml_file=profile_yaml(settings))


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block only, so opening a store changes no later ``load_settings``."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def apply(settings: Settings) -> None:
    """Run ``feast apply`` for the settings' profile, as a user would."""
    env = {**os.environ, **feast_environment(settings)}
    cmd = [str(Path(sys.executable).with_name("feast")), "-c", str(settings.feast_repo),
           "-f", str(profile_yaml(settings)), "apply"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SettingsError(f"feast apply failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
